//! The two costs a camera cannot avoid, each measured alone on one core:
//! decoding its video, and running the models on its analysed frames.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use gstreamer as gst;
use gstreamer::prelude::*;

use crate::config::{Analysis, DetectKind, Models as ModelsConfig};
use crate::frame::I420Image;
use crate::infer::Models;
use crate::ingest::{OwnedPipeline, describe_error};

/// Frames of the clip kept in memory for the inference measurement.
const INFER_FRAMES: usize = 24;
/// The inference loop runs at least this long.
const INFER_SECONDS: f64 = 15.0;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Limits {
    pub decode_fps_1core: f64,
    pub infer_fps_1core: f64,
    /// Median time of one analysed frame (all models), milliseconds.
    pub infer_ms_median: f64,
    pub decoded_frames: u64,
    pub infer_frames: u64,
}

/// Runs `f` on a thread pinned to one CPU; threads it starts (GStreamer's,
/// the decoder's) inherit the pin, while the caller's stay free.
pub fn on_one_core<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity
        // only touch it and the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                bail!(
                    "cannot pin the benchmark to one core: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        f()
    })
    .join()
    .map_err(|_| anyhow!("the benchmark thread panicked"))?
}

pub fn measure(source: &Path, models: &ModelsConfig) -> anyhow::Result<Limits> {
    crate::ingest::init_gstreamer()?;
    crate::ingest::decoder::apply(Default::default());
    let src = source.to_path_buf();
    let (decode_fps, decoded) = on_one_core(move || decode_fps(&src))?;
    let frames = sample_frames(source, INFER_FRAMES)?;
    let models = ModelsConfig {
        threads: 1,
        ..models.clone()
    };
    let (infer_fps, median, n) = on_one_core(move || infer_fps(&frames, &models))?;
    Ok(Limits {
        decode_fps_1core: decode_fps,
        infer_fps_1core: infer_fps,
        infer_ms_median: median,
        decoded_frames: decoded,
        infer_frames: n,
    })
}

/// Decodes the whole file as fast as one core allows, with the agent's
/// decoder choice and no colour conversion.
fn decode_fps(source: &Path) -> anyhow::Result<(f64, u64)> {
    let description = format!(
        "filesrc location=\"{}\" ! parsebin ! capsfilter caps=\"video/x-h264;video/x-h265\" ! decodebin ! fakesink name=sink sync=false",
        source.display()
    );
    let pipeline = OwnedPipeline::launch(&description)?;
    // The decoder set up as a camera's is.
    pipeline.connect("deep-element-added", false, |args| {
        if let Some(element) = args.get(2).and_then(|a| a.get::<gst::Element>().ok()) {
            crate::ingest::decoder::one_thread(&element);
        }
        None
    });
    let count = Arc::new(AtomicU64::new(0));
    let sink = pipeline.by_name("sink").expect("named above");
    let c = count.clone();
    sink.static_pad("sink")
        .expect("fakesink has a sink pad")
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            c.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    let started = Instant::now();
    run_to_end(&pipeline, source)?;
    let frames = count.load(Ordering::Relaxed);
    Ok((frames as f64 / started.elapsed().as_secs_f64(), frames))
}

fn run_to_end(pipeline: &gst::Pipeline, source: &Path) -> anyhow::Result<()> {
    pipeline
        .set_state(gst::State::Playing)
        .with_context(|| format!("cannot play {}", source.display()))?;
    let bus = pipeline.bus().expect("pipelines have a bus");
    match bus.timed_pop_filtered(
        gst::ClockTime::NONE,
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => {
                Err(anyhow!("{}: {}", source.display(), describe_error(e)))
            }
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

/// `n` frames spread over the clip, as a camera hands them over.
fn sample_frames(source: &Path, n: usize) -> anyhow::Result<Vec<I420Image>> {
    // Every `step`-th frame, from 5 (5 analysed frames a second at 25 fps);
    // when twice as many as wanted are kept, every other one goes and the
    // step doubles, so memory stays small whatever the clip's length.
    let (mut all, mut step) = (Vec::new(), 5u64);
    crate::ingest::file_frames::for_each_frame(source, 5, |i, frame| {
        if i.is_multiple_of(step) {
            if all.len() == 2 * n {
                all = std::mem::take(&mut all).into_iter().step_by(2).collect();
                step *= 2;
            }
            all.push(frame);
        }
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(all)
}

/// Analysed frames per second with every model the agent runs on a
/// camera by default (plates and faces), one ONNX Runtime thread.
fn infer_fps(frames: &[I420Image], config: &ModelsConfig) -> anyhow::Result<(f64, f64, u64)> {
    let models = Models::load(config)?;
    let detect = [DetectKind::Plates, DetectKind::Faces];
    let thresholds = Analysis::default();
    // One untimed pass: first runs allocate.
    for f in frames.iter().take(2) {
        models.analyze(f, &detect, &thresholds)?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs_f64(INFER_SECONDS) {
        for f in frames {
            let t = Instant::now();
            models.analyze(f, &detect, &thresholds)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let total = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok((times.len() as f64 / total, median, times.len() as u64))
}
