//! Detector and reader on a video, frame by frame, against the plates a
//! person reads in it: in how many analysed frames each was read exactly,
//! and what else the agent read. (Tracking and voting over frames are
//! scored end to end by `matthan run` in the tests; this is the frame-level
//! figure under them.)

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;

use super::{Setup, normalise, reading, timing};
use crate::config::DetectKind;
use crate::ingest::file_frames::for_each_frame;

#[derive(Default, serde::Serialize)]
struct Seen {
    frames_read: usize,
    first_frame: Option<u64>,
    last_frame: Option<u64>,
}

pub fn run(
    source: &Path,
    plates: &[String],
    every: u64,
    setup: &Setup,
) -> anyhow::Result<serde_json::Value> {
    let expected: Vec<String> = plates.iter().map(|p| normalise(p)).collect();
    if expected.iter().any(String::is_empty) {
        bail!("--plates: every plate needs letters or digits, as in 59-KA 191.66");
    }
    let models = setup.load()?;
    let analysis = setup.analysis();
    let mut seen: BTreeMap<String, Seen> = expected
        .iter()
        .map(|p| (p.clone(), Seen::default()))
        .collect();
    let mut others: BTreeMap<String, usize> = BTreeMap::new();
    let (mut analysed, mut frame_ms) = (0usize, Vec::new());
    // The decoder the agent would choose on this machine, and its converter.
    crate::ingest::init_gstreamer()?;
    crate::ingest::decoder::apply(Default::default());
    let decoded = for_each_frame(source, every, |index, img| {
        let started = Instant::now();
        let d = models.analyze(&img, &[DetectKind::Plates], &analysis)?;
        frame_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        analysed += 1;
        let mut read_here: Vec<String> = d.plates.iter().map(|p| normalise(&reading(p))).collect();
        read_here.sort();
        read_here.dedup();
        for r in read_here {
            match seen.get_mut(&r) {
                Some(s) => {
                    s.frames_read += 1;
                    s.first_frame.get_or_insert(index);
                    s.last_frame = Some(index);
                }
                None => *others.entry(r).or_default() += 1,
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    let mut others: Vec<(String, usize)> = others.into_iter().collect();
    others.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(json!({
        "source": source.display().to_string(),
        "models": super::model_ids(&models),
        "threshold": setup.threshold,
        "frames_decoded": decoded,
        "every": every.max(1),
        "frames_analysed": analysed,
        "plates": seen,
        "other_reads": others.iter().take(15).map(|(t, n)| json!({"read": t, "frames": n})).collect::<Vec<_>>(),
        "timing_ms_one_core": {"detector_and_reader_per_frame": timing(frame_ms)},
    }))
}
