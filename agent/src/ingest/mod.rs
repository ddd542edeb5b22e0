//! Ingest: one GStreamer pipeline per camera, each run by its own
//! supervisor thread, delivering decoded frames at the analysis rate.
//!
//! A live camera's sink holds the few newest frames (`appsink
//! max-buffers=4 drop=true`): older ones are dropped inside GStreamer, so
//! nothing queues without bound. H.264 pictures that are not due for
//! analysis and that no other picture refers to are never decoded
//! ([`skip`]); frames that are not due are never copied out of the decoder.

mod arrival;
mod camera;
pub mod catch_up;
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
    /// Pictures dropped since the previous frame because decoding fell
    /// behind real time (see [`catch_up`]).
    pub behind: u64,
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
    /// Builds a pipeline from its `gst-launch` description. The error
    /// leaves the description out: it holds the camera's URL, password
    /// and all, and the error goes to the log and the camera's status.
    pub fn launch(description: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        use gstreamer::prelude::*;
        // Fatal errors only: on a missing element or a wrong property the
        // plain launch returns an error and leaks the partial pipeline it
        // built, once per retry of a camera that cannot work.
        gstreamer::parse::launch_full(description, None, gstreamer::ParseFlags::FATAL_ERRORS)
            .context("cannot build the GStreamer pipeline (is the plugin package of the element named installed? run scripts/setup, or install the matthan package)")?
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

/// A GStreamer error as one line: what, from which kind of element, and
/// the element's own detail. The same failure reads the same on every
/// retry (the element's kind, not its instance name, which grows with each
/// new pipeline), so the camera logs it once; the source-code location of
/// GStreamer's debug text, which tells an installer nothing, goes to the
/// debug log.
pub fn describe_error(err: &gstreamer::message::Error) -> String {
    use gstreamer::prelude::*;
    let element = err
        .src()
        .and_then(|s| s.downcast_ref::<gstreamer::Element>())
        .and_then(|e| e.factory())
        .map(|f| f.name().to_string())
        .unwrap_or_else(|| "the pipeline".to_string());
    let detail = err.debug().map(|text| {
        tracing::debug!(
            "GStreamer error detail: {}",
            crate::config::hide_credentials(&text)
        );
        // "file.c(123): function (): /Gst…/element:\nwhat went wrong"
        text.rsplit('\n')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    let line = match detail.filter(|d| !d.is_empty() && !d.contains("): ")) {
        Some(d) => format!("{} (from {element}: {d})", err.error()),
        None => format!("{} (from {element})", err.error()),
    };
    // The line goes to the camera's status: no camera URL's password in it.
    crate::config::hide_credentials(&line)
}

/// The pipeline's first error on its bus, waiting up to half a second for
/// it, as one line.
pub fn first_error(bus: &gstreamer::Bus) -> Option<String> {
    error_within(bus, gstreamer::ClockTime::from_mseconds(500))
}

/// The first error on `bus`, waiting up to `wait` for one.
pub fn error_within(bus: &gstreamer::Bus, wait: gstreamer::ClockTime) -> Option<String> {
    let error = [gstreamer::MessageType::Error];
    // What is queued already first: the bindings' timed filter gives up as
    // soon as a zero wait has passed, before looking at the queue.
    bus.pop_filtered(&error)
        .or_else(|| bus.timed_pop_filtered(wait, &error))
        .and_then(|msg| match msg.view() {
            gstreamer::MessageView::Error(err) => Some(describe_error(err)),
            _ => None,
        })
}

/// Drops at `decoder`'s input the pictures `drop(pad, buffer)` says to
/// drop; the others pass on to the next probe and the decoder.
pub(crate) fn drop_at_decoder_input(
    decoder: &gstreamer::Element,
    drop: impl Fn(&gstreamer::Pad, &gstreamer::BufferRef) -> bool + Send + Sync + 'static,
) {
    use gstreamer::prelude::*;
    let Some(pad) = decoder.static_pad("sink") else {
        return;
    };
    pad.add_probe(gstreamer::PadProbeType::BUFFER, move |pad, info| {
        match info.buffer() {
            // Handled, not Drop: the bindings already own the buffer and
            // free it here; GStreamer 1.22 would warn on Drop about the
            // buffer it no longer holds.
            Some(buffer) if drop(pad, buffer) => gstreamer::PadProbeReturn::Handled,
            _ => gstreamer::PadProbeReturn::Ok,
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer::prelude::*;

    fn failure_of(description: &str) -> String {
        init_gstreamer().unwrap();
        let pipeline = OwnedPipeline::launch(description).unwrap();
        let _ = pipeline.set_state(gstreamer::State::Playing);
        // Longer than `first_error` waits: a loaded machine may be slow to refuse.
        let message = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(
                gstreamer::ClockTime::from_seconds(20),
                &[gstreamer::MessageType::Error],
            )
            .expect("the pipeline fails");
        match message.view() {
            gstreamer::MessageView::Error(err) => describe_error(err),
            _ => unreachable!("filtered"),
        }
    }

    #[test]
    fn a_repeated_failure_reads_the_same_and_hides_the_password() {
        let description =
            "rtspsrc location=\"rtsp://admin:s3cret@127.0.0.1:1/x\" protocols=tcp ! fakesink";
        let first = failure_of(description);
        let again = failure_of(description);
        assert_eq!(first, again, "one failure, one line in the log");
        assert!(first.contains("from rtspsrc"), "{first}");
        assert!(
            !first.contains("s3cret") && !first.contains('\n'),
            "{first}"
        );
    }

    #[test]
    fn a_pipeline_that_cannot_be_built_keeps_its_url_to_itself() {
        let e =
            OwnedPipeline::launch("rtspsrc location=\"rtsp://admin:s3cret@h/x\" ! nosuchelement")
                .err()
                .expect("no such element");
        let e = format!("{e:#}");
        assert!(e.contains("nosuchelement") && !e.contains("s3cret"), "{e}");
    }
}
