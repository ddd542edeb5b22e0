//! Tracking: gives each object (a plate, a face, later a vehicle) a stable
//! id across the frames of one camera, so that one pass makes one event.
//!
//! ByteTrack-style association on Kalman-predicted boxes: confident
//! detections are matched first, then weak ones, which keep existing tracks
//! alive (a plate half hidden by a helmet still belongs to its motorbike)
//! before they start tracks of their own; a track survives `max_missed`
//! frames without a match before it ends. Plain data in and out, no I/O: tests drive it
//! with recorded boxes.
//!
//! Cameras are analysed at a few frames per second, so objects move far
//! between frames. Overlap is therefore measured on boxes enlarged around
//! their centres ("buffered IoU"), which still separates neighbours but
//! tolerates the jump. An object seen once has no speed yet, and at 2
//! frames a second a plate on a moving vehicle moves many times its own
//! height between frames: no overlap can follow it. What it reads can:
//! the caller says whether a detection looks like a track's object
//! ([`Likeness`], for a plate its characters), and a detection that looks
//! the same is followed as far as such an object moves in the time
//! between the frames ([`TrackerConfig::reach_same`]); one that cannot be
//! told apart only as far as a slower object moves, and only to a track
//! with no speed yet; one that looks different, never beyond overlap.

mod kalman;

use kalman::KalmanBox;

use std::time::Duration;

use crate::infer::BBox;
use crate::infer::geometry::iou;

pub type TrackId = u64;

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Detections at or above this match tracks first.
    pub high_score: f32,
    /// Minimum buffered IoU for a detection to continue a track.
    pub min_overlap: f32,
    /// Each side of a box grows by this fraction of its size before overlap is measured.
    pub buffer: f32,
    /// Frames a track may go unmatched before it ends.
    pub max_missed: u32,
    /// How far, in box heights a second, a detection that looks like a
    /// track's object may be from where the track was predicted: a plate
    /// on a vehicle driving past a camera moves tens of its heights a
    /// second in the image.
    pub reach_same: f32,
    /// The same for a detection that cannot be told apart from a track
    /// with no speed yet (seen once): a slower object's reach, so that
    /// neighbours stay apart.
    pub reach_unknown: f32,
}

/// Seconds a track lives on unmatched (an occlusion, a missed detection),
/// whatever the analysis rate.
const TRACK_MEMORY_SECONDS: f64 = 2.0;

impl TrackerConfig {
    /// The defaults for a camera analysed at `fps` frames a second.
    pub fn at_fps(fps: f64) -> Self {
        Self {
            max_missed: ((TRACK_MEMORY_SECONDS * fps).ceil() as u32).max(2),
            ..Self::default()
        }
    }
}

impl Default for TrackerConfig {
    /// At 2 analysed frames a second, the configuration's default.
    fn default() -> Self {
        Self {
            high_score: 0.6,
            min_overlap: 0.1,
            buffer: 0.5,
            max_missed: 4,
            reach_same: 40.0,
            reach_unknown: 8.0,
        }
    }
}

/// What a detection's content (a plate's characters) says about whether
/// it is a track's object, beyond where its box is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Likeness {
    Same,
    Unknown,
    Different,
}

#[derive(Debug)]
struct Track {
    id: TrackId,
    kalman: KalmanBox,
    missed: u32,
    /// Detections matched, the first included: from two on, the track
    /// has a speed and its prediction can be trusted.
    hits: u32,
    /// When it was last matched, on the tracker's clock (seconds).
    seen_at: f64,
}

/// What one frame did to the tracks.
#[derive(Debug, Default, PartialEq)]
pub struct FrameTracks {
    /// For each detection, in input order, the track it belongs to.
    pub assigned: Vec<TrackId>,
    /// Tracks that ended on this frame (missed too many frames).
    pub ended: Vec<TrackId>,
}

#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: TrackId,
    /// Seconds of the frames given so far.
    clock: f64,
}

fn buffered(b: &BBox, f: f32) -> BBox {
    let (dw, dh) = ((b[2] - b[0]) * f, (b[3] - b[1]) * f);
    [b[0] - dw, b[1] - dh, b[2] + dw, b[3] + dh]
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 1,
            clock: 0.0,
        }
    }

    pub fn live_tracks(&self) -> impl Iterator<Item = TrackId> + '_ {
        self.tracks.iter().map(|t| t.id)
    }

    /// Ends every track (shutdown, or the camera's stream ended).
    pub fn end_all(&mut self) -> Vec<TrackId> {
        self.tracks.drain(..).map(|t| t.id).collect()
    }

    /// Associates one frame's detections with the tracks, the frame
    /// `since_last` after the last one (an overloaded gateway analyses
    /// fewer frames than asked, and objects move further between them),
    /// `likeness(i, track)` saying whether detection `i` looks like that
    /// track's object.
    pub fn update_with(
        &mut self,
        detections: &[(BBox, f32)],
        since_last: Duration,
        likeness: impl Fn(usize, TrackId) -> Likeness,
    ) -> FrameTracks {
        self.clock += since_last.as_secs_f64();
        for t in &mut self.tracks {
            t.kalman.predict();
        }
        let mut assigned: Vec<Option<TrackId>> = vec![None; detections.len()];
        let mut matched = vec![false; self.tracks.len()];
        // A score that is not a number (a broken model) is weak: matched
        // after the confident ones, never left out of both groups.
        let high_score = self.config.high_score;
        let strong = |score: f32| score >= high_score;
        let (high, low): (Vec<usize>, Vec<usize>) =
            (0..detections.len()).partition(|&i| strong(detections[i].1));
        for group in [high, low] {
            self.associate(detections, &group, &likeness, &mut assigned, &mut matched);
        }
        // Unmatched detections start tracks, weak ones too: a vehicle far
        // away, seen only weakly, is still one vehicle over its frames. (As
        // one-frame tracks, each of its frames made a pass of its own, and
        // each misread an event.)
        for (i, (b, _)) in detections.iter().enumerate() {
            if assigned[i].is_none() {
                let id = self.next_id;
                self.next_id += 1;
                assigned[i] = Some(id);
                self.tracks.push(Track {
                    id,
                    kalman: KalmanBox::new(b),
                    missed: 0,
                    hits: 1,
                    seen_at: self.clock,
                });
                matched.push(true);
            }
        }
        let mut ended = Vec::new();
        let max_missed = self.config.max_missed;
        let mut keep = Vec::with_capacity(self.tracks.len());
        for (t, m) in self.tracks.drain(..).zip(matched) {
            let missed = if m { 0 } else { t.missed + 1 };
            if missed > max_missed {
                ended.push(t.id);
            } else {
                keep.push(Track { missed, ..t });
            }
        }
        self.tracks = keep;
        FrameTracks {
            assigned: assigned.into_iter().map(|a| a.expect("assigned")).collect(),
            ended,
        }
    }

    /// Greedy matching, best pairs first: a detection that looks like the
    /// track's object and is within its reach, then overlap (descending
    /// buffered IoU), then a detection that cannot be told apart within
    /// the slower reach of a track seen once. With the handful of objects
    /// a camera sees at once, greedy equals the Hungarian optimum in
    /// practice and is simpler to reason about.
    fn associate(
        &mut self,
        detections: &[(BBox, f32)],
        group: &[usize],
        likeness: &impl Fn(usize, TrackId) -> Likeness,
        assigned: &mut [Option<TrackId>],
        matched: &mut [bool],
    ) {
        let c = &self.config;
        // (rank, order within the rank: lower first, detection, track)
        let mut pairs = Vec::new();
        for &d in group {
            let det = &detections[d].0;
            let db = buffered(det, c.buffer);
            for (ti, t) in self.tracks.iter().enumerate() {
                if matched[ti] {
                    continue;
                }
                let predicted = t.kalman.bbox();
                let o = iou(&db, &buffered(&predicted, c.buffer));
                let like = likeness(d, t.id);
                // Seconds since the track was last matched.
                let elapsed = (self.clock - t.seen_at) as f32;
                let reach = match like {
                    Likeness::Same => c.reach_same * elapsed,
                    Likeness::Unknown if t.hits < 2 => c.reach_unknown * elapsed,
                    _ => 0.0,
                };
                let within = heights_apart(det, &predicted).filter(|&h| h <= reach);
                match within {
                    Some(h) if like == Likeness::Same => pairs.push((0, h, d, ti)),
                    _ if o >= c.min_overlap => pairs.push((1, -o, d, ti)),
                    Some(h) => pairs.push((2, h, d, ti)),
                    None => {}
                }
            }
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        for (_, _, d, ti) in pairs {
            if assigned[d].is_some() || matched[ti] {
                continue;
            }
            matched[ti] = true;
            let t = &mut self.tracks[ti];
            assigned[d] = Some(t.id);
            if t.hits == 1 {
                t.kalman.second(&detections[d].0, (t.missed + 1) as f32);
            } else {
                t.kalman.update(&detections[d].0);
            }
            t.hits += 1;
            t.seen_at = self.clock;
        }
    }
}

/// How far apart two boxes' centres are, in box heights (the larger of the
/// two), when their sizes are alike enough to be one object between two
/// frames; None when one is more than twice the other's height.
fn heights_apart(a: &BBox, b: &BBox) -> Option<f32> {
    let (ha, hb) = ((a[3] - a[1]).max(1e-3), (b[3] - b[1]).max(1e-3));
    if ha > 2.0 * hb || hb > 2.0 * ha {
        return None;
    }
    let dx = (a[0] + a[2] - b[0] - b[2]) / 2.0;
    let dy = (a[1] + a[3] - b[1] - b[3]) / 2.0;
    Some((dx * dx + dy * dy).sqrt() / ha.max(hb))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Between frames analysed twice a second.
    const HALF: Duration = Duration::from_millis(500);

    impl Tracker {
        /// Associates a frame's detections by their boxes alone, half a
        /// second after the last.
        fn update(&mut self, detections: &[(BBox, f32)]) -> FrameTracks {
            self.update_with(detections, HALF, |_, _| Likeness::Unknown)
        }
    }

    fn moving(x: f32, y: f32) -> BBox {
        [x, y, x + 60.0, y + 40.0]
    }

    #[test]
    fn two_objects_keep_their_ids_while_moving() {
        let mut t = Tracker::new(TrackerConfig::default());
        let mut ids = Vec::new();
        for step in 0..10 {
            let s = step as f32 * 25.0;
            let r = t.update(&[
                (moving(100.0 + s, 100.0), 0.9),
                (moving(600.0 - s, 300.0), 0.8),
            ]);
            ids.push(r.assigned);
            assert!(r.ended.is_empty());
        }
        assert!(ids.iter().all(|a| a == &ids[0]), "{ids:?}");
        assert_ne!(ids[0][0], ids[0][1]);
    }

    #[test]
    fn survives_short_occlusion_and_ends_after_max_missed() {
        let mut t = Tracker::new(TrackerConfig {
            max_missed: 3,
            ..Default::default()
        });
        let first = t.update(&[(moving(100.0, 100.0), 0.9)]).assigned[0];
        t.update(&[(moving(120.0, 100.0), 0.9)]);
        // Hidden for two frames.
        assert!(t.update(&[]).ended.is_empty());
        assert!(t.update(&[]).ended.is_empty());
        let back = t.update(&[(moving(180.0, 100.0), 0.9)]);
        assert_eq!(back.assigned, vec![first], "same object after occlusion");
        for _ in 0..3 {
            assert!(t.update(&[]).ended.is_empty());
        }
        assert_eq!(t.update(&[]).ended, vec![first]);
        assert_eq!(t.live_tracks().count(), 0);
    }

    #[test]
    fn weak_detections_continue_tracks_and_start_their_own() {
        let mut t = Tracker::new(TrackerConfig::default());
        let id = t.update(&[(moving(100.0, 100.0), 0.9)]).assigned[0];
        // Weak detection of the same object: continues the track.
        assert_eq!(t.update(&[(moving(110.0, 100.0), 0.3)]).assigned, vec![id]);
        // Weak detection far away: a track of its own, which it keeps.
        let r = t.update(&[(moving(110.0, 100.0), 0.9), (moving(900.0, 900.0), 0.3)]);
        assert_eq!(r.assigned[0], id);
        let far = r.assigned[1];
        assert_ne!(far, id);
        assert!(r.ended.is_empty());
        let r = t.update(&[(moving(110.0, 100.0), 0.9), (moving(905.0, 900.0), 0.35)]);
        assert_eq!(r.assigned, vec![id, far]);
        // A score that is not a number matches after the others, never first.
        let r = t.update(&[
            (moving(110.0, 100.0), f32::NAN),
            (moving(112.0, 100.0), 0.9),
        ]);
        assert_eq!(r.assigned[1], id);
    }

    #[test]
    fn a_new_object_far_away_gets_a_new_id() {
        let mut t = Tracker::new(TrackerConfig::default());
        let a = t.update(&[(moving(100.0, 100.0), 0.9)]).assigned[0];
        let r = t.update(&[(moving(105.0, 100.0), 0.9), (moving(800.0, 500.0), 0.9)]);
        assert_eq!(r.assigned[0], a);
        assert_ne!(r.assigned[1], a);
    }

    /// A 120x30 plate (a car's) at `y`.
    fn plate_at(x: f32, y: f32) -> BBox {
        [x, y, x + 120.0, y + 30.0]
    }

    #[test]
    fn a_plate_driving_past_at_two_frames_a_second_keeps_its_id_by_what_it_reads() {
        // 150 px a frame, five of its heights: no overlap follows it.
        let same = |_: usize, _: TrackId| Likeness::Same;
        let mut t = Tracker::new(TrackerConfig::at_fps(2.0));
        let ids: Vec<TrackId> = (0..6)
            .map(|i| {
                t.update_with(
                    &[(plate_at(400.0, 100.0 + 150.0 * i as f32), 0.9)],
                    HALF,
                    same,
                )
                .assigned[0]
            })
            .collect();
        assert!(ids.iter().all(|&id| id == ids[0]), "{ids:?}");
        // Unread, the same plate is followed while it moves no faster
        // than a slower object (100 px, 3.3 heights a frame) until the
        // track has a speed, and then by its prediction.
        let mut t = Tracker::new(TrackerConfig::at_fps(2.0));
        let ids: Vec<TrackId> = (0..6)
            .map(|i| {
                t.update(&[(plate_at(400.0, 100.0 + 100.0 * i as f32), 0.9)])
                    .assigned[0]
            })
            .collect();
        assert!(ids.iter().all(|&id| id == ids[0]), "{ids:?}");
        // Reading otherwise, it is not followed beyond overlap.
        let mut t = Tracker::new(TrackerConfig::at_fps(2.0));
        let first = t.update(&[(plate_at(400.0, 100.0), 0.9)]).assigned[0];
        let other = |_: usize, _: TrackId| Likeness::Different;
        let next = t
            .update_with(&[(plate_at(400.0, 200.0), 0.9)], HALF, other)
            .assigned[0];
        assert_ne!(next, first);
    }

    #[test]
    fn the_reach_is_the_time_between_the_frames_analysed_not_the_rate_asked() {
        // Asked for 5 frames a second, an overloaded gateway analyses one:
        // the plate moves 400 px, 13 heights, between them.
        let same = |_: usize, _: TrackId| Likeness::Same;
        let mut t = Tracker::new(TrackerConfig::at_fps(5.0));
        let second = Duration::from_secs(1);
        let ids: Vec<TrackId> = (0..3)
            .map(|i| {
                t.update_with(
                    &[(plate_at(400.0, 100.0 + 400.0 * i as f32), 0.9)],
                    second,
                    same,
                )
                .assigned[0]
            })
            .collect();
        assert!(ids.iter().all(|&id| id == ids[0]), "{ids:?}");
    }

    #[test]
    fn two_vehicles_one_behind_the_other_in_a_lane_keep_their_own_ids() {
        // Plate A drives down the lane at 90 px a frame; plate B follows
        // the same path two frames later. Each reads as itself.
        let mut t = Tracker::new(TrackerConfig::at_fps(2.0));
        let mut owner: std::collections::HashMap<TrackId, char> = Default::default();
        let mut seen: Vec<Vec<(char, TrackId)>> = Vec::new();
        for frame in 0..8 {
            let mut dets = Vec::new();
            let mut who = Vec::new();
            for (name, start) in [('A', 0), ('B', 2)] {
                let step = frame - start;
                if (0..6).contains(&step) {
                    dets.push((plate_at(400.0, 100.0 + 90.0 * step as f32), 0.9));
                    who.push(name);
                }
            }
            let like = |i: usize, id: TrackId| match owner.get(&id) {
                Some(&o) if o == who[i] => Likeness::Same,
                Some(_) => Likeness::Different,
                None => Likeness::Unknown,
            };
            let r = t.update_with(&dets, HALF, like);
            for (&name, &id) in who.iter().zip(&r.assigned) {
                owner.entry(id).or_insert(name);
            }
            seen.push(who.iter().copied().zip(r.assigned).collect());
        }
        for name in ['A', 'B'] {
            let ids: std::collections::BTreeSet<TrackId> = seen
                .iter()
                .flatten()
                .filter(|(n, _)| *n == name)
                .map(|(_, id)| *id)
                .collect();
            assert_eq!(ids.len(), 1, "{name}: {seen:?}");
        }
        assert!(
            owner.values().filter(|&&o| o == 'A').count() == 1,
            "{seen:?}"
        );
    }

    #[test]
    fn a_track_lives_two_seconds_unmatched_at_any_rate() {
        assert_eq!(TrackerConfig::at_fps(2.0).max_missed, 4);
        assert_eq!(TrackerConfig::at_fps(25.0).max_missed, 50);
        assert_eq!(TrackerConfig::at_fps(0.5).max_missed, 2);
    }

    #[test]
    fn end_all_flushes_live_tracks() {
        let mut t = Tracker::new(TrackerConfig::default());
        let r = t.update(&[(moving(0.0, 0.0), 0.9), (moving(500.0, 0.0), 0.9)]);
        let mut ended = t.end_all();
        ended.sort();
        assert_eq!(ended, r.assigned);
    }
}
