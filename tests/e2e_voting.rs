//! Voting beats the best single frame: a clip made at test time from one
//! real car frame, each second perturbed differently (noise, blur, one
//! character covered), read by the real agent end to end.

mod support;

use std::time::Duration;

use image::{Rgb, RgbImage};
use support::*;

const FRAME: &str = "3e4fefb8-38696"; // silver Toyota, "51A-853.25"
const PLATE: &str = "51A85325";

/// A small deterministic generator, so the clip is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as f32) / (1u64 << 31) as f32
    }
}

/// Covers glyph `slot` of the 10 slots of a one-line plate ("51A-853.25":
/// 8 characters, the dash and the dot) with road dirt.
fn cover(img: &mut RgbImage, plate: [f32; 4], slot: usize) {
    // The labelled box includes the plate's border; the text runs over
    // about the middle 88% of it.
    let (left, right) = (
        plate[0] + 0.07 * (plate[2] - plate[0]),
        plate[2] - 0.05 * (plate[2] - plate[0]),
    );
    let w = (right - left) / 10.0;
    let x0 = (left + w * slot as f32) as u32;
    for y in (plate[1] + (plate[3] - plate[1]) * 0.15) as u32
        ..(plate[3] - (plate[3] - plate[1]) * 0.1) as u32
    {
        for x in x0..x0 + w.ceil() as u32 {
            img.put_pixel(x, y, Rgb([70, 66, 60]));
        }
    }
}

#[test]
fn voting_recovers_the_plate_single_frames_get_wrong() {
    let dir = shared().join("data/vn_plate_detect_extra/dungnt_parking_gate");
    let original = image::open(dir.join(format!("images/{FRAME}.jpg")))
        .unwrap()
        .to_rgb8();
    let label = std::fs::read_to_string(dir.join(format!("labels/{FRAME}.txt"))).unwrap();
    let v: Vec<f32> = label
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let (w, h) = (original.width() as f32, original.height() as f32);
    let plate = [
        (v[0] - v[2] / 2.0) * w,
        (v[1] - v[3] / 2.0) * h,
        (v[0] + v[2] / 2.0) * w,
        (v[1] + v[3] / 2.0) * h,
    ];

    // Every second, one glyph slot is covered: each character is hidden in
    // one or two of the ten seconds, never in most of them.
    let covered: [usize; 10] = [0, 1, 9, 2, 4, 0, 5, 6, 8, 9];
    let work = tempfile::tempdir().unwrap();
    let mut rng = Lcg(7);
    let mut frames = Vec::new();
    for (i, slot) in covered.iter().enumerate() {
        let mut img = original.clone();
        cover(&mut img, plate, *slot);
        for p in img.pixels_mut() {
            for c in p.0.iter_mut() {
                let noise = (rng.next() - 0.5) * 16.0;
                *c = (*c as f32 + noise).clamp(0.0, 255.0) as u8;
            }
        }
        let img = image::imageops::blur(&img, 0.4 + 0.3 * (i % 3) as f32);
        let path = work.path().join(format!("frame{i:02}.jpg"));
        img.save(&path).unwrap();
        frames.push(path);
    }

    // What single frames read.
    let single: Vec<String> = detect_plates(&frames)
        .into_iter()
        .map(|reads| reads.into_iter().next().unwrap_or_default())
        .collect();
    let right = single.iter().filter(|c| *c == PLATE).count();
    assert!(
        right * 2 <= single.len(),
        "the perturbation must defeat at least half of the single frames: {single:?}"
    );

    // What the agent reports for the whole pass.
    let clip = work.path().join("perturbed.mp4");
    clip_from_images(&frames, 1, &clip);
    let jsonl = work.path().join("events.jsonl");
    let mut agent = Agent::start(&format!(
        r#"
[site]
id = "s"
[analysis]
fps = 2
[events]
max_delay_seconds = 60
[models]
dir = "{models}"
[[camera]]
id = "gate"
source = "file://{clip}"
realtime = false
detect = ["plates"]
[outputs.jsonl]
path = "{jsonl}"
"#,
        models = models_dir().display(),
        clip = clip.display(),
        jsonl = jsonl.display(),
    ));
    let status = agent.process.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "{}", agent.log_text());
    let events = read_jsonl(&jsonl);
    let plates: Vec<_> = events.iter().filter(|e| e["kind"] == "plate").collect();
    assert_eq!(plates.len(), 1, "one pass, one event: {events:#?}");
    assert_eq!(
        plates[0]["plate"]["chars"], PLATE,
        "single frames read {single:?}; event {:#}",
        plates[0]
    );
    assert!(plates[0]["plate"]["track"]["frames"].as_u64().unwrap() >= 10);
    eprintln!(
        "single frames: {single:?} ({right} of {} right); voted: {}",
        single.len(),
        plates[0]["plate"]["chars"]
    );
}
