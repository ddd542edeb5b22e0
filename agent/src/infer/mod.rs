//! Inference: the models, loaded once and shared by every camera, and the
//! step that turns one image into plain [`Detections`].
//!
//! Each model family has its own module with its pre- and post-processing;
//! a better model with the same input and output layout is a new file in
//! `models/` and a line of config, not new code.

pub mod face_yunet;
pub mod geometry;
pub mod image_ops;
pub mod plate_detector;
pub mod plate_reader;
pub mod runtime;

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

pub use face_yunet::{Face, FaceDetector};
pub use geometry::BBox;
pub use plate_detector::{PlateBox, PlateDetector};
pub use plate_reader::{PlateReader, TextRead};
pub use runtime::ModelId;

use crate::config::{Analysis, DetectKind, Models as ModelsConfig};
use crate::frame::{BgrImage, I420Image};

/// A plate found and read in one image.
#[derive(Debug, Clone, Serialize)]
pub struct PlateRead {
    pub bbox: BBox,
    pub corners: [[f32; 2]; 4],
    pub detector_score: f32,
    pub lines: u8,
    pub chars: String,
    pub char_confidences: Vec<f32>,
    pub read_confidence: f32,
    /// Focus of the rectified crop (variance of the Laplacian).
    pub sharpness: f32,
    /// The rectified crop the read was made from.
    #[serde(skip)]
    pub crop: BgrImage,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Detections {
    pub plates: Vec<PlateRead>,
    pub faces: Vec<Face>,
    /// Wall-clock time of each stage for this image.
    pub timing: StageTimes,
}

/// Milliseconds spent per stage on one image (reading covers every plate).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    pub plate_detector_ms: f64,
    pub plate_reader_ms: f64,
    pub face_detector_ms: f64,
}

pub struct Models {
    pub faces: FaceDetector,
    pub plates: PlateDetector,
    pub reader: PlateReader,
    pub ids: Vec<ModelId>,
}

impl Models {
    pub fn load(config: &ModelsConfig) -> anyhow::Result<Self> {
        Self::load_from(&config.dir, config)
    }

    pub fn load_from(dir: &Path, config: &ModelsConfig) -> anyhow::Result<Self> {
        let (face, face_id) = runtime::load_session(
            "face_detector",
            &dir.join(&config.face_detector),
            config.threads,
        )?;
        let (plate, plate_id) = runtime::load_session(
            "plate_detector",
            &dir.join(&config.plate_detector),
            config.threads,
        )?;
        let (reader, reader_id) = runtime::load_session(
            "plate_reader",
            &dir.join(&config.plate_reader),
            config.threads,
        )?;
        Ok(Self {
            faces: FaceDetector::new(face)
                .with_context(|| unfit("face_detector", &config.face_detector))?,
            plates: PlateDetector::new(plate)
                .with_context(|| unfit("plate_detector", &config.plate_detector))?,
            reader: PlateReader::new(reader)
                .with_context(|| unfit("plate_reader", &config.plate_reader))?,
            ids: vec![face_id, plate_id, reader_id],
        })
    }

    /// Runs the detectors `what` asks for. Plates are rectified by their
    /// corners before reading, so a plate seen at an angle reads like one
    /// seen head-on.
    pub fn analyze(
        &self,
        img: &I420Image,
        what: &[DetectKind],
        thresholds: &Analysis,
    ) -> anyhow::Result<Detections> {
        let mut out = Detections::default();
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1000.0;
        if what.contains(&DetectKind::Plates) {
            let started = std::time::Instant::now();
            let found = self.plates.detect(img, thresholds.plate_threshold)?;
            out.timing.plate_detector_ms = ms(started);
            let started = std::time::Instant::now();
            for plate in found {
                // One plate that cannot be cut out costs only itself, not
                // the frame's other plates and faces; a reader that fails
                // fails the frame, and is counted and logged as such.
                let crop = match self.reader.rectify(img, &plate.corners) {
                    Ok(crop) => crop,
                    Err(e) => {
                        tracing::debug!("plate at {:?} not cut out: {e:#}", plate.bbox);
                        continue;
                    }
                };
                let text = self.reader.read_crop(&crop)?;
                let sharpness = image_ops::sharpness(&crop)?;
                out.plates.push(PlateRead {
                    bbox: plate.bbox,
                    corners: plate.corners,
                    detector_score: plate.score,
                    lines: plate.lines,
                    chars: text.chars,
                    char_confidences: text.char_confidences,
                    read_confidence: text.confidence,
                    sharpness,
                    crop,
                });
            }
            out.timing.plate_reader_ms = ms(started);
        }
        if what.contains(&DetectKind::Faces) {
            let started = std::time::Instant::now();
            out.faces = self.faces.detect(img, thresholds.face_threshold)?;
            out.timing.face_detector_ms = ms(started);
        }
        Ok(out)
    }
}

/// What to do about a model file that loads but does not fit its role.
fn unfit(role: &str, file: &str) -> String {
    format!(
        "models.{role} = `{file}` does not fit the role; set models.{role} to a model of \
         the layout that follows (models/README.md lists them), or remove the line for the default"
    )
}

#[cfg(test)]
mod tests;
