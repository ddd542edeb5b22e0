//! Muxes a span of encoded access units into an MP4 file without decoding
//! them: the samples in the file are the camera's own bytes.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::ring::Span;
use crate::ingest::{OwnedPipeline, describe_error};

/// How long muxing may take before it is abandoned: a few seconds of
/// video mux in milliseconds, so this only trips on a wedged pipeline.
const MUX_TIMEOUT: Duration = Duration::from_secs(30);

/// What went into the file.
#[derive(Debug, Clone)]
pub struct ClipInfo {
    pub units: usize,
    pub keyframes: usize,
    pub format: String,
    /// Stream time of the first and last unit (decode order).
    pub start: Duration,
    pub end: Duration,
}

pub fn write_mp4(span: &Span, path: &Path) -> anyhow::Result<ClipInfo> {
    let first = span
        .units
        .first()
        .ok_or_else(|| anyhow!("no video in the buffer for this span"))?;
    // A camera that renegotiated mid-span (new resolution) ends the clip
    // there: one MP4 track has one format.
    let units: Vec<_> = span
        .units
        .iter()
        .take_while(|u| u.format == first.format)
        .collect();
    let caps = gst::Caps::from_str(&first.format)
        .map_err(|_| anyhow!("cannot read the stream format `{}`", first.format))?;
    let origin = first.time().unwrap_or_default();

    let pipeline = OwnedPipeline(gst::Pipeline::new());
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let mux = gst::ElementFactory::make("mp4mux")
        .build()
        .context("GStreamer has no mp4mux (gstreamer1.0-plugins-good); run scripts/setup")?;
    let sink = gst::ElementFactory::make("filesink")
        .property("location", path.to_string_lossy().to_string())
        .build()
        .context("GStreamer has no filesink")?;
    pipeline.add_many([src.upcast_ref(), &mux, &sink])?;
    // Linked by hand: left to itself, the link takes the muxer's first
    // free request pad, which may be an audio one.
    let video_pad = mux
        .request_pad_simple("video_%u")
        .ok_or_else(|| anyhow!("mp4mux gave no video pad"))?;
    src.static_pad("src")
        .expect("appsrc has a src pad")
        .link(&video_pad)
        .map_err(|e| anyhow!("cannot link the clip source to mp4mux: {e:?}"))?;
    mux.link(&sink)?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| anyhow!("the MP4 muxer refused to start"))?;

    let time = |t: Option<Duration>| {
        t.map(|t| gst::ClockTime::from_nseconds(t.saturating_sub(origin).as_nanos() as u64))
    };
    for u in &units {
        let mut buffer = gst::Buffer::from_slice(u.data.clone());
        let b = buffer.get_mut().expect("a new buffer is writable");
        b.set_pts(time(u.pts));
        b.set_dts(time(u.dts));
        b.set_duration(
            u.duration
                .map(|d| gst::ClockTime::from_nseconds(d.as_nanos() as u64)),
        );
        if !u.keyframe {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        src.push_buffer(buffer)
            .map_err(|e| anyhow!("the MP4 muxer refused a frame: {e:?}"))?;
    }
    src.end_of_stream()
        .map_err(|e| anyhow!("cannot end the clip: {e:?}"))?;
    let bus = pipeline.bus().expect("pipelines have a bus");
    match bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(MUX_TIMEOUT.as_nanos() as u64),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(msg) => {
            if let gst::MessageView::Error(e) = msg.view() {
                bail!("MP4 muxing failed: {}", describe_error(e));
            }
        }
        None => bail!("MP4 muxing did not finish in {} s", MUX_TIMEOUT.as_secs()),
    }
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(ClipInfo {
        units: units.len(),
        keyframes: units.iter().filter(|u| u.keyframe).count(),
        format: first.format.to_string(),
        start: origin,
        end: units.last().and_then(|u| u.time()).unwrap_or(origin),
    })
}
