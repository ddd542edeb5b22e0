//! matthan ("mắt thần", the magic eye) is an edge video analytics agent.
//!
//! It sits on a gateway beside traffic and security cameras, decodes their
//! RTSP streams with GStreamer, finds and reads licence plates and finds
//! faces with ONNX models, and publishes one JSON event per detection over
//! MQTT to the provincial Intelligent Operations Center.
//!
//! The modules follow the flow of one frame:
//!
//! ```text
//! config ─► ingest ─► infer ─► plate ─► event ─► publish
//!  (TOML)   (GStreamer) (ort)   (text)   (JSON)   (MQTT, JSON lines)
//! ```
//!
//! Each stage hands the next a plain value ([`ingest::Frame`],
//! [`infer::Detections`], [`event::Event`]) and never reaches into another
//! stage's internals. [`run`] wires the stages together for `matthan run`;
//! `health` holds what the agent says about itself; [`shutdown`] is the one
//! mechanism every thread and task uses to stop.

pub mod bench;
pub mod config;
pub mod digest;
pub mod durable;
pub mod eval;
pub mod event;
pub mod evidence;
pub mod frame;
pub mod health;
pub mod infer;
pub mod ingest;
pub mod plate;
pub mod publish;
pub mod rules;
pub mod run;
pub mod shutdown;
pub mod track;
