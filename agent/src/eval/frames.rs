//! The detector, then detector and reader, on whole frames: a folder with
//! `images/` and `labels/` (YOLO: `class cx cy w h`, relative to the
//! image; no label file = no plate), and optionally a CSV (`image`, `category`, `plate`) that picks
//! the frames, names their category (motorbike, car, …) and gives the
//! string of a frame's plate where a person could read it. A string counts
//! only for a frame with one labelled plate, so it is never matched to the
//! wrong box.
//!
//! A labelled plate is found when a detection overlaps it by IoU ≥ 0.3
//! (detections matched greedily, best score first, one plate each); a
//! detection that matches no plate is a false positive. Precision is also
//! given for the detections the agent would report from one frame: those
//! read confidently enough to vote, or sure enough to stand as an
//! unreadable plate (`analysis.plate_read_threshold`,
//! `analysis.plate_unreadable_threshold`). A readable plate
//! is read when the agent's reading of a detection matched to it equals
//! the string.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use super::{Ratio, Setup, column, normalise, read_csv, reading, timing};
use crate::bench::round_to;
use crate::config::{Analysis, DetectKind};
use crate::frame::{BgrImage, I420Image};
use crate::infer::Detections;
use crate::infer::geometry::{BBox, iou};

const MATCH_IOU: f32 = 0.3;

/// A frame with where to find its labels and what a person read in it.
struct Labelled {
    image: PathBuf,
    label: PathBuf,
    category: String,
    plate: Option<String>,
}

/// What the agent made of one frame, against its labels.
struct Outcome {
    plates: usize,
    /// Per detection: the labelled plate it matched, and whether the agent
    /// would report it (read confidently enough, or sure it is a plate).
    detections: Vec<(Option<usize>, bool)>,
    /// The frame's plate string, when it has one plate and a person read it.
    want: Option<String>,
    /// (agent's reading, raw argmax) of each detection on that plate.
    reads: Vec<(String, String)>,
}

impl Outcome {
    fn of(d: &Detections, truth: &[BBox], plate: Option<&str>, analysis: &Analysis) -> Self {
        let boxes: Vec<(BBox, f32)> = d
            .plates
            .iter()
            .map(|p| (p.bbox, p.detector_score))
            .collect();
        let matched = match_boxes(&boxes, truth);
        let want = plate.filter(|_| truth.len() == 1).map(str::to_string);
        let reads = d
            .plates
            .iter()
            .zip(&matched)
            .filter(|(_, m)| want.is_some() && **m == Some(0))
            // A read too weak to vote would be published as unreadable, not as this text.
            .filter(|(p, _)| p.read_confidence >= analysis.plate_read_threshold)
            .map(|(p, _)| (normalise(&reading(p)), normalise(&p.chars)))
            .collect();
        let detections = d
            .plates
            .iter()
            .zip(matched)
            .map(|(p, m)| {
                // As a one-frame track would be: a valid confident reading,
                // or a detection sure enough to stand as an unreadable plate.
                let readable = p.read_confidence >= analysis.plate_read_threshold
                    && crate::plate::parse(&reading(p)).is_some();
                let reported = readable || p.detector_score >= analysis.plate_unreadable_threshold;
                (m, reported)
            })
            .collect();
        Self {
            plates: truth.len(),
            detections,
            want,
            reads,
        }
    }

    fn read_exactly(&self) -> Option<bool> {
        let want = self.want.as_ref()?;
        Some(self.reads.iter().any(|(r, _)| r == want))
    }
}

#[derive(Default)]
struct Score {
    found: Ratio,
    precise: Ratio,
    reported_precise: Ratio,
    read: Ratio,
    read_raw: Ratio,
    /// Plates read exactly over every plate present, those no person
    /// could read included (they count as missed).
    read_of_present: Ratio,
}

impl Score {
    fn add(&mut self, o: &Outcome) {
        for t in 0..o.plates {
            self.found
                .add(o.detections.iter().any(|(m, _)| *m == Some(t)));
        }
        for (m, reported) in &o.detections {
            self.precise.add(m.is_some());
            if *reported {
                self.reported_precise.add(m.is_some());
            }
        }
        for t in 0..o.plates {
            self.read_of_present
                .add(t == 0 && o.read_exactly() == Some(true));
        }
        if let (Some(want), Some(hit)) = (&o.want, o.read_exactly()) {
            self.read.add(hit);
            self.read_raw
                .add(o.reads.iter().any(|(_, raw)| raw == want));
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "recall": self.found.json(),
            "precision": self.precise.json(),
            "precision_of_reported": self.reported_precise.json(),
            "end_to_end_exact": self.read.json(),
            "end_to_end_exact_raw_argmax": self.read_raw.json(),
            "end_to_end_exact_of_present": self.read_of_present.json(),
        })
    }
}

pub fn run(dir: &Path, labels: Option<&Path>, setup: &Setup) -> anyhow::Result<serde_json::Value> {
    let frames = list(dir, labels)?;
    let models = setup.load()?;
    let analysis = setup.analysis();
    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    let (mut detector_ms, mut reader_ms, mut frame_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut misreads, mut false_positives, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for f in &frames {
        // One unreadable file is reported and left out; the rest still count.
        let opened = BgrImage::open(&f.image)
            .and_then(|img| Ok((yolo_boxes(&f.label, img.width, img.height)?, img)));
        let (truth, img) = match opened {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        // A person's reading must be checked against the plate it was read
        // from: without labels, or with several plates, it cannot be.
        if f.plate.is_some() && !f.label.is_file() {
            errors.push(format!(
                "{}: a plate string is given but the label file {} is missing",
                f.image.display(),
                f.label.display()
            ));
            continue;
        }
        if f.plate.is_some() && truth.len() != 1 {
            errors.push(format!(
                "{}: plate string not scored: the frame has {} labelled plates, not one",
                f.image.display(),
                truth.len()
            ));
        }
        let started = Instant::now();
        // Analysed as a camera's frame is: in I420.
        let analysed = I420Image::from_bgr(&img)
            .and_then(|frame| models.analyze(&frame, &[DetectKind::Plates], &analysis));
        let d = match analysed {
            Ok(d) => d,
            Err(e) => {
                errors.push(format!("{}: {e:#}", f.image.display()));
                continue;
            }
        };
        frame_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        detector_ms.push(d.timing.plate_detector_ms);
        if !d.plates.is_empty() {
            reader_ms.push(d.timing.plate_reader_ms / d.plates.len() as f64);
        }
        let o = Outcome::of(&d, &truth, f.plate.as_deref(), &analysis);
        scores.entry(f.category.clone()).or_default().add(&o);
        if f.category != "all" {
            scores.entry("all".into()).or_default().add(&o);
        }
        let name = file_name(&f.image);
        for (p, _) in d
            .plates
            .iter()
            .zip(&o.detections)
            .filter(|(_, (m, _))| m.is_none())
        {
            false_positives.push(json!({
                "image": name, "category": f.category,
                "bbox": p.bbox.map(|v| v.round()), "score": round_to(p.detector_score.into(), 2),
                "read": reading(p), "read_confidence": round_to(p.read_confidence.into(), 2),
            }));
        }
        if o.read_exactly() == Some(false) {
            let read: Vec<&str> = o.reads.iter().map(|(r, _)| r.as_str()).collect();
            misreads.push(
                json!({"image": name, "category": f.category, "truth": o.want, "read": read}),
            );
        }
    }
    Ok(json!({
        "set": dir.display().to_string(),
        "labels": labels.map(|l| l.display().to_string()),
        "models": super::model_ids(&models),
        "threshold": setup.threshold,
        "match_iou": MATCH_IOU,
        "frames": frame_ms.len(),
        "by_category": scores.iter().map(|(k, v)| (k.clone(), v.json())).collect::<serde_json::Map<_, _>>(),
        "timing_ms_one_core": {
            "plate_detector_per_frame": timing(detector_ms),
            "plate_reader_per_plate": timing(reader_ms),
            "detector_and_reader_per_frame": timing(frame_ms),
        },
        "misreads": misreads,
        "false_positives": false_positives,
        "problems": errors,
    }))
}

/// The frames to score: those the CSV names, else every image with a label.
fn list(dir: &Path, labels: Option<&Path>) -> anyhow::Result<Vec<Labelled>> {
    let (images, label_dir) = (dir.join("images"), dir.join("labels"));
    if !images.is_dir() || !label_dir.is_dir() {
        bail!(
            "{} must hold `images/` and `labels/` (YOLO text files named like the images)",
            dir.display()
        );
    }
    let frame = |name: &str, category: &str, plate: Option<String>| Labelled {
        image: images.join(name),
        label: label_dir.join(Path::new(name).with_extension("txt")),
        category: category.to_string(),
        plate,
    };
    let frames: Vec<Labelled> = match labels {
        Some(csv) => read_csv(csv)?
            .iter()
            .enumerate()
            .map(|(line, row)| {
                let name = column(row, &["image"]).with_context(|| {
                    format!("{} line {}: no `image` column", csv.display(), line + 2)
                })?;
                let plate = column(row, &["plate"])
                    .map(normalise)
                    .filter(|p| !p.is_empty());
                let category = column(row, &["category"]).filter(|c| !c.is_empty());
                Ok(frame(name, category.unwrap_or("all"), plate))
            })
            .collect::<anyhow::Result<_>>()?,
        None => {
            let mut names: Vec<String> = std::fs::read_dir(&images)
                .with_context(|| format!("cannot list {}", images.display()))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter(|n| {
                    let ext = Path::new(n).extension().and_then(|e| e.to_str());
                    ext.is_some_and(|e| {
                        ["jpg", "jpeg", "png"].contains(&e.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            names.sort();
            names.iter().map(|n| frame(n, "all", None)).collect()
        }
    };
    if frames.is_empty() {
        bail!("no labelled frames in {}", dir.display());
    }
    Ok(frames)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Pixel boxes from a YOLO label file (`class cx cy w h`, relative). A
/// frame with no plate has an empty or missing file.
fn yolo_boxes(path: &Path, width: u32, height: u32) -> anyhow::Result<Vec<BBox>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let (w, h) = (width as f32, height as f32);
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: Vec<f32> = l
                .split_whitespace()
                .skip(1)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()
                .filter(|v: &Vec<f32>| v.len() == 4)
                .with_context(|| {
                    format!(
                        "{} line {}: expected `class cx cy w h`, found `{l}`",
                        path.display(),
                        i + 1
                    )
                })?;
            let (cx, cy, bw, bh) = (v[0] * w, v[1] * h, v[2] * w, v[3] * h);
            Ok([cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0])
        })
        .collect()
}

/// For each detection, the labelled plate it matches (greedy by score; each
/// plate matched at most once), or None for a false positive.
fn match_boxes(detections: &[(BBox, f32)], truth: &[BBox]) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..detections.len()).collect();
    order.sort_by(|&a, &b| detections[b].1.total_cmp(&detections[a].1));
    let mut taken = vec![false; truth.len()];
    let mut matched = vec![None; detections.len()];
    for d in order {
        let best = (0..truth.len())
            .filter(|&t| !taken[t])
            .map(|t| (t, iou(&detections[d].0, &truth[t])))
            .filter(|&(_, o)| o >= MATCH_IOU)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((t, _)) = best {
            taken[t] = true;
            matched[d] = Some(t);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_matching_gives_each_plate_to_one_detection() {
        let truth = [[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 120.0, 110.0]];
        let detections = [
            ([1.0, 1.0, 11.0, 11.0], 0.6),   // plate 0, but second best
            ([0.0, 0.0, 10.0, 10.0], 0.9),   // plate 0, best
            ([50.0, 50.0, 60.0, 60.0], 0.8), // nothing there
            ([104.0, 100.0, 124.0, 110.0], 0.7),
        ];
        assert_eq!(
            match_boxes(&detections, &truth),
            vec![None, Some(0), None, Some(1)]
        );
    }

    #[test]
    fn yolo_labels_become_pixel_boxes_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.txt");
        std::fs::write(&good, "0 0.5 0.5 0.2 0.1\n\n").unwrap();
        assert_eq!(
            yolo_boxes(&good, 200, 100).unwrap(),
            vec![[80.0, 45.0, 120.0, 55.0]]
        );
        assert!(
            yolo_boxes(&dir.path().join("none.txt"), 200, 100)
                .unwrap()
                .is_empty()
        );
        let bad = dir.path().join("b.txt");
        std::fs::write(&bad, "0 0.5 0.5 wide\n").unwrap();
        let e = format!("{:#}", yolo_boxes(&bad, 200, 100).unwrap_err());
        assert!(
            e.contains("b.txt line 1") && e.contains("class cx cy w h"),
            "{e}"
        );
    }
}
