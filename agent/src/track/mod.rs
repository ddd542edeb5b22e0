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
//!
//! A parked object flickers: a far plate the detector finds on some frames
//! only, a plate behind people walking past. Ended after two seconds
//! unseen, each return would start a new track, and each track an event.
//! So a track that has stayed in place for [`TrackerConfig::parked_after`]
//! is *parked*, and lives on unseen for [`TrackerConfig::parked_memory`],
//! continued only by a detection in its place (or one that reads as its
//! object), never by one that reads as another.

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
    /// Seconds in one place after which a track is parked.
    pub parked_after: f64,
    /// Seconds a parked track lives on unseen; zero: as any other track.
    pub parked_memory: f64,
}

/// Seconds a track lives on unmatched (an occlusion, a missed detection),
/// whatever the analysis rate.
const TRACK_MEMORY_SECONDS: f64 = 2.0;

/// A box overlapping the box where a track came to rest this much is the
/// object still in its place (a detector's boxes of one still object
/// overlap by 0.8 and more).
const IN_PLACE_IOU: f32 = 0.5;

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
            // Longer than a blur or a pedestrian passing; shorter than a
            // queue at a red light moving off and the next vehicle
            // stopping in the same place.
            parked_after: 5.0,
            parked_memory: 20.0,
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
    /// Where it came to rest, and when (it moves on: a new rest).
    rest: BBox,
    rest_since: f64,
}

impl Track {
    fn new(id: TrackId, b: &BBox, clock: f64) -> Self {
        Self {
            id,
            kalman: KalmanBox::new(b),
            missed: 0,
            hits: 1,
            seen_at: clock,
            rest: *b,
            rest_since: clock,
        }
    }

    /// Whether it was seen in one place for `parked_after`.
    fn parked(&self, c: &TrackerConfig) -> bool {
        c.parked_memory > 0.0 && self.seen_at - self.rest_since >= c.parked_after
    }

    /// Whether it is parked and unseen for longer than any other track
    /// would live: only its own object, in its place, may continue it.
    fn lingering(&self, c: &TrackerConfig) -> bool {
        self.missed > c.max_missed && self.parked(c)
    }

    fn ends(&self, c: &TrackerConfig, clock: f64) -> bool {
        self.missed > c.max_missed && !(self.parked(c) && clock - self.seen_at <= c.parked_memory)
    }

    fn matched(&mut self, b: &BBox, clock: f64, c: &TrackerConfig) {
        if self.lingering(c) {
            // Its prediction has run on for many frames unseen: still, it
            // starts again where it is.
            self.kalman = KalmanBox::new(b);
        } else if self.hits == 1 {
            self.kalman.second(b, (self.missed + 1) as f32);
        } else {
            self.kalman.update(b);
        }
        self.hits += 1;
        self.seen_at = clock;
        if iou(b, &self.rest) < IN_PLACE_IOU {
            self.rest = *b;
            self.rest_since = clock;
        }
    }
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
                self.tracks.push(Track::new(id, b, self.clock));
                matched.push(true);
            }
        }
        let mut ended = Vec::new();
        let mut keep = Vec::with_capacity(self.tracks.len());
        for (t, m) in self.tracks.drain(..).zip(matched) {
            let t = Track {
                missed: if m { 0 } else { t.missed + 1 },
                ..t
            };
            if t.ends(&self.config, self.clock) {
                ended.push(t.id);
            } else {
                keep.push(t);
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
                let like = likeness(d, t.id);
                if t.lingering(c) {
                    // In its place, or reading as its object anywhere;
                    // never one that reads as another.
                    let o = iou(det, &t.rest);
                    match like {
                        Likeness::Same => pairs.push((0, 0.0, d, ti)),
                        Likeness::Unknown if o >= IN_PLACE_IOU => pairs.push((1, -o, d, ti)),
                        _ => {}
                    }
                    continue;
                }
                let predicted = t.kalman.bbox();
                let o = iou(&db, &buffered(&predicted, c.buffer));
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
            t.matched(&detections[d].0, self.clock, &self.config);
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

    /// Frames of a tracker at 2 frames a second: `dets` on each of `frames`.
    fn run(t: &mut Tracker, frames: usize, dets: &[(BBox, f32)]) -> Vec<FrameTracks> {
        (0..frames).map(|_| t.update(dets)).collect()
    }

    #[test]
    fn a_parked_object_lives_on_unseen_in_its_place() {
        let mut t = Tracker::new(TrackerConfig::at_fps(2.0));
        let here = (plate_at(400.0, 300.0), 0.9);
        let id = t.update(&[here]).assigned[0];
        // Seen in place for 6 s (a pixel of jitter), then unseen for 15 s.
        let jitter = (plate_at(401.0, 299.0), 0.9);
        assert!(
            run(&mut t, 12, &[jitter])
                .iter()
                .all(|r| r.assigned == [id])
        );
        assert!(run(&mut t, 30, &[]).iter().all(|r| r.ended.is_empty()));
        assert_eq!(t.update(&[jitter]).assigned, [id], "back in its place");
        // Unseen for longer than `parked_memory`: gone.
        let ends = run(&mut t, 42, &[]);
        assert!(ends[..40].iter().all(|r| r.ended.is_empty()));
        assert_eq!(ends[40].ended, [id]);
    }

    #[test]
    fn a_parked_object_unseen_is_continued_only_in_its_place_and_never_by_another() {
        let parked = |t: &mut Tracker| {
            let id = t.update(&[(plate_at(400.0, 300.0), 0.9)]).assigned[0];
            run(t, 12, &[(plate_at(400.0, 300.0), 0.9)]);
            run(t, 10, &[]);
            id
        };
        // Half a plate lower: not in its place.
        let mut t = Tracker::new(TrackerConfig::at_fps(2.0));
        let id = parked(&mut t);
        assert_ne!(t.update(&[(plate_at(400.0, 315.0), 0.9)]).assigned, [id]);
        // In its place, but reading as another plate.
        let mut t = Tracker::new(TrackerConfig::at_fps(2.0));
        let id = parked(&mut t);
        let other = |_: usize, _: TrackId| Likeness::Different;
        let r = t.update_with(&[(plate_at(400.0, 300.0), 0.9)], HALF, other);
        assert_ne!(r.assigned, [id]);
        // Reading as its plate, wherever it is (the vehicle moved off
        // behind a bus and is seen again further on).
        let mut t = Tracker::new(TrackerConfig::at_fps(2.0));
        let id = parked(&mut t);
        let same = |_: usize, _: TrackId| Likeness::Same;
        let r = t.update_with(&[(plate_at(900.0, 600.0), 0.9)], HALF, same);
        assert_eq!(r.assigned, [id]);
    }

    #[test]
    fn an_object_that_drove_off_is_no_longer_parked() {
        let mut t = Tracker::new(TrackerConfig::at_fps(2.0));
        let id = t.update(&[(plate_at(400.0, 300.0), 0.9)]).assigned[0];
        run(&mut t, 12, &[(plate_at(400.0, 300.0), 0.9)]);
        // Pulls away, seen on two frames, then gone: ends as any track.
        for i in 1..3 {
            let r = t.update(&[(plate_at(400.0, 300.0 + 20.0 * i as f32), 0.9)]);
            assert_eq!(r.assigned, [id]);
        }
        let ends = run(&mut t, 5, &[]);
        assert_eq!(ends[4].ended, [id]);
        // Moving objects and the face tracker's parked-less config: two seconds.
        let mut t = Tracker::new(TrackerConfig {
            parked_memory: 0.0,
            ..TrackerConfig::at_fps(2.0)
        });
        let id = t.update(&[(plate_at(400.0, 300.0), 0.9)]).assigned[0];
        run(&mut t, 12, &[(plate_at(400.0, 300.0), 0.9)]);
        assert_eq!(run(&mut t, 5, &[])[4].ended, [id]);
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
