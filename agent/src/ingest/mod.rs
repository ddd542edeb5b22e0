//! Ingest: one GStreamer pipeline per camera, each run by its own
//! supervisor thread, delivering decoded frames at the analysis rate.
//!
//! A live camera's sink holds the few newest frames (`appsink
//! max-buffers=4 drop=true`): older ones are dropped inside GStreamer, so
//! nothing queues without bound. H.264 pictures that are not due for
//! analysis and that no other picture refers to are never decoded
//! ([`skip`]); frames that are not due are never copied out of the decoder.

mod camera;
pub mod decoder;
pub mod file_frames;
pub mod motion;
mod pipeline;
pub mod skip;

pub use camera::{CameraStatus, CameraSupervisor, StatusReport};
pub use pipeline::pipeline_description;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::frame::I420Image;

/// One decoded frame, due for analysis.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Shared, so a stage that keeps a frame (evidence of a pass) holds a
    /// reference instead of a copy.
    pub image: Arc<I420Image>,
    /// Position in the stream (the buffer's PTS), when the stream gives one.
    pub stream_time: Option<Duration>,
    /// Wall-clock time at which the frame reached the agent.
    pub captured_at: SystemTime,
    /// Count of frames delivered by this camera since the agent started,
    /// analysed or not.
    pub number: u64,
    /// Analysis slots (at the camera's analysis rate) that passed since the
    /// previous frame handed over without a frame being analysed: the
    /// analysis fell behind.
    pub missed_slots: u64,
    /// Pictures left undecoded since the previous frame: not due, and no
    /// other picture refers to them (see [`skip`]).
    pub skipped: u64,
    /// The stream attempt the frame belongs to (as in [`EncodedUnit::stream`]):
    /// its timestamps only compare with that attempt's video.
    pub stream: u64,
    /// The motion gate found the scene unchanged since the last frame it
    /// let through; `image` is that frame's, and its detections still hold.
    pub unchanged: bool,
}

/// One access unit of a camera's video as it arrived: still encoded
/// (H.264, H.265 or JPEG), parsed to whole frames, never decoded or
/// re-encoded. The evidence buffer keeps these so that clips hold the
/// camera's own pixels.
#[derive(Debug, Clone)]
pub struct EncodedUnit {
    /// Counts the pipeline starts of this camera: timestamps of one stream
    /// attempt mean nothing in another.
    pub stream: u64,
    /// GStreamer caps of the elementary stream (codec, profile, codec_data).
    pub format: Arc<str>,
    pub data: Arc<[u8]>,
    pub pts: Option<Duration>,
    pub dts: Option<Duration>,
    pub duration: Option<Duration>,
    /// A unit a decoder can start from (IDR or intra frame).
    pub keyframe: bool,
    /// Wall-clock time at which the unit reached the agent.
    pub arrived: SystemTime,
}

impl EncodedUnit {
    /// The unit's place in decode order, which is the order they arrive in.
    pub fn time(&self) -> Option<Duration> {
        self.dts.or(self.pts)
    }
}

/// Where a camera hands its encoded units; called from GStreamer's
/// streaming thread, so it must be quick and never block.
pub type EncodedSink = Arc<dyn Fn(EncodedUnit) + Send + Sync>;

/// A pipeline that is set to Null when dropped, however the code running
/// it ends, so a failed camera, clip or benchmark never leaks sockets,
/// files or decoder threads.
pub struct OwnedPipeline(pub gstreamer::Pipeline);

impl OwnedPipeline {
    /// Builds a pipeline from its `gst-launch` description.
    pub fn launch(description: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        use gstreamer::prelude::*;
        gstreamer::parse::launch(description)
            .with_context(|| format!("cannot build the GStreamer pipeline `{description}`"))?
            .downcast::<gstreamer::Pipeline>()
            .map(OwnedPipeline)
            .map_err(|_| anyhow::anyhow!("pipeline description did not produce a pipeline"))
    }
}

impl std::ops::Deref for OwnedPipeline {
    type Target = gstreamer::Pipeline;
    fn deref(&self) -> &gstreamer::Pipeline {
        &self.0
    }
}

impl Drop for OwnedPipeline {
    fn drop(&mut self) {
        use gstreamer::prelude::*;
        let _ = self.0.set_state(gstreamer::State::Null);
    }
}

/// A GStreamer error as one line: what, from which element, and the
/// element's own detail.
pub fn describe_error(err: &gstreamer::message::Error) -> String {
    use gstreamer::prelude::*;
    let source = err
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_default();
    let element = source.rsplit('/').next().unwrap_or("");
    match err.debug() {
        Some(debug) => format!("{} (from {element}; {debug})", err.error()),
        None => format!("{} (from {element})", err.error()),
    }
}

/// The pipeline's first error on its bus, waiting up to half a second for
/// it, as one line.
pub fn first_error(bus: &gstreamer::Bus) -> Option<String> {
    bus.timed_pop_filtered(
        gstreamer::ClockTime::from_mseconds(500),
        &[gstreamer::MessageType::Error],
    )
    .and_then(|msg| match msg.view() {
        gstreamer::MessageView::Error(err) => Some(describe_error(err)),
        _ => None,
    })
}

/// Appends `rows` rows of `row_bytes` from a plane laid out with `stride`
/// bytes per row: GStreamer pads rows, the agent's images are packed.
pub(crate) fn append_rows(
    out: &mut Vec<u8>,
    plane: &[u8],
    stride: usize,
    row_bytes: usize,
    rows: usize,
) {
    for row in 0..rows {
        out.extend_from_slice(&plane[row * stride..row * stride + row_bytes]);
    }
}

/// Initialises GStreamer once per process; later calls are cheap.
pub fn init_gstreamer() -> anyhow::Result<()> {
    gstreamer::init().map_err(|e| {
        anyhow::anyhow!(
            "cannot initialise GStreamer: {e}; is libgstreamer1.0 installed? run scripts/setup"
        )
    })
}
