//! Health: what the agent says about itself. The retained agent and camera
//! status topics (see `publish::mqtt`) are fed by the camera supervisors'
//! [`CameraStatus`]; [`metrics`] serves Prometheus counters on loopback;
//! [`memory`] hands the allocator's unused memory back to the system.

pub mod memory;
pub mod metrics;

pub use crate::ingest::{CameraStatus, StatusReport};
