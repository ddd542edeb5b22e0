//! Events: what the agent tells the IOC, in one versioned JSON shape.
//!
//! The shape is fixed by `agent/schema/event.v1.schema.json`; a change that
//! breaks consumers bumps [`SCHEMA_VERSION`]. Every event has a UUIDv7 id
//! (time-ordered, unique across gateways) and a per-camera sequence number
//! that only increases, so a consumer can see when one went missing.

mod sequence;

pub use sequence::{Sequencer, new_event_id};

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::{CameraConfig, Location, Site};
use crate::infer::{BBox, ModelId};

pub const SCHEMA_VERSION: u32 = 1;
/// The schema, embedded so `matthan` can print it and tests can check
/// events against the very file consumers get.
pub const SCHEMA_JSON: &str = include_str!("../../schema/event.v1.schema.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Plate,
    Face,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Plate => "plate",
            EventKind::Face => "face",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub schema_version: u32,
    pub id: uuid::Uuid,
    pub kind: EventKind,
    pub site: SiteRef,
    pub camera: CameraRef,
    pub seq: u64,
    /// UTC time at which the frame reached the agent, RFC 3339 with
    /// milliseconds.
    #[serde(with = "time::serde::rfc3339")]
    pub time: time::OffsetDateTime,
    pub frame: FrameRef,
    pub bbox: BBox,
    pub confidence: f32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plate: Option<PlateInfo>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub face: Option<FaceInfo>,
    pub models: Vec<ModelRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraRef {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<Location>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub lanes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub direction: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameRef {
    pub width: u32,
    pub height: u32,
    /// Frame count of this camera since the agent started.
    pub number: u64,
    /// Position in the stream, milliseconds, when the stream has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stream_time_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlateInfo {
    /// Uppercase letters and digits only, e.g. `51G12345`.
    pub chars: String,
    /// As written on the plate, e.g. `51G-123.45`.
    pub text: String,
    pub lines: u8,
    pub corners: [[f32; 2]; 4],
    pub detector_confidence: f32,
    pub read_confidence: f32,
    pub char_confidences: Vec<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaceInfo {
    pub landmarks: [[f32; 2]; 5],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRef {
    pub role: String,
    pub name: String,
    pub sha256: String,
}

impl From<&ModelId> for ModelRef {
    fn from(m: &ModelId) -> Self {
        Self {
            role: m.role.to_string(),
            name: m.name.clone(),
            sha256: m.sha256.clone(),
        }
    }
}

impl SiteRef {
    pub fn from_config(site: &Site) -> Self {
        Self {
            id: site.id.clone(),
            name: site.name.clone(),
        }
    }
}

impl CameraRef {
    pub fn from_config(c: &CameraConfig) -> Self {
        Self {
            id: c.id.clone(),
            name: c.name.clone(),
            location: c.location.clone(),
            lanes: c.lanes.clone(),
            direction: c.direction.clone(),
        }
    }
}

/// UTC time truncated to milliseconds, the precision the schema promises.
pub fn utc_millis(t: SystemTime) -> time::OffsetDateTime {
    let dt = time::OffsetDateTime::from(t);
    dt.replace_nanosecond(dt.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(dt)
}

impl Event {
    pub fn topic_suffix(&self) -> String {
        format!("{}/event/{}", self.camera.id, self.kind.as_str())
    }
}

/// Turns one camera's detections into events: the camera's fixed
/// description, its sequence numbers and the model ids, in one place.
pub struct EventFactory {
    site: SiteRef,
    camera: CameraRef,
    models: Vec<ModelRef>,
    sequence: Sequencer,
    plate_read_threshold: f32,
}

impl EventFactory {
    pub fn new(
        site: &Site,
        camera: &CameraConfig,
        models: &[ModelId],
        plate_read_threshold: f32,
    ) -> Self {
        Self {
            site: SiteRef::from_config(site),
            camera: CameraRef::from_config(camera),
            models: models.iter().map(ModelRef::from).collect(),
            sequence: Sequencer::default(),
            plate_read_threshold,
        }
    }

    /// One event per plate read well enough and per face. Plates whose read
    /// is empty or below the read threshold make no event: their text
    /// would be a guess.
    pub fn events(
        &self,
        frame: &crate::ingest::Frame,
        detections: &crate::infer::Detections,
    ) -> Vec<Event> {
        let frame_ref = FrameRef {
            width: frame.image.width,
            height: frame.image.height,
            number: frame.number,
            stream_time_ms: frame.stream_time.map(|t| t.as_millis() as u64),
        };
        let time = utc_millis(frame.captured_at);
        let base = |kind, bbox, confidence: f32| Event {
            schema_version: SCHEMA_VERSION,
            id: new_event_id(),
            kind,
            site: self.site.clone(),
            camera: self.camera.clone(),
            seq: self.sequence.next(),
            time,
            frame: frame_ref.clone(),
            bbox,
            confidence: confidence.clamp(0.0, 1.0),
            plate: None,
            face: None,
            models: self.models.clone(),
        };
        let mut events = Vec::new();
        for p in &detections.plates {
            if p.chars.is_empty() || p.read_confidence < self.plate_read_threshold {
                continue;
            }
            let mut e = base(
                EventKind::Plate,
                p.bbox,
                p.detector_score * p.read_confidence,
            );
            e.plate = Some(PlateInfo {
                chars: p.chars.clone(),
                text: crate::plate::display_text(&p.chars),
                lines: p.lines,
                corners: p.corners,
                detector_confidence: p.detector_score.clamp(0.0, 1.0),
                read_confidence: p.read_confidence.clamp(0.0, 1.0),
                char_confidences: p
                    .char_confidences
                    .iter()
                    .map(|c| c.clamp(0.0, 1.0))
                    .collect(),
            });
            events.push(e);
        }
        for f in &detections.faces {
            let mut e = base(EventKind::Face, f.bbox, f.score);
            e.face = Some(FaceInfo {
                landmarks: f.landmarks,
            });
            events.push(e);
        }
        events
    }
}
