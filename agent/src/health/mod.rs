//! Health: what the agent says about itself. The retained agent and camera
//! status topics (see `publish::mqtt`) are fed by the camera supervisors'
//! [`CameraStatus`]; [`metrics`] serves Prometheus counters on loopback.

pub mod metrics;

pub use crate::ingest::{CameraStatus, StatusReport};
