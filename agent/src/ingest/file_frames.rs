//! A video file decoded to the agent's I420 frames, one after another, for
//! the offline tools (`matthan bench`, `matthan eval`): the same decoders
//! and the same copy out of the decoder as a camera, without the
//! pipeline's pacing or dropping.

use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{anyhow, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::OwnedPipeline;
use crate::frame::I420Image;

/// Calls `each` with the index (from 0) of every `every`-th frame of
/// `source` and the frame, until the file ends or `each` says stop.
/// Returns how many frames were decoded.
pub fn for_each_frame(
    source: &Path,
    every: u64,
    mut each: impl FnMut(u64, I420Image) -> anyhow::Result<ControlFlow<()>>,
) -> anyhow::Result<u64> {
    super::init_gstreamer()?;
    // A bounded sink: the decoder waits for `each` (the models) instead of
    // queueing a whole clip of decoded frames in memory.
    let description = format!(
        "filesrc location={} ! decodebin ! {} ! video/x-raw,format=I420 ! \
         appsink name=sink sync=false max-buffers=2 drop=false",
        super::pipeline::quote(&source.display().to_string()),
        super::decoder::chosen_converter(),
    );
    let pipeline = OwnedPipeline::launch(&description)?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .expect("named above");
    pipeline.set_state(gst::State::Playing)?;
    let every = every.max(1);
    let mut decoded = 0u64;
    let mut stopped = false;
    let mut last_pts = None;
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let index = decoded;
        decoded += 1;
        last_pts = sample.buffer().and_then(|b| b.pts()).or(last_pts);
        if index.is_multiple_of(every) && each(index, frame_of(&sample)?)?.is_break() {
            stopped = true;
            break;
        }
    }
    // A decoding error or a stall must not pass for the end of the file (a
    // part of it would be scored). A demuxer's error partway through ends
    // the stream too, so the bus is read at the end of stream as well.
    if !stopped {
        let eos = sink.is_eos();
        let wait = gst::ClockTime::from_mseconds(if eos { 0 } else { 500 });
        let error = pipeline
            .bus()
            .and_then(|bus| super::error_within(&bus, wait));
        if error.is_some() || !eos {
            let why = error.unwrap_or_else(|| "no frame for 10 s".into());
            bail!("{} stopped after {decoded} frames: {why}", source.display());
        }
        // A file cut short (a copy interrupted) ends early without an
        // error, while its header still tells how long it was. Only a
        // warning: the header's length is the longest track's (a longer
        // sound track, a last frame held long), not always the video's.
        let duration = pipeline.query_duration::<gst::ClockTime>();
        if let (Some(last), Some(duration)) = (last_pts, duration)
            && last + gst::ClockTime::from_seconds(1) < duration
        {
            tracing::warn!(
                file = %source.display(),
                "the video ended at {:.1} s of the {:.1} s the file's header gives, after {decoded} frames: \
                 if it was copied, it may be cut short (copy it again); a longer sound track also does this",
                last.seconds_f64(),
                duration.seconds_f64()
            );
        }
    }
    if decoded == 0 {
        bail!(
            "{} gave no frames: is it a video file GStreamer can decode?",
            source.display()
        );
    }
    Ok(decoded)
}

/// The sample's frame, copied out as a camera's frame is.
fn frame_of(sample: &gst::Sample) -> anyhow::Result<I420Image> {
    let caps = sample.caps().ok_or_else(|| anyhow!("no caps"))?;
    let info = gstreamer_video::VideoInfo::from_caps(caps)?;
    let buffer = sample.buffer().ok_or_else(|| anyhow!("no buffer"))?;
    super::camera::i420_image(buffer, &info)
}
