//! Events: what the agent tells the IOC, in one versioned JSON shape.
//!
//! The shape is fixed by `agent/schema/event.v1.schema.json`; a change that
//! breaks consumers bumps [`SCHEMA_VERSION`]. Every event has a UUIDv7 id
//! (time-ordered, unique across gateways) and a per-camera sequence number
//! that only increases, so a consumer can see when one went missing.

mod sequence;

pub use sequence::{Sequencer, new_event_id};

use std::time::SystemTime;

use serde::Serialize;

use crate::config::{CameraConfig, Location, Site};
use crate::infer::{BBox, ModelId};
use crate::plate::colour::PlateColour;
use crate::plate::grammar::PlateKind;
use crate::rules::{Pass, Sighting};

pub const SCHEMA_VERSION: u32 = 1;
/// The schema, embedded so `matthan` can print it and tests can check
/// events against the very file consumers get.
pub const SCHEMA_JSON: &str = include_str!("../../schema/event.v1.schema.json");
/// The schema of the evidence notices that follow plate events.
pub const EVIDENCE_SCHEMA_JSON: &str = include_str!("../../schema/evidence.v1.schema.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    /// One vehicle pass with a valid plate reading.
    #[serde(rename = "plate")]
    Plate,
    /// A plate track whose reads never formed a valid plate: reported, not dropped.
    #[serde(rename = "plate.unreadable")]
    PlateUnreadable,
    /// One face pass.
    #[serde(rename = "face")]
    Face,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Plate => "plate",
            EventKind::PlateUnreadable => "plate.unreadable",
            EventKind::Face => "face",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub schema_version: u32,
    pub id: uuid::Uuid,
    pub kind: EventKind,
    pub site: SiteRef,
    pub camera: CameraRef,
    pub seq: u64,
    /// The earlier event of the same pass that this one replaces: a plate
    /// reported unreadable and read since, or a plate reported at the
    /// maximum delay that the rest of the pass read otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<uuid::Uuid>,
    /// UTC time at which the frame reached the agent, RFC 3339 with
    /// milliseconds.
    #[serde(with = "time::serde::rfc3339")]
    pub time: time::OffsetDateTime,
    pub frame: FrameRef,
    pub bbox: BBox,
    pub confidence: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plate: Option<PlateInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face: Option<FaceInfo>,
    pub models: Vec<ModelRef>,
    /// The evidence package being made for this event; an `evidence`
    /// message on the camera's `evidence` topic follows when it is sealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceRef>,
    /// When the frame whose analysis decided this event arrived (the end
    /// of the track, or the maximum delay): where its latency starts.
    #[serde(skip)]
    pub decided_at: Option<SystemTime>,
}

/// Where the event's evidence package is on the gateway.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceRef {
    /// The package id (the event id).
    pub id: String,
    pub uri: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CameraRef {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FrameRef {
    pub width: u32,
    pub height: u32,
    /// Frame count of this camera since the agent started.
    pub number: u64,
    /// Position in the stream, milliseconds, when the stream has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_time_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlateInfo {
    /// Uppercase letters and digits (and Đ in the MĐ/TĐ series), e.g. `51G12345`.
    pub chars: String,
    /// As written on the plate, e.g. `51G-123.45`.
    pub text: String,
    /// Whether `chars` is a valid Vietnamese plate (false only in `plate.unreadable` events).
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<PlateKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub province: Option<ProvinceRef>,
    pub colour: PlateColour,
    pub lines: u8,
    /// Corners of the plate in the best frame: top-left, top-right, bottom-right, bottom-left.
    pub corners: [[f32; 2]; 4],
    pub detector_confidence: f32,
    /// The best frame's own read confidence; `confidence` is the vote's.
    pub read_confidence: f32,
    pub char_confidences: Vec<f32>,
    /// Other readings the frames support, best first.
    pub alternatives: Vec<AlternativeRead>,
    pub track: TrackInfo,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProvinceRef {
    pub code: u8,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlternativeRead {
    pub chars: String,
    pub text: String,
    pub support: f32,
}

/// The pass behind an event: which track, over how many analysed frames, when.
#[derive(Debug, Clone, Serialize)]
pub struct TrackInfo {
    pub id: u64,
    pub frames: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaceInfo {
    pub landmarks: [[f32; 2]; 5],
    pub track: TrackInfo,
}

#[derive(Debug, Clone, Serialize)]
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

/// Turns one camera's passes into events: the camera's fixed description,
/// its sequence numbers and the model ids, in one place.
pub struct EventFactory {
    site: SiteRef,
    camera: CameraRef,
    models: Vec<ModelRef>,
    sequence: Sequencer,
}

/// UTC time with milliseconds in RFC 3339, as events and statuses write it.
pub fn rfc3339(t: SystemTime) -> String {
    utc_millis(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl EventFactory {
    pub fn new(
        site: &Site,
        camera: &CameraConfig,
        models: &[ModelId],
        sequence: Sequencer,
    ) -> Self {
        Self {
            site: SiteRef::from_config(site),
            camera: CameraRef::from_config(camera),
            models: models.iter().map(ModelRef::from).collect(),
            sequence,
        }
    }

    fn base(&self, id: uuid::Uuid, kind: EventKind, at: &Sighting, confidence: f32) -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            id,
            kind,
            site: self.site.clone(),
            camera: self.camera.clone(),
            seq: self.sequence.next(),
            supersedes: None,
            time: utc_millis(at.captured_at),
            frame: FrameRef {
                width: at.frame_width,
                height: at.frame_height,
                number: at.frame_number,
                stream_time_ms: at.stream_time.map(|t| t.as_millis() as u64),
            },
            bbox: at.bbox,
            confidence: confidence.clamp(0.0, 1.0),
            plate: None,
            face: None,
            models: self.models.clone(),
            evidence: None,
            decided_at: None,
        }
    }

    pub fn event(&self, pass: &Pass) -> Event {
        match pass {
            Pass::Plate(p) | Pass::UnreadablePlate(p) => {
                let kind = if matches!(pass, Pass::Plate(_)) {
                    EventKind::Plate
                } else {
                    EventKind::PlateUnreadable
                };
                let mut e = self.base(p.event_id, kind, &p.best.at, p.vote.confidence);
                e.supersedes = p.supersedes;
                let parsed = p.vote.plate.as_ref();
                e.plate = Some(PlateInfo {
                    chars: p.vote.chars.clone(),
                    text: parsed.map_or_else(|| p.vote.chars.clone(), |pl| pl.display.clone()),
                    valid: parsed.is_some(),
                    kind: parsed.map(|pl| pl.kind),
                    province: parsed.and_then(|pl| pl.province).map(|pr| ProvinceRef {
                        code: pr.code,
                        name: pr.name.to_string(),
                    }),
                    colour: p.colour,
                    lines: p.best.lines,
                    corners: p.best.corners,
                    detector_confidence: p.best.detector_score.clamp(0.0, 1.0),
                    read_confidence: p.best.observation.read_confidence.clamp(0.0, 1.0),
                    char_confidences: p
                        .best
                        .observation
                        .char_confidences
                        .iter()
                        .map(|c| c.clamp(0.0, 1.0))
                        .collect(),
                    alternatives: p
                        .vote
                        .alternatives
                        .iter()
                        .map(|a| AlternativeRead {
                            text: crate::plate::display_text(&a.chars),
                            chars: a.chars.clone(),
                            support: a.support,
                        })
                        .collect(),
                    track: TrackInfo {
                        id: p.track_id,
                        frames: p.frames as u64,
                        first_seen: rfc3339(p.first_seen),
                        last_seen: rfc3339(p.last_seen),
                    },
                });
                e
            }
            Pass::Face(f) => {
                let mut e = self.base(f.event_id, EventKind::Face, &f.best, f.face.score);
                e.face = Some(FaceInfo {
                    landmarks: f.face.landmarks,
                    track: TrackInfo {
                        id: f.track_id,
                        frames: f.frames as u64,
                        first_seen: rfc3339(f.first_seen),
                        last_seen: rfc3339(f.last_seen),
                    },
                });
                e
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::plate::colour::PlateColour;
    use crate::plate::vote::{PlateObservation, vote};
    use crate::rules::{PlatePass, PlateSighting};

    fn plate_pass(chars: &str, supersedes: Option<uuid::Uuid>) -> PlatePass {
        let observation = PlateObservation {
            chars: chars.into(),
            char_confidences: vec![0.9; chars.len()],
            read_confidence: 0.9,
            sharpness: 200.0,
        };
        let mut v = vote(std::slice::from_ref(&observation)).unwrap();
        v.plate = crate::plate::parse(&v.chars);
        let seen = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        PlatePass {
            track_id: 4,
            vote: v,
            colour: PlateColour::White,
            best: PlateSighting {
                at: Sighting {
                    captured_at: seen,
                    stream: 1,
                    stream_time: None,
                    frame_number: 9,
                    frame_width: 1920,
                    frame_height: 1080,
                    bbox: [10.0, 10.0, 90.0, 40.0],
                },
                corners: [[10.0, 10.0], [90.0, 10.0], [90.0, 40.0], [10.0, 40.0]],
                detector_score: 0.9,
                lines: 1,
                observation,
                colour: PlateColour::White,
            },
            frames: 12,
            first_seen: seen,
            last_seen: seen,
            frame: None,
            event_id: new_event_id(),
            supersedes,
        }
    }

    #[test]
    fn a_correction_names_the_event_it_replaces_and_keeps_to_the_schema() {
        let config = crate::config::Config::parse(
            "[site]\nid = \"s1\"\n[[camera]]\nid = \"c1\"\nsource = \"rtsp://10.1.2.3/live\"\n\
             [outputs.jsonl]\npath = \"-\"\n",
            Path::new("site.toml"),
            Path::new("/etc/matthan"),
        )
        .unwrap();
        let factory = EventFactory::new(
            &config.site,
            &config.cameras[0],
            &[ModelId {
                role: "plate_reader",
                name: "vn_plate_ocr.onnx".into(),
                sha256: "0".repeat(64),
            }],
            Sequencer::in_memory_after(0),
        );
        let first = plate_pass("51G12845", None);
        let correction = plate_pass("51G12345", Some(first.event_id));
        let (a, b) = (
            factory.event(&Pass::Plate(first.clone())),
            factory.event(&Pass::Plate(correction)),
        );
        assert_eq!(a.id, first.event_id, "the pass's id is the event's");
        assert_eq!(b.supersedes, Some(a.id));
        assert_eq!(
            (a.seq, b.seq),
            (1, 2),
            "a correction is an event of its own"
        );
        let schema: serde_json::Value = serde_json::from_str(SCHEMA_JSON).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        for e in [&a, &b] {
            let json = serde_json::to_value(e).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&json)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}\n{json}");
        }
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["supersedes"], a.id.to_string());
        assert!(
            serde_json::to_value(&a)
                .unwrap()
                .get("supersedes")
                .is_none()
        );
    }
}
