//! The camera supervisor: one thread per camera that owns its GStreamer
//! pipeline and restarts it when it fails, so that one broken camera never
//! stops the others.
//!
//! ```text
//!            ┌────── error / stall / panic / end of RTSP stream ──────────┐
//!            ▼                                                             │
//! Starting ──► Streaming ──(file ends, no loop)──► Finished                │
//!    ▲                                                                     │
//!    └──── Reconnecting (backoff 1 s, 2 s, 4 s, 5 s …) ◄─────────────────────┘
//! ```
//! Any state goes to Stopped on shutdown.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::arrival::Arrivals;
use super::motion::MotionGate;
use super::pipeline::{APPSINK_NAME, ENCODED_SINK_NAME, pipeline_description};
use super::skip::Schedule;
use super::{
    EncodedSink, EncodedUnit, Frame, OwnedPipeline, append_rows, describe_error, first_error,
};
use crate::config::{CameraConfig, Source};
use crate::frame::I420Image;
use crate::shutdown::Shutdown;

/// A camera that has delivered no frame for this long is restarted
/// (default of the per-camera `stall_seconds`).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The first frame may take longer: RTSP negotiation, and rtspsrc waits
/// about 5 s for UDP before it falls back to TCP.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(20);
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Kept short: a camera that comes back must be analysed again within
/// seconds, and one RTSP connection attempt every few seconds costs nothing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A camera that streamed this long before failing starts its backoff again
/// from the minimum: it was a new failure, not the same one repeating.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub enum CameraStatus {
    Starting,
    Streaming,
    Reconnecting {
        reason: String,
        retry_in: Duration,
    },
    /// A file source reached its end and does not loop.
    Finished,
    Stopped,
}

impl CameraStatus {
    pub fn name(&self) -> &'static str {
        match self {
            CameraStatus::Starting => "starting",
            CameraStatus::Streaming => "streaming",
            CameraStatus::Reconnecting { .. } => "reconnecting",
            CameraStatus::Finished => "finished",
            CameraStatus::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StatusReport {
    pub camera: String,
    pub status: CameraStatus,
    pub at: SystemTime,
}

enum StreamEnd {
    Shutdown,
    Finished,
}

pub struct CameraSupervisor {
    camera: CameraConfig,
    analysis_interval: Duration,
    shutdown: Shutdown,
    frames_seen: u64,
    stall_timeout: Duration,
    /// Set when the current stream attempt delivered a frame.
    delivered_frames: bool,
    /// Where a file read once goes on after a failure: just past the last
    /// frame handed over, so that no frame is analysed twice (a vehicle
    /// reported twice) and a frame the analysis failed on is not met again.
    resume_file_at: Option<Resume>,
    /// Attempts in a row that resumed the file and failed before a new frame.
    resume_failures: u32,
    encoded: Option<EncodedSink>,
    /// Stream attempts so far (pipeline starts, and seeks back to loop a
    /// file): tags frames and encoded units, whose timestamps only compare
    /// within one attempt. Shared with the encoded branch's callback.
    streams: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CameraSupervisor {
    pub fn new(camera: CameraConfig, analysis_fps: f64, shutdown: Shutdown) -> Self {
        Self {
            analysis_interval: Duration::from_secs_f64(1.0 / analysis_fps),
            stall_timeout: camera
                .stall_seconds
                .map_or(STALL_TIMEOUT, Duration::from_secs_f64),
            camera,
            shutdown,
            frames_seen: 0,
            delivered_frames: false,
            resume_file_at: None,
            resume_failures: 0,
            encoded: None,
            streams: Default::default(),
        }
    }

    /// Hands every encoded access unit to `sink` as it arrives (for the
    /// evidence buffer), whether or not its frame is analysed.
    pub fn with_encoded_sink(mut self, sink: EncodedSink) -> Self {
        self.encoded = Some(sink);
        self
    }

    /// Runs until shutdown (or the end of a non-looping file), calling
    /// `on_frame` for every frame due for analysis and `on_status` on every
    /// change of state.
    pub fn run(mut self, mut on_frame: impl FnMut(Frame), mut report: impl FnMut(CameraStatus)) {
        // A panic in reporting a state (a bug: it ends the camera's passes)
        // must not end this thread in silence, with the camera never
        // restarted.
        let id = self.camera.id.clone();
        let mut on_status = |status: CameraStatus| {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| report(status))).is_err() {
                tracing::error!(camera = %id, "reporting the camera's state panicked: a bug, please report it with the log");
            }
        };
        let mut backoff = BACKOFF_MIN;
        let mut last_reason: Option<String> = None;
        loop {
            if self.shutdown.is_triggered() {
                break;
            }
            on_status(CameraStatus::Starting);
            let started = Instant::now();
            let resuming = self.resume_file_at;
            // A panic in the work on a frame (a bug) fails this stream like
            // any other failure: the camera reconnects, and says why, instead
            // of its thread ending in silence while the others go on.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.stream_once(&mut on_frame, &mut on_status)
            }))
            .unwrap_or_else(|panic| {
                Err(anyhow!(
                    "the analysis panicked ({}): a bug, please report it with the log",
                    panic_message(panic.as_ref())
                ))
            });
            match outcome {
                Ok(StreamEnd::Shutdown) => break,
                Ok(StreamEnd::Finished) => {
                    tracing::info!(camera = %self.camera.id, "file source finished");
                    on_status(CameraStatus::Finished);
                    return;
                }
                Err(e) => {
                    if started.elapsed() > BACKOFF_RESET_AFTER {
                        backoff = BACKOFF_MIN;
                    }
                    let delivered = std::mem::take(&mut self.delivered_frames);
                    if delivered {
                        // It had recovered: this failure is news even if it reads the same.
                        last_reason = None;
                    }
                    let reason = format!("{e:#}");
                    self.resume_failures = if delivered {
                        0
                    } else {
                        self.resume_failures + u32::from(resuming.is_some())
                    };
                    if let Some(at) = resuming
                        && self.resume_failures >= RESUME_TRIES
                    {
                        // Failed again and again before the frame after: what is left cannot be read.
                        tracing::error!(
                            camera = %self.camera.id,
                            source = %self.camera.source.display(),
                            "the file cannot be read past {:.1} s: {reason}; the frames before were analysed",
                            at.stream_time.seconds_f64()
                        );
                        on_status(CameraStatus::Finished);
                        return;
                    }
                    // One clear line per new reason; the same failure repeating every
                    // few seconds is not news, and would bury the other cameras' logs.
                    if last_reason.as_deref() == Some(reason.as_str()) {
                        tracing::debug!(camera = %self.camera.id, "camera still failing: {reason}");
                    } else {
                        tracing::warn!(
                            camera = %self.camera.id,
                            source = %self.camera.source.display(),
                            retry_in_s = backoff.as_secs_f64(),
                            "camera failed: {reason}"
                        );
                        last_reason = Some(reason.clone());
                    }
                    on_status(CameraStatus::Reconnecting {
                        reason,
                        retry_in: backoff,
                    });
                    if self.shutdown.sleep_or_stop(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        on_status(CameraStatus::Stopped);
    }

    fn stream_once(
        &mut self,
        on_frame: &mut impl FnMut(Frame),
        on_status: &mut impl FnMut(CameraStatus),
    ) -> anyhow::Result<StreamEnd> {
        if let Source::File(path) = &self.camera.source
            && !path.is_file()
        {
            return Err(anyhow!(
                "{} does not exist or is not a file",
                path.display()
            ));
        }
        let description = pipeline_description(&self.camera, self.encoded.is_some());
        let running = OwnedPipeline::launch(&description)?;
        super::pipeline::refuse_other_codecs(&running);
        let schedule = Schedule::new(self.analysis_interval);
        let decoder_schedule = schedule.clone();
        // Only a live camera can fall behind real time. (A file played at
        // real time could too, but each loop's flushing seek leaves its
        // pictures seconds "behind" until the sink has prerolled again.)
        let catch_up = super::catch_up::CatchUp::new(&self.camera.id);
        let live = matches!(self.camera.source, Source::Rtsp(_));
        let decoder_catch_up = live.then(|| catch_up.clone());
        // Arrival is stamped as the access unit leaves the parser, before
        // the queue to the decoder; without the evidence branch there is
        // no tee, and the decoder's input is the first place to stamp.
        let arrivals = Arrivals::default();
        let tee_input = running.by_name("split").and_then(|t| t.static_pad("sink"));
        if let Some(pad) = &tee_input {
            arrivals.stamp_at(pad);
        }
        let decoder_arrivals = tee_input.is_none().then(|| arrivals.clone());
        running.connect("deep-element-added", false, move |args| {
            let element = args.get(2)?.get::<gst::Element>().ok()?;
            let factory = element.factory()?;
            if decodes_pictures(&factory) {
                if let Some(c) = &decoder_catch_up {
                    c.watch(&element);
                }
                decoder_schedule.skip_undue_non_reference(&element);
                if let (Some(a), Some(pad)) = (&decoder_arrivals, element.static_pad("sink")) {
                    a.stamp_at(&pad);
                }
            }
            super::decoder::one_thread(&element);
            None
        });
        let appsink = running
            .0
            .by_name(APPSINK_NAME)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| anyhow!("pipeline has no appsink named {APPSINK_NAME}"))?;
        let bus = running
            .0
            .bus()
            .ok_or_else(|| anyhow!("pipeline has no bus"))?;
        self.streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(sink) = &self.encoded {
            let encoded = running
                .0
                .by_name(ENCODED_SINK_NAME)
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                .ok_or_else(|| anyhow!("pipeline has no appsink named {ENCODED_SINK_NAME}"))?;
            encoded.set_callbacks(encoded_callbacks(sink.clone(), self.streams.clone()));
        }
        // After a resume, the pictures from the keyframe before up to the
        // last one handed over come again: left out, once.
        let mut skip_through = None;
        if let Some(at) = self.resume_file_at {
            resume_at(&running, at)?;
            skip_through = Some(at.last_pts);
        }
        running.0.set_state(gst::State::Playing).map_err(|_| {
            anyhow!(
                "{}",
                first_error(&bus).unwrap_or_else(|| "the pipeline refused to start".into())
            )
        })?;

        let started = Instant::now();
        let mut gate = MotionGate::default();
        let mut last_image: Option<std::sync::Arc<I420Image>> = None;
        let mut last_frame: Option<Instant> = None;
        let mut last_arrival = std::time::UNIX_EPOCH;
        let mut format: Option<(u32, u32, String)> = None;
        let mut next_due_wall = Instant::now();
        loop {
            if self.shutdown.is_triggered() {
                return Ok(StreamEnd::Shutdown);
            }
            while let Some(msg) =
                bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos])
            {
                match msg.view() {
                    gst::MessageView::Error(err) => {
                        return Err(anyhow!("{}", describe_error(err)));
                    }
                    gst::MessageView::Eos(_) => match &self.camera.source {
                        Source::File(_) if self.camera.loop_file => {
                            schedule.restart();
                            gate = MotionGate::default();
                            last_image = None;
                            // Timestamps start again: a new attempt for the
                            // evidence buffer, counted before the seek lets
                            // the first units of the new round through.
                            self.streams
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            running
                                .0
                                .seek_simple(
                                    gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                                    gst::ClockTime::ZERO,
                                )
                                .context("cannot seek to the start of the file to loop it")?;
                        }
                        Source::File(_) => return Ok(StreamEnd::Finished),
                        Source::Rtsp(_) => return Err(anyhow!("the camera ended the stream")),
                    },
                    _ => {}
                }
            }

            let Some(sample) = appsink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
                let waited = last_frame.map_or(started.elapsed(), |t| t.elapsed());
                // A camera that sends a keyframe only every so often may
                // take longer to start than FIRST_FRAME_TIMEOUT; the
                // installer's stall time then covers the start too.
                let limit = if last_frame.is_some() {
                    self.stall_timeout
                } else {
                    FIRST_FRAME_TIMEOUT.max(self.stall_timeout)
                };
                if waited > limit && !appsink.is_eos() {
                    return Err(anyhow!("no frame for {} s (stalled)", waited.as_secs()));
                }
                continue;
            };
            if let Some(last) = skip_through {
                match sample.buffer().and_then(|b| b.pts()) {
                    Some(pts) if pts <= last => continue,
                    _ => skip_through = None,
                }
            }
            if last_frame.is_none() {
                self.delivered_frames = true;
                tracing::info!(camera = %self.camera.id, "streaming");
                on_status(CameraStatus::Streaming);
            }
            last_frame = Some(Instant::now());
            self.frames_seen += 1;

            let buffer = sample
                .buffer()
                .ok_or_else(|| anyhow!("sample without buffer"))?;
            // Arrival, where frame-to-event latency starts: before decoding.
            let arrived = super::arrival::no_earlier(
                buffer
                    .pts()
                    .and_then(|pts| arrivals.of(pts.nseconds()))
                    .unwrap_or_else(SystemTime::now),
                last_arrival,
            );
            last_arrival = arrived;
            // Due-ness follows the stream's own clock when it has one, so a
            // file analysed faster than real time gives the same frames as
            // one played at real time.
            let pts = buffer.pts();
            let mut missed_slots = 0;
            let due = match pts {
                Some(pts) => match schedule.take(pts) {
                    Some(missed) => {
                        missed_slots = missed;
                        true
                    }
                    None => false,
                },
                None => {
                    let now = Instant::now();
                    if now >= next_due_wall {
                        next_due_wall = now + self.analysis_interval;
                        true
                    } else {
                        false
                    }
                }
            };
            if !due {
                continue;
            }
            let caps = sample
                .caps()
                .ok_or_else(|| anyhow!("sample without caps"))?;
            let info =
                gst_video::VideoInfo::from_caps(caps).context("frame caps are not raw video")?;
            // A camera that changes resolution mid-stream (a settings change,
            // a failover encoder) gets a fresh pipeline rather than
            // half-renegotiated elements.
            let now_format = (
                info.width(),
                info.height(),
                info.format().to_str().to_string(),
            );
            match &format {
                Some(f) if *f != now_format => {
                    return Err(anyhow!(
                        "stream format changed from {}x{} {} to {}x{} {}",
                        f.0,
                        f.1,
                        f.2,
                        now_format.0,
                        now_format.1,
                        now_format.2
                    ));
                }
                Some(_) => {}
                None => format = Some(now_format),
            }
            // The first frame too goes through the gate: it is the
            // reference the second is compared with.
            let unchanged = self.camera.motion_gate
                && !luma_moved(&mut gate, buffer, &info)?
                && last_image.is_some();
            let image = match (&last_image, unchanged) {
                (Some(last), true) => last.clone(),
                _ => std::sync::Arc::new(i420_image(buffer, &info)?),
            };
            last_image = Some(image.clone());
            if matches!(self.camera.source, Source::File(_))
                && !self.camera.loop_file
                && let Some(pts) = pts
            {
                // A looping file starts each round afresh anyway. A seek is
                // in stream time, which a file's edit list may set apart
                // from its timestamps.
                let stream_time = sample
                    .segment()
                    .and_then(|s| s.downcast_ref::<gst::format::Time>())
                    .and_then(|s| s.to_stream_time(pts))
                    .unwrap_or(pts);
                self.resume_file_at = Some(Resume {
                    stream_time,
                    last_pts: pts,
                });
            }
            on_frame(Frame {
                image,
                missed_slots,
                skipped: schedule.take_skipped(),
                behind: catch_up.take_dropped(),
                unchanged,
                stream: self.streams.load(std::sync::atomic::Ordering::Relaxed),
                stream_time: pts.map(|p| std::time::Duration::from_nanos(p.nseconds())),
                captured_at: arrived,
                number: self.frames_seen,
            });
        }
    }
}

/// Whether `factory` decodes a camera's pictures: a video decoder, or an
/// image one (`jpegdec`, which takes MJPEG, is classed an image decoder).
fn decodes_pictures(factory: &gst::ElementFactory) -> bool {
    [
        gst::ElementFactoryType::MEDIA_VIDEO,
        gst::ElementFactoryType::MEDIA_IMAGE,
    ]
    .into_iter()
    .any(|media| factory.has_type(gst::ElementFactoryType::DECODER | media))
}

/// Attempts in a row that may resume a file and fail before a new frame
/// before it counts as unreadable from there (a failure may pass: a file
/// briefly away, a hardware decoder with no session free).
const RESUME_TRIES: u32 = 3;

/// Where a file read once stopped: the last frame handed to the analysis.
#[derive(Debug, Clone, Copy)]
struct Resume {
    stream_time: gst::ClockTime,
    last_pts: gst::ClockTime,
}

/// Prerolls `pipeline` and seeks it to the keyframe at or before where it
/// stopped: the evidence clip gets its keyframe, and the frames up to the
/// last one handed over are left out as they come again.
fn resume_at(pipeline: &gst::Pipeline, at: Resume) -> anyhow::Result<()> {
    let failed = |what: &str| {
        let bus = pipeline.bus();
        anyhow!(
            "{what} {:.1} s into the file, where it failed before: {}",
            at.stream_time.seconds_f64(),
            bus.as_ref()
                .and_then(first_error)
                .unwrap_or_else(|| "no reason given".into())
        )
    };
    pipeline
        .set_state(gst::State::Paused)
        .map_err(|_| failed("cannot start again"))?;
    match pipeline.state(gst::ClockTime::from_seconds(10)) {
        (Ok(gst::StateChangeSuccess::Success), gst::State::Paused, _) => {}
        _ => return Err(failed("cannot start again")),
    }
    pipeline
        .seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE,
            at.stream_time,
        )
        .map_err(|_| failed("cannot go on"))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Turns each sample of the encoded branch into an [`EncodedUnit`]. The
/// caps string is shared between units until the stream renegotiates.
fn encoded_callbacks(
    sink: EncodedSink,
    streams: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> gst_app::AppSinkCallbacks {
    let mut format: Option<(gst::Caps, std::sync::Arc<str>)> = None;
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |appsink| {
            let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
                return Ok(gst::FlowSuccess::Ok);
            };
            if format.as_ref().is_none_or(|(c, _)| c != caps) {
                format = Some((caps.to_owned(), caps.to_string().into()));
            }
            let Ok(map) = buffer.map_readable() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let ns = |t: Option<gst::ClockTime>| t.map(|t| Duration::from_nanos(t.nseconds()));
            sink(EncodedUnit {
                stream: streams.load(std::sync::atomic::Ordering::Relaxed),
                format: format.as_ref().expect("set above").1.clone(),
                data: map.as_slice().into(),
                pts: ns(buffer.pts()),
                dts: ns(buffer.dts()),
                duration: ns(buffer.duration()),
                keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                arrived: SystemTime::now(),
            });
            Ok(gst::FlowSuccess::Ok)
        })
        .build()
}

/// Runs the motion gate on the frame's luma plane, without converting it.
fn luma_moved(
    gate: &mut MotionGate,
    buffer: &gst::BufferRef,
    info: &gst_video::VideoInfo,
) -> anyhow::Result<bool> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info)
        .map_err(|_| anyhow!("cannot map the decoded frame"))?;
    let luma = frame
        .plane_data(0)
        .map_err(|_| anyhow!("frame has no luma plane"))?;
    Ok(gate.moved(
        luma,
        frame.plane_stride()[0] as usize,
        info.width() as usize,
        info.height() as usize,
    ))
}

/// Copies one decoded frame out of the decoder's buffer into a packed
/// [`I420Image`]: one copy when the planes already lie back to back
/// without row padding (as GStreamer lays out I420 whose width is a
/// multiple of 8: 1080p, 720p, D1), row by row otherwise. The copy lets
/// the decoder reuse its buffer at once, however long a track or an
/// evidence package keeps the frame. Odd widths or heights lose their last
/// column or row, which chroma subsampling leaves without colour anyway.
pub fn i420_image(
    buffer: &gst::BufferRef,
    info: &gst_video::VideoInfo,
) -> anyhow::Result<I420Image> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info)
        .map_err(|_| anyhow!("cannot map the decoded frame"))?;
    let w = (info.width() & !1) as usize;
    let h = (info.height() & !1) as usize;
    if w == 0 || h == 0 {
        return Err(anyhow!(
            "frame of {}x{} is too small",
            info.width(),
            info.height()
        ));
    }
    let planes = [(w, h), (w / 2, h / 2), (w / 2, h / 2)];
    let map = buffer
        .map_readable()
        .map_err(|_| anyhow!("cannot map the decoded frame"))?;
    // The frame's own plane pointers and strides (they follow the decoder's
    // video meta, not only the caps) must be exactly where a packed I420
    // image would have them for the one-copy path.
    let base = map.as_ptr() as usize;
    let packed_at = [0, w * h, w * h + w * h / 4];
    let in_place = (info.width() as usize, info.height() as usize) == (w, h)
        && (0..3).all(|i| {
            frame.plane_stride()[i] as usize == planes[i].0
                && frame
                    .plane_data(i as u32)
                    .is_ok_and(|d| d.as_ptr() as usize == base + packed_at[i])
        });
    let data = match map.as_slice().get(..w * h * 3 / 2) {
        Some(bytes) if in_place => bytes.to_vec(),
        _ => {
            let mut packed = Vec::with_capacity(w * h * 3 / 2);
            for (plane, (pw, ph)) in planes.into_iter().enumerate() {
                let stride = frame.plane_stride()[plane] as usize;
                let data = frame
                    .plane_data(plane as u32)
                    .map_err(|_| anyhow!("frame has no plane {plane}"))?;
                append_rows(&mut packed, data, stride, pw, ph);
            }
            packed
        }
    };
    Ok(I420Image::new(w as u32, h as u32, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An I420 frame whose left half is red and right half blue, laid out
    /// as GStreamer lays out that size.
    fn red_blue(width: u32, height: u32) -> (gst::Buffer, gst_video::VideoInfo) {
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, width, height)
            .build()
            .unwrap();
        let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
        {
            let b = buffer.get_mut().unwrap();
            let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info).unwrap();
            // BT.601 limited range: red (81, 90, 240), blue (41, 240, 110).
            for (plane, (pw, ph), left, right) in [
                (0, (width, height), 81u8, 41u8),
                (1, (width.div_ceil(2), height.div_ceil(2)), 90, 240),
                (2, (width.div_ceil(2), height.div_ceil(2)), 240, 110),
            ] {
                let stride = frame.plane_stride()[plane] as usize;
                let data = frame.plane_data_mut(plane as u32).unwrap();
                for y in 0..ph as usize {
                    for x in 0..pw as usize {
                        data[y * stride + x] = if x < pw as usize / 2 { left } else { right };
                    }
                }
            }
        }
        (buffer, info)
    }

    #[test]
    fn i420_is_copied_in_one_piece_and_row_by_row_alike() {
        crate::ingest::init_gstreamer().unwrap();
        // 64 wide: planes back to back (copied in one piece); 68 wide: the
        // chroma rows (34) are padded to 36 (copied row by row).
        for (w, h) in [(64, 48), (68, 50)] {
            let (buffer, info) = red_blue(w, h);
            let img = i420_image(&buffer, &info).unwrap().to_bgr().unwrap();
            assert_eq!((img.width, img.height), (w, h));
            let near = |got: [u8; 3], want: [u8; 3]| {
                got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 6)
            };
            for y in [0, h / 2, h - 1] {
                let (left, right) = (img.pixel(2, y), img.pixel(w - 3, y));
                assert!(near(left, [0, 0, 255]), "{w}x{h} left {left:?}");
                assert!(near(right, [255, 0, 0]), "{w}x{h} right {right:?}");
            }
        }
    }

    /// Encodes `frames` of a moving ball at 25 fps into an H.264 MP4 in
    /// `dir`, with `x264` options, and returns a file camera reading it as
    /// fast as it can.
    fn ball_clip_camera(
        dir: &std::path::Path,
        frames: u32,
        (width, height): (u32, u32),
        x264: &str,
    ) -> CameraConfig {
        file_camera(
            "ball",
            &dir.join("ball.mp4"),
            &format!(
                "videotestsrc pattern=ball num-buffers={frames} \
                 ! video/x-raw,width={width},height={height},framerate=25/1 \
                 ! videoconvert ! video/x-raw,format=I420 ! x264enc {x264} ! h264parse ! mp4mux"
            ),
        )
    }

    /// Writes `encode` (a test source and its encoder) into `clip` to its
    /// end, and returns a file camera `id` reading it as fast as it can.
    fn file_camera(id: &str, clip: &std::path::Path, encode: &str) -> CameraConfig {
        crate::ingest::init_gstreamer().unwrap();
        let made =
            OwnedPipeline::launch(&format!("{encode} ! filesink location={}", clip.display()))
                .unwrap();
        made.set_state(gst::State::Playing).unwrap();
        let done = made.bus().unwrap().timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        assert!(matches!(
            done.map(|m| m.type_()),
            Some(gst::MessageType::Eos)
        ));
        toml::from_str(&format!(
            "id = \"{id}\"\nsource = \"file://{}\"\nrealtime = false",
            clip.display()
        ))
        .unwrap()
    }

    #[test]
    fn mjpeg_pictures_are_stamped_and_caught_up_at_their_decoder_too() {
        crate::ingest::init_gstreamer().unwrap();
        let factory = |name: &str| gst::ElementFactory::find(name).unwrap();
        for decoder in ["jpegdec", "avdec_h264", "avdec_h265"] {
            assert!(decodes_pictures(&factory(decoder)), "{decoder}");
        }
        for other in ["jpegparse", "h264parse", "videoconvert", "x264enc"] {
            assert!(!decodes_pictures(&factory(other)), "{other}");
        }
        // And an MJPEG camera still streams with the decoder's probes on.
        let dir = tempfile::tempdir().unwrap();
        let camera = file_camera(
            "mjpeg",
            &dir.path().join("mjpeg.avi"),
            "videotestsrc num-buffers=25 ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! jpegenc ! avimux",
        );
        let mut frames = 0;
        CameraSupervisor::new(camera, 5.0, Shutdown::new()).run(|_| frames += 1, |_| {});
        assert_eq!(frames, 5);
    }

    #[test]
    fn a_panic_in_the_analysis_restarts_the_stream_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let camera = ball_clip_camera(dir.path(), 50, (160, 120), "");
        let (mut times, mut statuses) = (Vec::new(), Vec::new());
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        CameraSupervisor::new(camera, 5.0, Shutdown::new()).run(
            |frame| {
                times.push(frame.stream_time.unwrap().as_millis());
                if times.len() == 3 {
                    panic!("frame 3 is cursed");
                }
            },
            |s| statuses.push(s),
        );
        std::panic::set_hook(default_hook);
        let reason = statuses
            .iter()
            .find_map(|s| match s {
                CameraStatus::Reconnecting { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .expect("the camera reconnected");
        assert!(reason.contains("frame 3 is cursed"), "{reason}");
        // The file went on with the picture after the one the analysis
        // failed on (25 a second), to its end, and no frame came twice:
        // read again from its start, its vehicles would be reported twice.
        assert_eq!(times[3], times[2] + 40, "{times:?}");
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert!(*times.last().unwrap() >= times[0] + 1800, "{times:?}");
        assert_eq!(times.len(), 11, "{times:?}");
        assert_eq!(statuses.last(), Some(&CameraStatus::Finished));
    }

    #[test]
    fn a_file_that_cannot_go_on_where_it_failed_is_finished_not_read_for_ever() {
        let dir = tempfile::tempdir().unwrap();
        let camera = ball_clip_camera(dir.path(), 50, (160, 120), "");
        let clip = dir.path().join("ball.mp4");
        let (mut frames, mut statuses) = (0, Vec::new());
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        CameraSupervisor::new(camera, 5.0, Shutdown::new()).run(
            |_| {
                frames += 1;
                if frames == 3 {
                    // The rest of the file is gone (a drive pulled out).
                    std::fs::remove_file(&clip).unwrap();
                    panic!("frame 3 is cursed");
                }
            },
            |s| statuses.push(s),
        );
        std::panic::set_hook(default_hook);
        assert_eq!(frames, 3);
        let reconnects = statuses
            .iter()
            .filter(|s| matches!(s, CameraStatus::Reconnecting { .. }))
            .count();
        // The first failure, then each resume that found no file.
        assert_eq!(reconnects, RESUME_TRIES as usize, "{statuses:?}");
        assert_eq!(statuses.last(), Some(&CameraStatus::Finished));
    }

    #[test]
    fn a_camera_in_a_codec_evidence_cannot_keep_is_told_so() {
        let dir = tempfile::tempdir().unwrap();
        let camera = file_camera(
            "old",
            &dir.path().join("mpeg4.mkv"),
            "videotestsrc num-buffers=25 ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! videoconvert ! avenc_mpeg4 ! matroskamux",
        );
        let shutdown = Shutdown::new();
        let mut reasons = Vec::new();
        CameraSupervisor::new(camera, 5.0, shutdown.clone())
            .with_encoded_sink(std::sync::Arc::new(|_: EncodedUnit| {}))
            .run(
                |_| {},
                |s| {
                    if let CameraStatus::Reconnecting { reason, .. } = s {
                        reasons.push(reason);
                        shutdown.trigger();
                    }
                },
            );
        assert!(
            reasons
                .first()
                .is_some_and(|r| r.contains("video/mpeg") && r.contains("H.264, H.265 or MJPEG")),
            "{reasons:?}"
        );
    }

    /// A camera analysed at 5 fps of a 25 fps clip with B-frames: the
    /// decoder never sees most non-reference pictures, yet the frames
    /// analysed are exactly those a full decode gives (every fifth), and
    /// the evidence branch still gets every picture.
    #[test]
    fn undue_non_reference_pictures_are_not_decoded() {
        use crate::ingest::skip::{NalFormat, is_non_reference};
        let dir = tempfile::tempdir().unwrap();
        let camera = ball_clip_camera(
            dir.path(),
            100,
            (320, 240),
            "bframes=3 b-pyramid=true key-int-max=50",
        );
        // Every picture the evidence branch gets: its time, and whether it is a non-reference one.
        let encoded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = encoded.clone();
        let (mut times, mut skipped) = (Vec::new(), 0);
        CameraSupervisor::new(camera, 5.0, Shutdown::new())
            .with_encoded_sink(std::sync::Arc::new(move |unit: EncodedUnit| {
                let caps = unit.format.parse::<gst::Caps>().unwrap();
                let format = NalFormat::of_h264_caps(&caps).unwrap();
                let non_ref = is_non_reference(&unit.data, format);
                seen.lock()
                    .unwrap()
                    .push((unit.pts.unwrap().as_millis(), non_ref));
            }))
            .run(
                |frame| {
                    times.push(frame.stream_time.unwrap().as_millis());
                    skipped += frame.skipped;
                },
                |_| {},
            );
        // The file starts at its first picture's time (B-frames delay it).
        let every_fifth: Vec<u128> = (0..20).map(|i| times[0] + i * 200).collect();
        assert_eq!(times, every_fifth);
        let encoded = encoded.lock().unwrap();
        assert_eq!(encoded.len(), 100);
        let undue_non_ref = encoded
            .iter()
            .filter(|(pts, non_ref)| *non_ref && !times.contains(pts))
            .count() as u64;
        assert!(
            undue_non_ref >= 20,
            "the clip has {undue_non_ref} undue B-frames"
        );
        // All of them, but for those the decoder took before the first slot was known.
        assert!(
            skipped <= undue_non_ref && skipped + 3 >= undue_non_ref,
            "{skipped} of {undue_non_ref} undue non-reference pictures were left undecoded"
        );
    }
}
