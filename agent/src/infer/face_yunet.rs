//! YuNet face detector (libfacedetection, 2023): boxes, scores and five
//! landmarks (right eye, left eye, nose tip, right and left mouth corner).
//!
//! The dynamic-size export takes BGR 0..255 with H and W multiples of 32.
//! It has three heads (strides 8, 16, 32), each with cls, obj, bbox and kps
//! outputs over a grid of anchors; see `decode`.

use std::sync::Mutex;

use anyhow::{Context, anyhow};
use ort::session::Session;
use ort::value::TensorElementType::Float32;
use ort::value::TensorRef;
use serde::Serialize;

use super::geometry::{BBox, nms};
use super::image_ops::{resize_i420, to_nchw};
use super::runtime::{first_tensor, tensor_shape};
use crate::frame::{BgrImage, I420Image};

/// Frames are scaled so their long side is at most this, which keeps a
/// 1080p frame near 15 ms on one core while faces of 20 px stay findable.
pub const DEFAULT_LONG_SIDE: u32 = 640;
pub const NMS_IOU: f32 = 0.3;
const STRIDES: [usize; 3] = [8, 16, 32];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Face {
    pub bbox: BBox,
    pub score: f32,
    pub landmarks: [[f32; 2]; 5],
}

pub struct FaceDetector {
    session: Mutex<Session>,
    long_side: u32,
}

impl FaceDetector {
    pub fn new(session: Session) -> anyhow::Result<Self> {
        const LAYOUT: &str = "a YuNet face detector takes float32 [1,3,H,W] and gives \
                              cls_, obj_, bbox_ and kps_ outputs for strides 8, 16 and 32";
        let input = first_tensor(session.inputs(), "input", Float32, LAYOUT)?;
        if !matches!(input[..], [_, 3, _, _]) {
            return Err(anyhow!("its input is {input:?}; {LAYOUT}"));
        }
        for stride in STRIDES {
            for head in ["cls", "obj", "bbox", "kps"] {
                let name = format!("{head}_{stride}");
                let outlet = session.outputs().iter().find(|o| o.name() == name);
                tensor_shape(outlet, &format!("output `{name}`"), Float32).context(LAYOUT)?;
            }
        }
        Ok(Self {
            session: Mutex::new(session),
            long_side: DEFAULT_LONG_SIDE,
        })
    }

    pub fn detect(&self, img: &I420Image, threshold: f32) -> anyhow::Result<Vec<Face>> {
        let scale = (self.long_side as f32 / img.width.max(img.height) as f32).min(1.0);
        let w = ((img.width as f32 * scale).round() as u32).max(1);
        let h = ((img.height as f32 * scale).round() as u32).max(1);
        let resized = resize_i420(img, w, h)?;
        // Pad right and bottom to a multiple of 32; padding is black.
        let (pw, ph) = (w.div_ceil(32) * 32, h.div_ceil(32) * 32);
        let mut padded = BgrImage::new(pw, ph, vec![0; (pw * ph * 3) as usize]);
        for y in 0..h as usize {
            let src = &resized.data[y * w as usize * 3..(y + 1) * w as usize * 3];
            padded.data[y * pw as usize * 3..y * pw as usize * 3 + src.len()].copy_from_slice(src);
        }
        let input = to_nchw(&padded, false, 1.0);

        let mut session = super::runtime::lock(&self.session);
        let outputs = session
            .run(ort::inputs![TensorRef::from_array_view(&input)?])
            .context("face detector inference failed")?;
        let get = |name: String| -> anyhow::Result<Vec<f32>> {
            let (_, data) = outputs
                .get(&name)
                .ok_or_else(|| anyhow!("face model has no output `{name}`; is it YuNet?"))?
                .try_extract_tensor::<f32>()?;
            Ok(data.to_vec())
        };
        let mut faces = Vec::new();
        for stride in STRIDES {
            let cls = get(format!("cls_{stride}"))?;
            let obj = get(format!("obj_{stride}"))?;
            let bbox = get(format!("bbox_{stride}"))?;
            let kps = get(format!("kps_{stride}"))?;
            let anchors = (pw as usize / stride) * (ph as usize / stride);
            if [cls.len(), obj.len(), bbox.len() / 4, kps.len() / 10] != [anchors; 4] {
                return Err(anyhow!(
                    "face model outputs for stride {stride} do not have YuNet's sizes \
                     ({anchors} anchors: cls {}, obj {}, bbox {}, kps {})",
                    cls.len(),
                    obj.len(),
                    bbox.len(),
                    kps.len()
                ));
            }
            decode(
                stride,
                pw as usize / stride,
                &cls,
                &obj,
                &bbox,
                &kps,
                threshold,
                &mut faces,
            );
        }
        drop(outputs);
        drop(session);
        // Each axis by its own whole-pixel size, as the letterbox does.
        let (inv_x, inv_y) = (img.width as f32 / w as f32, img.height as f32 / h as f32);
        let clamp = |v: f32, max: u32| v.clamp(0.0, max as f32);
        Ok(nms(faces, NMS_IOU, |f| f.bbox, |f| f.score)
            .into_iter()
            .map(|f| Face {
                bbox: [
                    clamp(f.bbox[0] * inv_x, img.width),
                    clamp(f.bbox[1] * inv_y, img.height),
                    clamp(f.bbox[2] * inv_x, img.width),
                    clamp(f.bbox[3] * inv_y, img.height),
                ],
                score: f.score,
                landmarks: f.landmarks.map(|[x, y]| [x * inv_x, y * inv_y]),
            })
            .collect())
    }
}

/// Decodes one head. Anchor `i` sits at column `i % cols`, row `i / cols`;
/// score = sqrt(cls × obj); centre = (cell + offset) × stride;
/// size = exp(log-size) × stride; landmarks = (cell + offset) × stride.
#[allow(clippy::too_many_arguments)]
fn decode(
    stride: usize,
    cols: usize,
    cls: &[f32],
    obj: &[f32],
    bbox: &[f32],
    kps: &[f32],
    threshold: f32,
    out: &mut Vec<Face>,
) {
    let s = stride as f32;
    for i in 0..cls.len() {
        let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
        if score.is_nan() || score < threshold {
            continue;
        }
        let (col, row) = ((i % cols) as f32, (i / cols) as f32);
        let b = &bbox[i * 4..i * 4 + 4];
        // A broken model's NaN or infinite values make no face.
        if !b.iter().all(|v| v.is_finite()) {
            continue;
        }
        let (cx, cy) = ((col + b[0]) * s, (row + b[1]) * s);
        let (w, h) = (b[2].exp() * s, b[3].exp() * s);
        let k = &kps[i * 10..i * 10 + 10];
        let landmarks = std::array::from_fn(|j| [(col + k[2 * j]) * s, (row + k[2 * j + 1]) * s]);
        out.push(Face {
            bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            score,
            landmarks,
        });
    }
}
