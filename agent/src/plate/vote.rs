//! Multi-frame voting: one plate reading per track from all the frames
//! that saw it.
//!
//! Single frames misread: a blurred 8 reads as B, a helmet hides a digit.
//! Voting works in two steps. First a character-by-character consensus
//! over the reads of the most common length, each read weighted by its
//! confidence and the crop's sharpness. Then every reading the grammar
//! allows (the consensus and each frame's own corrections) is scored by
//! how well all the frames support it, with confusable characters (0/O/D,
//! 8/B, …) counting as half a disagreement. The best valid reading wins;
//! the runners-up are kept as alternatives, so the uncertainty is honest.

use std::collections::HashMap;

use super::grammar::{self, Plate};

/// One frame's read of the plate.
#[derive(Debug, Clone)]
pub struct PlateObservation {
    pub chars: String,
    pub char_confidences: Vec<f32>,
    pub read_confidence: f32,
    pub sharpness: f32,
}

impl PlateObservation {
    /// Confidence times a focus factor that saturates: a crop twice as
    /// sharp as "readable" counts little more than a readable one.
    pub fn weight(&self) -> f32 {
        const READABLE_SHARPNESS: f32 = 100.0;
        self.read_confidence.clamp(0.0, 1.0)
            * (self.sharpness / (self.sharpness + READABLE_SHARPNESS)).clamp(0.05, 1.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    pub chars: String,
    pub support: f32,
}

#[derive(Debug, Clone)]
pub struct Vote {
    /// The reading: valid under the grammar when `plate` is Some.
    pub chars: String,
    pub plate: Option<Plate>,
    /// Share of the frames' total weight that supports the reading (0..1).
    pub confidence: f32,
    /// Other valid readings, best first, with their support.
    pub alternatives: Vec<Alternative>,
    /// Index of the observation that best shows the reading.
    pub best_observation: usize,
}

/// How many corrected readings each frame contributes.
const CANDIDATES_PER_READ: usize = 3;
pub const MAX_ALTERNATIVES: usize = 3;

pub fn vote(observations: &[PlateObservation]) -> Option<Vote> {
    if observations.is_empty() {
        return None;
    }
    let weights: Vec<f32> = observations.iter().map(PlateObservation::weight).collect();
    let total: f32 = weights.iter().sum::<f32>().max(1e-6);

    let consensus = consensus(observations, &weights);
    let mut candidates: Vec<String> = Vec::new();
    let mut push = |c: String| {
        if !candidates.contains(&c) {
            candidates.push(c);
        }
    };
    if let Some((chars, shares)) = &consensus {
        for c in grammar::correct(chars, shares, CANDIDATES_PER_READ) {
            push(c.chars);
        }
    }
    for o in observations {
        for c in grammar::correct(&o.chars, &o.char_confidences, CANDIDATES_PER_READ) {
            push(c.chars);
        }
    }

    let mut scored: Vec<(String, f32)> = candidates
        .into_iter()
        .map(|c| {
            let support: f32 = observations
                .iter()
                .zip(&weights)
                .map(|(o, w)| w * similarity(&c, &o.chars))
                .sum();
            (c, support / total)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let best_of = |chars: &str| {
        (0..observations.len())
            .max_by(|&a, &b| {
                (weights[a] * similarity(chars, &observations[a].chars))
                    .total_cmp(&(weights[b] * similarity(chars, &observations[b].chars)))
            })
            .unwrap_or(0)
    };
    match scored.first() {
        Some((chars, support)) => Some(Vote {
            plate: grammar::parse(chars),
            chars: chars.clone(),
            confidence: support.clamp(0.0, 1.0),
            alternatives: scored[1..]
                .iter()
                .take(MAX_ALTERNATIVES)
                .map(|(c, s)| Alternative {
                    chars: c.clone(),
                    support: s.clamp(0.0, 1.0),
                })
                .collect(),
            best_observation: best_of(chars),
        }),
        None => {
            // Nothing valid: report the consensus as it is, never a guess.
            let chars = consensus
                .map(|(c, _)| c)
                .unwrap_or_else(|| observations[0].chars.clone());
            Some(Vote {
                best_observation: best_of(&chars),
                confidence: observations
                    .iter()
                    .zip(&weights)
                    .map(|(o, w)| w * similarity(&chars, &o.chars))
                    .sum::<f32>()
                    / total,
                chars,
                plate: None,
                alternatives: Vec::new(),
            })
        }
    }
}

/// Character-by-character weighted vote over the reads of the length with
/// the most weight. Returns the string and each position's winning share.
fn consensus(observations: &[PlateObservation], weights: &[f32]) -> Option<(String, Vec<f32>)> {
    let mut by_len: HashMap<usize, f32> = HashMap::new();
    for (o, w) in observations.iter().zip(weights) {
        *by_len.entry(o.chars.chars().count()).or_default() += w;
    }
    let (&len, _) = by_len
        .iter()
        .filter(|(l, _)| **l > 0)
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))?;
    let mut tallies: Vec<HashMap<char, f32>> = vec![HashMap::new(); len];
    for (o, w) in observations.iter().zip(weights) {
        let chars: Vec<char> = o.chars.chars().collect();
        if chars.len() != len {
            continue;
        }
        for (i, c) in chars.into_iter().enumerate() {
            let p = o
                .char_confidences
                .get(i)
                .copied()
                .unwrap_or(o.read_confidence)
                .clamp(0.0, 1.0);
            *tallies[i].entry(c).or_default() += w * p.max(0.05);
        }
    }
    let mut out = String::new();
    let mut shares = Vec::new();
    for t in tallies {
        let sum: f32 = t.values().sum::<f32>().max(1e-6);
        let (c, v) = t
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
        out.push(c);
        shares.push(v / sum);
    }
    Some((out, shares))
}

/// Pairs an OCR model confuses; a confusion is half a mismatch.
fn confusable(a: char, b: char) -> bool {
    const PAIRS: &[(char, char)] = &[
        ('0', 'O'),
        ('0', 'D'),
        ('O', 'D'),
        ('0', 'Q'),
        ('1', 'I'),
        ('1', 'T'),
        ('1', '7'),
        ('2', 'Z'),
        ('5', 'S'),
        ('6', 'G'),
        ('8', 'B'),
        ('8', '3'),
        ('4', 'A'),
        ('D', 'Đ'),
        ('0', 'Đ'),
    ];
    PAIRS
        .iter()
        .any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
}

/// 1 − (weighted edit distance / length): 1 for the same string, 0 for
/// nothing in common.
pub fn similarity(a: &str, b: &str) -> f32 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let n = a.len().max(b.len());
    if n == 0 {
        return 1.0;
    }
    let mut prev: Vec<f32> = (0..=b.len()).map(|j| j as f32).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i as f32; b.len() + 1];
        for j in 1..=b.len() {
            let sub = if a[i - 1] == b[j - 1] {
                0.0
            } else if confusable(a[i - 1], b[j - 1]) {
                0.5
            } else {
                1.0
            };
            cur[j] = (prev[j - 1] + sub).min(prev[j] + 1.0).min(cur[j - 1] + 1.0);
        }
        prev = cur;
    }
    (1.0 - prev[b.len()] / n as f32).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(chars: &str, conf: f32) -> PlateObservation {
        PlateObservation {
            chars: chars.into(),
            char_confidences: vec![conf; chars.chars().count()],
            read_confidence: conf,
            sharpness: 200.0,
        }
    }

    #[test]
    fn similarity_counts_confusions_as_half() {
        assert_eq!(similarity("51A60216", "51A60216"), 1.0);
        assert_eq!(similarity("51A60216", "51A6O216"), 1.0 - 0.5 / 8.0);
        assert_eq!(similarity("51A60216", "51A60217"), 1.0 - 1.0 / 8.0);
        assert_eq!(similarity("51A60216", "51A6021"), 1.0 - 1.0 / 8.0);
        assert_eq!(similarity("", ""), 1.0);
    }

    #[test]
    fn voting_recovers_the_plate_no_single_majority_read_has() {
        // Five frames, only one read exactly right; each error at a different place.
        let reads = [
            obs("5IA60216", 0.8),
            obs("51A6O216", 0.8),
            obs("51A60Z16", 0.7),
            obs("51A60216", 0.6),
            obs("51A8021G", 0.7),
        ];
        let v = vote(&reads).unwrap();
        assert_eq!(v.chars, "51A60216");
        assert!(v.plate.is_some());
        assert!(v.confidence > 0.7, "{v:?}");
    }

    #[test]
    fn sharp_confident_frames_outvote_blurred_ones() {
        let mut blurred = obs("51A80216", 0.9);
        blurred.sharpness = 5.0;
        let reads = [
            blurred.clone(),
            blurred.clone(),
            blurred,
            obs("51A60216", 0.9),
        ];
        assert_eq!(vote(&reads).unwrap().chars, "51A60216");
    }

    #[test]
    fn ambiguity_is_reported_as_alternatives() {
        let reads = [
            obs("51A60216", 0.9),
            obs("51A60216", 0.9),
            obs("51A60218", 0.9),
        ];
        let v = vote(&reads).unwrap();
        assert_eq!(v.chars, "51A60216");
        assert!(
            v.alternatives.iter().any(|a| a.chars == "51A60218"),
            "{:?}",
            v.alternatives
        );
        assert!(v.confidence < 1.0);
    }

    #[test]
    fn unreadable_tracks_are_not_made_valid() {
        let v = vote(&[obs("ABC", 0.9), obs("ABC", 0.9)]).unwrap();
        assert!(v.plate.is_none());
        assert_eq!(v.chars, "ABC");
        assert!(vote(&[]).is_none());
    }
}
