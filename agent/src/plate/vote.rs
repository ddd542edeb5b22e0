//! Multi-frame voting: one plate reading per track from all the frames
//! that saw it.
//!
//! Single frames misread: a blurred 8 reads as B, a helmet hides a digit.
//! Each frame first votes for its own best grammatical reading (the
//! grammar turns an `O` where a digit must be into `0`); the frames' votes
//! are then tallied character by character, each weighted by the read's
//! confidence and the crop's sharpness. A frame whose read is valid only
//! by a guess (an unknown province code `13` taken for `18`) votes with
//! the guess's small certainty, shared among the guesses as likely as it
//! (`73`), so that a guess is never published as a sure reading and its
//! rivals stand as alternatives. The consensus, its grammatical
//! corrections and every frame's own readings are the candidates; a
//! candidate's support is the support of its weakest character (so a
//! reading that needs one character no frame saw gets none), and the best
//! supported valid reading wins. The runners-up are kept as alternatives
//! with their support, so the uncertainty is honest.

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
    let own: Vec<Vec<grammar::Candidate>> = observations
        .iter()
        .map(|o| grammar::correct(&o.chars, &o.char_confidences, CANDIDATES_PER_READ))
        .collect();
    let ballots: Vec<Vec<(&str, f32)>> = observations
        .iter()
        .zip(&own)
        .map(|(o, c)| ballot(&o.chars, c))
        .collect();
    // Each frame's own best reading: its top grammatical correction, or the raw read.
    let best_own: Vec<&str> = ballots.iter().map(|b| b[0].0).collect();
    let tally = Tally::new(&ballots, observations, &weights);

    let mut candidates: Vec<String> = Vec::new();
    let mut push = |c: &str| {
        if !candidates.iter().any(|x| x == c) {
            candidates.push(c.to_string());
        }
    };
    if let Some((consensus, shares)) = tally.consensus() {
        push(&consensus);
        for c in grammar::correct(&consensus, &shares, CANDIDATES_PER_READ) {
            push(&c.chars);
        }
    }
    for c in own.iter().flatten() {
        push(&c.chars);
    }
    for b in &best_own {
        push(b);
    }

    let mut scored: Vec<(String, f32, bool)> = candidates
        .into_iter()
        .map(|c| {
            let support = tally.support(&c);
            let valid = grammar::parse(&c).is_some();
            (c, support, valid)
        })
        .collect();
    // Valid readings first, then by support; among equals, one a frame
    // read over a blend of several, the longer (OCR drops characters more
    // often than it adds them), then by text for determinism.
    let read_by_a_frame = |c: &str| best_own.contains(&c);
    scored.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then(b.1.total_cmp(&a.1))
            .then_with(|| read_by_a_frame(&b.0).cmp(&read_by_a_frame(&a.0)))
            .then_with(|| b.0.chars().count().cmp(&a.0.chars().count()))
            .then_with(|| a.0.cmp(&b.0))
    });
    let (chars, support, _) = scored.first().cloned()?;
    let best_observation = (0..observations.len())
        .max_by(|&a, &b| {
            let score = |i: usize| {
                weights[i]
                    * if best_own[i] == chars {
                        1.0
                    } else {
                        0.5 * similarity(&chars, best_own[i])
                    }
            };
            score(a).total_cmp(&score(b))
        })
        .unwrap_or(0);
    Some(Vote {
        plate: grammar::parse(&chars),
        alternatives: scored[1..]
            .iter()
            .filter(|(_, s, valid)| *valid && *s > 0.0)
            .take(MAX_ALTERNATIVES)
            .map(|(c, s, _)| Alternative {
                chars: c.clone(),
                support: s.clamp(0.0, 1.0),
            })
            .collect(),
        // How sure the frames that read it were: one frame's read is never
        // "certain" just because nothing contradicts it.
        confidence: (support
            * agreeing_confidence(&chars, &best_own, observations, best_observation))
        .clamp(0.0, 1.0),
        chars,
        best_observation,
    })
}

/// Candidates within this factor of the best score are as likely as it.
const TIED: f32 = 0.99;

/// What one frame votes for, each reading with the share of the frame's
/// weight it takes: its best correction, or the raw read when none is
/// valid; a correction as likely as the best splits the frame's vote with
/// it, and a guessed one votes with its certainty only.
fn ballot<'a>(raw: &'a str, candidates: &'a [grammar::Candidate]) -> Vec<(&'a str, f32)> {
    let Some(top) = candidates.first() else {
        return vec![(raw, 1.0)];
    };
    let tied: Vec<&grammar::Candidate> = candidates
        .iter()
        .take_while(|c| c.score >= top.score * TIED)
        .collect();
    let share = 1.0 / tied.len() as f32;
    tied.into_iter()
        .map(|c| (c.chars.as_str(), c.certainty * share))
        .collect()
}

/// Mean read confidence of the frames whose own reading is `chars` (the
/// best frame's when none is).
fn agreeing_confidence(
    chars: &str,
    own: &[&str],
    observations: &[PlateObservation],
    best: usize,
) -> f32 {
    let agreeing: Vec<f32> = own
        .iter()
        .zip(observations)
        .filter(|(r, _)| **r == chars)
        .map(|(_, o)| o.read_confidence)
        .collect();
    if agreeing.is_empty() {
        observations[best].read_confidence
    } else {
        agreeing.iter().sum::<f32>() / agreeing.len() as f32
    }
}

/// Weighted character votes. Each frame votes with its weight for the
/// readings on its ballot, each with its share; the share a guess lost
/// votes for nothing. A reading of another length than the one asked
/// about (a character dropped or doubled) is aligned to it by edit
/// distance and votes where it aligns, so its other characters still
/// count, for and against. Frames that read the same string are summed
/// first: a plate in view for long is read the same way hundreds of
/// times.
struct Tally {
    readings: Vec<Reading>,
    /// length → whole weight of the frames that read that many characters.
    by_len: HashMap<usize, f32>,
    dominant: usize,
    total: f32,
}

/// One string some frames voted for, with per character the weight for
/// it and the whole weight of the frames whose first reading it was.
struct Reading {
    chars: Vec<char>,
    weight_for: Vec<f32>,
    whole: Vec<f32>,
}

/// Index pairs of `a` to `reading`: position by position at the same
/// length, else by edit distance.
fn pairs(a: &[char], reading: &[char]) -> Vec<(usize, usize)> {
    if a.len() == reading.len() {
        (0..a.len()).map(|i| (i, i)).collect()
    } else {
        align(a, reading)
    }
}

impl Tally {
    fn new(
        ballots: &[Vec<(&str, f32)>],
        observations: &[PlateObservation],
        weights: &[f32],
    ) -> Self {
        let mut readings: Vec<Reading> = Vec::new();
        let mut by_len: HashMap<usize, f32> = HashMap::new();
        for ((ballot, o), &w) in ballots.iter().zip(observations).zip(weights) {
            // The read's confidence in its `i`-th character.
            let prob = |i: usize| {
                o.char_confidences
                    .get(i)
                    .copied()
                    .unwrap_or(o.read_confidence)
                    .clamp(0.05, 1.0)
            };
            let ballot: Vec<(Vec<char>, f32)> = ballot
                .iter()
                .map(|&(r, share)| (r.chars().collect::<Vec<char>>(), share))
                .filter(|(r, _)| !r.is_empty())
                .collect();
            let Some(len) = ballot.first().map(|(r, _)| r.len()) else {
                continue;
            };
            *by_len.entry(len).or_default() += w;
            for (k, (chars, share)) in ballot.into_iter().enumerate() {
                let at = match readings.iter().position(|r| r.chars == chars) {
                    Some(at) => at,
                    None => {
                        readings.push(Reading {
                            weight_for: vec![0.0; chars.len()],
                            whole: vec![0.0; chars.len()],
                            chars,
                        });
                        readings.len() - 1
                    }
                };
                let r = &mut readings[at];
                for i in 0..r.chars.len() {
                    r.weight_for[i] += w * share * prob(i);
                    if k == 0 {
                        r.whole[i] += w * prob(i);
                    }
                }
            }
        }
        // On equal weight the longer length: OCR drops characters more
        // often than it adds them.
        let dominant = by_len
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(b.0)))
            .map_or(0, |(l, _)| *l);
        Self {
            readings,
            by_len,
            dominant,
            total: weights.iter().sum::<f32>().max(1e-6),
        }
    }

    /// Per position of `reading`, the weight behind each character, and
    /// the whole weight of the frames that put a character there; from
    /// the reads of its own length only, or from all.
    fn positions(&self, reading: &[char], all: bool) -> Vec<(HashMap<char, f32>, f32)> {
        let mut out = vec![(HashMap::new(), 0.0f32); reading.len()];
        for r in self
            .readings
            .iter()
            .filter(|r| all || r.chars.len() == reading.len())
        {
            for (i, j) in pairs(&r.chars, reading) {
                *out[j].0.entry(r.chars[i]).or_default() += r.weight_for[i];
                out[j].1 += r.whole[i];
            }
        }
        out
    }

    /// The per-position winner at the dominant length (reads of other
    /// lengths aligned to a first one made of that length's reads alone),
    /// with each position's share.
    fn consensus(&self) -> Option<(String, Vec<f32>)> {
        let (first, _) = self.winners(&vec!['\0'; self.dominant], false)?;
        self.winners(&first.chars().collect::<Vec<_>>(), true)
    }

    fn winners(&self, reference: &[char], all: bool) -> Option<(String, Vec<f32>)> {
        let mut out = String::new();
        let mut shares = Vec::new();
        for (t, _) in self.positions(reference, all) {
            let sum: f32 = t.values().sum::<f32>().max(1e-6);
            let (c, v) = t
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))?;
            out.push(*c);
            shares.push(v / sum);
        }
        Some((out, shares))
    }

    /// Share of all frames' weight that read the reading's length, times
    /// the share of its least supported character: the weight behind it
    /// against the whole weight of the frames that put a character there
    /// (a guess's lost share counts against it).
    fn support(&self, reading: &str) -> f32 {
        let chars: Vec<char> = reading.chars().collect();
        let Some(len_weight) = self.by_len.get(&chars.len()) else {
            return 0.0;
        };
        let weakest = chars
            .iter()
            .zip(self.positions(&chars, true))
            .map(|(c, (t, whole))| t.get(c).copied().unwrap_or(0.0) / whole.max(1e-6))
            .fold(1.0f32, f32::min);
        (len_weight / self.total).min(1.0) * weakest
    }
}

/// Edit-distance alignment of `a` to `b`: the (index in a, index in b)
/// pairs that match or substitute; insertions and deletions pair nothing.
fn align(a: &[char], b: &[char]) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0u32; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i as u32;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j as u32;
    }
    for i in 1..=n {
        for j in 1..=m {
            let sub = d[i - 1][j - 1] + u32::from(a[i - 1] != b[j - 1]);
            d[i][j] = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
        }
    }
    let (mut i, mut j) = (n, m);
    let mut pairs = Vec::new();
    while i > 0 && j > 0 {
        if d[i][j] == d[i - 1][j - 1] + u32::from(a[i - 1] != b[j - 1]) {
            pairs.push((i - 1, j - 1));
            i -= 1;
            j -= 1;
        } else if d[i][j] == d[i - 1][j] + 1 {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    pairs.reverse();
    pairs
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
        assert!(v.confidence > 0.5, "{v:?}");
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
            (v.confidence - 2.0 / 3.0 * 0.9).abs() < 0.01,
            "support 2/3 times the reads' confidence: {v:?}"
        );
        let alt = v
            .alternatives
            .iter()
            .find(|a| a.chars == "51A60218")
            .expect("runner-up kept");
        assert!((alt.support - 1.0 / 3.0).abs() < 0.01, "{alt:?}");
    }

    #[test]
    fn reads_missing_a_character_still_vote_for_the_others() {
        // The first character is contested between full-length reads; the
        // short reads (one digit dropped) settle it.
        let reads = [
            obs("61A85325", 0.9),
            obs("61A85325", 0.9),
            obs("51A85325", 0.9),
            obs("51A8325", 0.9),
            obs("51A8525", 0.9),
        ];
        assert_eq!(vote(&reads).unwrap().chars, "51A85325");
    }

    #[test]
    fn alignment_pairs_matches_and_substitutions() {
        let a: Vec<char> = "51A8325".chars().collect();
        let b: Vec<char> = "51A85325".chars().collect();
        let pairs = align(&a, &b);
        assert_eq!(pairs.len(), 7);
        assert!(pairs.contains(&(0, 0)) && pairs.contains(&(6, 7)));
    }

    #[test]
    fn a_reading_no_frame_saw_gets_no_support() {
        let reads = [
            obs("51A60216", 0.95),
            obs("51A60216", 0.95),
            obs("51A60216", 0.9),
        ];
        let v = vote(&reads).unwrap();
        assert!(
            (v.confidence - (0.95 + 0.95 + 0.9) / 3.0).abs() < 0.01,
            "{v:?}"
        );
        assert!(
            v.alternatives.is_empty(),
            "nothing else was read: {:?}",
            v.alternatives
        );
    }

    #[test]
    fn a_reading_valid_only_by_a_guess_is_never_sure() {
        // 91 is no province code; 97 is the only one a 1-for-7 swap
        // reaches, but a digit read as another is a guess.
        let v = vote(&[obs("91A12345", 0.9), obs("91A12345", 0.9)]).unwrap();
        assert_eq!(v.chars, "97A12345");
        assert!(v.confidence < 0.3, "a guess, not a reading: {v:?}");
        // 13 is no code either: 18 and 73 are equally near, and neither
        // is chosen as if sure; the other stands as an alternative.
        let v = vote(&[obs("13A12345", 0.9), obs("13A12345", 0.9)]).unwrap();
        let other = if v.chars == "18A12345" {
            "73A12345"
        } else {
            "18A12345"
        };
        assert!(
            ["18A12345", "73A12345"].contains(&v.chars.as_str()),
            "{v:?}"
        );
        assert!(v.confidence < 0.15, "{v:?}");
        assert!(
            v.alternatives.iter().any(|a| a.chars == other),
            "the equal guess is kept: {v:?}"
        );
        // A frame that reads the plate as it stands outweighs guesses.
        let v = vote(&[
            obs("13A12345", 0.9),
            obs("13A12345", 0.9),
            obs("73A12345", 0.9),
        ])
        .unwrap();
        assert_eq!(v.chars, "73A12345");
        // A change the grammar forces (O where a digit must stand) is no guess.
        let v = vote(&[obs("51A6O216", 0.9), obs("51A6O216", 0.9)]).unwrap();
        assert_eq!(v.chars, "51A60216");
        assert!((v.confidence - 0.9).abs() < 0.01, "{v:?}");
    }

    #[test]
    fn a_read_missing_a_character_does_not_count_for_the_full_length() {
        // One frame drops the last digit: a valid car plate, but no more
        // supported than the motorbike plate the other frame read whole.
        let v = vote(&[obs("59H143727", 0.9), obs("59H14372", 0.9)]).unwrap();
        assert_eq!(v.chars, "59H143727", "{v:?}");
        assert!(v.confidence < 0.5, "{v:?}");
        assert!(
            v.alternatives.iter().any(|a| a.chars == "59H14372"),
            "{v:?}"
        );
        // Slightly more confident short reads win, but only as a toss-up.
        let v = vote(&[
            obs("59X312345", 0.9),
            obs("59X312345", 0.9),
            obs("59X31234", 0.95),
            obs("59X31234", 0.95),
        ])
        .unwrap();
        assert!(v.confidence < 0.55, "{v:?}");
        let rival = if v.chars == "59X312345" {
            "59X31234"
        } else {
            "59X312345"
        };
        let alt = v.alternatives.iter().find(|a| a.chars == rival);
        assert!(alt.is_some_and(|a| a.support > 0.4), "{v:?}");
    }

    #[test]
    fn a_minority_of_short_reads_does_not_outvote_the_whole_ones() {
        // Two frames drop a character and misread another: the three that
        // read the whole plate count against their odd character too.
        let mut reads = vec![obs("59H143727", 0.9); 3];
        reads.extend([obs("59H14872", 0.9), obs("59H14872", 0.9)]);
        assert_eq!(vote(&reads).unwrap().chars, "59H143727");
        // Guessed provinces do not cost the whole reads their length.
        let mut reads = vec![obs("13H143727", 0.9); 5];
        reads.extend([obs("18H14372", 0.9), obs("18H14372", 0.9)]);
        assert_eq!(vote(&reads).unwrap().chars, "18H143727");
    }

    #[test]
    fn two_frames_that_disagree_give_a_reading_one_of_them_made() {
        // Position by position, the blend 51A60216 is as supported as
        // either read; no frame saw it.
        let v = vote(&[obs("51A60218", 0.9), obs("51A80216", 0.9)]).unwrap();
        assert!(
            ["51A60218", "51A80216"].contains(&v.chars.as_str()),
            "{v:?}"
        );
        assert!(v.confidence <= 0.5, "{v:?}");
    }

    #[test]
    fn unreadable_tracks_are_not_made_valid() {
        let v = vote(&[obs("ABC", 0.9), obs("ABC", 0.9)]).unwrap();
        assert!(v.plate.is_none());
        assert_eq!(v.chars, "ABC");
        assert!(vote(&[]).is_none());
    }
}
