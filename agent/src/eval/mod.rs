//! `matthan eval`: how well the agent finds and reads plates, scored with
//! the agent's own code (the same models, pre-processing, rectification,
//! grammar and single-frame reading) on labelled data, and how long each
//! stage takes on one core. Prints one JSON object; asserts nothing.
//!
//! - [`crops`]: plate crops with their true strings (the reader alone).
//! - [`frames`]: whole frames with YOLO boxes and, where a person could
//!   read it, the plate string (the detector, then detector and reader).
//! - [`clip`]: a video and the plates a person reads in it.

pub mod clip;
pub mod crops;
pub mod frames;

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::bench::round_to;
use crate::config::{Analysis, Models as ModelsConfig};
use crate::infer::{Models, PlateRead};
use crate::plate::vote::{PlateObservation, vote};

/// The models and threshold an evaluation runs with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub models: ModelsConfig,
    /// Plate detector confidence threshold (the agent's default unless set).
    pub threshold: f32,
}

impl Setup {
    /// The models on one ONNX Runtime thread, as a camera runs them.
    fn load(&self) -> anyhow::Result<Models> {
        Models::load(&ModelsConfig {
            threads: 1,
            ..self.models.clone()
        })
    }

    fn analysis(&self) -> Analysis {
        Analysis {
            plate_threshold: self.threshold,
            ..Analysis::default()
        }
    }
}

/// The plate models an evaluation used, named with their sha256, so a
/// figure can always be traced to its weights.
fn model_ids(models: &Models) -> serde_json::Value {
    let ids: Vec<_> = models
        .ids
        .iter()
        .filter(|m| m.role != "face_detector")
        .collect();
    serde_json::to_value(ids).unwrap_or_default()
}

/// What the agent makes of one read: its best valid reading under the plate
/// grammar, or the raw characters when none is valid (as a track of one
/// frame would be published).
pub fn agent_reading(chars: &str, char_confidences: &[f32], read_confidence: f32) -> String {
    vote(&[PlateObservation {
        chars: chars.to_string(),
        char_confidences: char_confidences.to_vec(),
        read_confidence,
        sharpness: 100.0,
    }])
    .map_or_else(|| chars.to_string(), |v| v.chars)
}

/// [`agent_reading`] of a plate found in a frame.
fn reading(p: &PlateRead) -> String {
    agent_reading(&p.chars, &p.char_confidences, p.read_confidence)
}

/// A plate string as the labels write it: upper case, no separators, and
/// `Đ` as `D` (the reader's alphabet has no `Đ`; the grammar restores it
/// only where the plate's shape demands it).
pub fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .map(|c| if c == 'Đ' { 'D' } else { c })
        .collect()
}

/// Hits out of a count, with their ratio (null when nothing was counted).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Ratio {
    pub hits: usize,
    pub of: usize,
}

impl Ratio {
    pub fn add(&mut self, hit: bool) {
        self.of += 1;
        self.hits += usize::from(hit);
    }

    pub fn value(&self) -> Option<f64> {
        (self.of > 0).then(|| round_to(self.hits as f64 / self.of as f64, 4))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"hits": self.hits, "of": self.of, "rate": self.value()})
    }
}

/// Median and 90th percentile of stage times, in milliseconds.
fn timing(mut ms: Vec<f64>) -> serde_json::Value {
    if ms.is_empty() {
        return serde_json::Value::Null;
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| round_to(ms[((ms.len() - 1) as f64 * q).round() as usize], 2);
    serde_json::json!({"p50": at(0.5), "p90": at(0.9), "n": ms.len()})
}

/// Levenshtein distance between two strings, in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A CSV file with a header row, as one map per row. The error names the
/// file and the line.
fn read_csv(path: &Path) -> anyhow::Result<Vec<HashMap<String, String>>> {
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("cannot read the label file {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: no header row", path.display()))?
        .clone();
    reader
        .records()
        .map(|r| {
            let r = r.with_context(|| format!("{}: malformed CSV", path.display()))?;
            Ok(header
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.trim().to_string(), v.trim().to_string()))
                .collect())
        })
        .collect()
}

/// The value of the first of `names` that the row has.
fn column<'a>(row: &'a HashMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| row.get(*n)).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_substitutions_insertions_deletions() {
        assert_eq!(edit_distance("77L243140", "77L243140"), 0);
        assert_eq!(edit_distance("77L243140", "27L243140"), 1);
        assert_eq!(edit_distance("77L239826", "77LZ39826"), 1);
        assert_eq!(edit_distance("77L1938344", "77L192844"), 2);
        assert_eq!(edit_distance("", "59KA"), 4);
    }

    #[test]
    fn normalise_matches_label_spelling() {
        assert_eq!(normalise("59-KA 191.66"), "59KA19166");
        assert_eq!(normalise("80-ĐK 123.45"), "80DK12345");
        assert_eq!(normalise("mđ"), "MD");
    }

    #[test]
    fn agent_reading_applies_the_grammar() {
        // An O where the serial needs a digit is read as 0, as the agent publishes it.
        let chars = "59KA1916O";
        let conf = vec![0.9; chars.len()];
        assert_eq!(agent_reading(chars, &conf, 0.9), "59KA19160");
        // Not a plate at all: the raw characters stay.
        assert_eq!(agent_reading("XYZ", &[0.9; 3], 0.9), "XYZ");
    }

    #[test]
    fn ratio_is_null_when_nothing_counted() {
        let mut r = Ratio::default();
        assert_eq!(r.value(), None);
        r.add(true);
        r.add(false);
        r.add(true);
        assert_eq!(r.value(), Some(0.6667));
    }
}
