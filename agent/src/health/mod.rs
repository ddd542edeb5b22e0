//! Health: what the agent says about itself. Today that is the retained
//! agent and camera status topics (see `publish::mqtt`) fed by the camera
//! supervisors' [`crate::ingest::CameraStatus`]; metrics join here.

pub use crate::ingest::{CameraStatus, StatusReport};
