//! Ingest: one GStreamer pipeline per camera, each run by its own
//! supervisor thread, delivering decoded frames at the analysis rate.
//!
//! Frames that arrive while the previous one is still being analysed are
//! dropped inside GStreamer (`appsink max-buffers=1 drop=true`), so the
//! newest frame always wins and nothing queues without bound. Frames that
//! are not due for analysis are never converted to BGR.

mod camera;
pub mod decoder;
mod pipeline;

pub use camera::{CameraStatus, CameraSupervisor, StatusReport};
pub use pipeline::pipeline_description;

use std::time::{Duration, SystemTime};

use crate::frame::BgrImage;

/// One decoded frame, due for analysis.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: BgrImage,
    /// Position in the stream (the buffer's PTS), when the stream gives one.
    pub stream_time: Option<Duration>,
    /// Wall-clock time at which the frame reached the agent.
    pub captured_at: SystemTime,
    /// Count of frames delivered by this camera since the agent started,
    /// analysed or not.
    pub number: u64,
}

/// Initialises GStreamer once per process; later calls are cheap.
pub fn init_gstreamer() -> anyhow::Result<()> {
    gstreamer::init().map_err(|e| {
        anyhow::anyhow!(
            "cannot initialise GStreamer: {e}; is libgstreamer1.0 installed? run scripts/setup"
        )
    })
}
