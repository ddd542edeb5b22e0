//! The reader alone, on upright plate crops with their true strings: a
//! folder with `images/` and a CSV (`image` and `plate_text`, `plate` or
//! `text_alnum`), as `vn_plate_crops_cctv` and `vn_plate_crops_ocr` are.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;

use super::{Ratio, Setup, agent_reading, column, edit_distance, normalise, read_csv, timing};
use crate::bench::round_to;
use crate::frame::BgrImage;

/// Two-line plates (motorbikes, some cars and trucks) are about 1.4:1,
/// one-line car plates about 4.7:1; between the two, by height over width.
const TWO_LINE_MIN_ASPECT: f32 = 0.45;

pub fn run(dir: &Path, truth: Option<&Path>, setup: &Setup) -> anyhow::Result<serde_json::Value> {
    let truth = truth.map_or_else(|| dir.join("truth.csv"), Path::to_path_buf);
    let rows = read_csv(&truth)?;
    if rows.is_empty() {
        bail!("{} lists no crops", truth.display());
    }
    let images = if dir.join("images").is_dir() {
        dir.join("images")
    } else {
        dir.to_path_buf()
    };
    let models = setup.load()?;
    let (mut exact, mut raw_exact) = (Ratio::default(), Ratio::default());
    let (mut one_line, mut two_line) = (Ratio::default(), Ratio::default());
    let mut confident_exact = Ratio::default();
    let read_threshold = setup.analysis().plate_read_threshold;
    let (mut chars_right, mut chars_total) = (0usize, 0usize);
    let (mut times, mut misreads, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (line, row) in rows.iter().enumerate() {
        let (Some(name), Some(text)) = (
            column(row, &["image"]),
            column(row, &["plate_text", "plate", "text_alnum"]),
        ) else {
            bail!(
                "{} line {}: needs the columns `image` and `plate_text` (or `plate`, `text_alnum`)",
                truth.display(),
                line + 2
            );
        };
        let want = normalise(text);
        if want.is_empty() {
            errors.push(format!(
                "{} line {}: `{name}` has no plate string",
                truth.display(),
                line + 2
            ));
            continue;
        }
        // A bad file or label is reported and left out; the rest still count.
        let crop = match BgrImage::open(&images.join(name)) {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        let started = Instant::now();
        let read = match models.reader.read_crop(&crop) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{}: {e:#}", images.join(name).display()));
                continue;
            }
        };
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let got = normalise(&agent_reading(
            &read.chars,
            &read.char_confidences,
            read.confidence,
        ));
        let hit = got == want;
        exact.add(hit);
        // As a one-crop track would be published: read confidently enough
        // to vote, else as an unreadable plate, whatever its text.
        confident_exact.add(hit && read.confidence >= read_threshold);
        raw_exact.add(normalise(&read.chars) == want);
        let two = crop.height as f32 / crop.width.max(1) as f32 >= TWO_LINE_MIN_ASPECT;
        if two { &mut two_line } else { &mut one_line }.add(hit);
        chars_total += want.chars().count();
        chars_right += want
            .chars()
            .count()
            .saturating_sub(edit_distance(&got, &want));
        if !hit {
            misreads.push(json!({"image": name, "truth": want, "read": got, "raw": read.chars}));
        }
    }
    Ok(json!({
        "set": truth.display().to_string(),
        "models": super::model_ids(&models),
        "crops": exact.of,
        "exact": exact.json(),
        "exact_raw_argmax": raw_exact.json(),
        "exact_and_confident": confident_exact.json(),
        "char_accuracy": (chars_total > 0).then(|| round_to(chars_right as f64 / chars_total as f64, 4)),
        "by_layout": {"two_line": two_line.json(), "one_line": one_line.json()},
        "reader_ms_per_crop": timing(times),
        "misreads": misreads,
        "problems": errors,
    }))
}
