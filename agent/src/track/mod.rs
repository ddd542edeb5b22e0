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
//! tolerates the jump.

mod kalman;

use kalman::KalmanBox;

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
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            high_score: 0.6,
            min_overlap: 0.1,
            buffer: 0.5,
            max_missed: 4,
        }
    }
}

#[derive(Debug)]
struct Track {
    id: TrackId,
    kalman: KalmanBox,
    missed: u32,
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
        }
    }

    pub fn live_tracks(&self) -> impl Iterator<Item = TrackId> + '_ {
        self.tracks.iter().map(|t| t.id)
    }

    /// Ends every track (shutdown, or the camera's stream ended).
    pub fn end_all(&mut self) -> Vec<TrackId> {
        self.tracks.drain(..).map(|t| t.id).collect()
    }

    /// Associates one frame's detections (`(box, score)`) with the tracks.
    pub fn update(&mut self, detections: &[(BBox, f32)]) -> FrameTracks {
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
            self.associate(detections, &group, &mut assigned, &mut matched);
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

    /// Greedy matching by descending buffered IoU. With the handful of
    /// objects a camera sees at once, greedy equals the Hungarian optimum
    /// in practice and is simpler to reason about.
    fn associate(
        &mut self,
        detections: &[(BBox, f32)],
        group: &[usize],
        assigned: &mut [Option<TrackId>],
        matched: &mut [bool],
    ) {
        let f = self.config.buffer;
        let mut pairs = Vec::new();
        for &d in group {
            let db = buffered(&detections[d].0, f);
            for (ti, t) in self.tracks.iter().enumerate() {
                if matched[ti] {
                    continue;
                }
                let o = iou(&db, &buffered(&t.kalman.bbox(), f));
                if o >= self.config.min_overlap {
                    pairs.push((o, d, ti));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, d, ti) in pairs {
            if assigned[d].is_some() || matched[ti] {
                continue;
            }
            matched[ti] = true;
            assigned[d] = Some(self.tracks[ti].id);
            self.tracks[ti].kalman.update(&detections[d].0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn end_all_flushes_live_tracks() {
        let mut t = Tracker::new(TrackerConfig::default());
        let r = t.update(&[(moving(0.0, 0.0), 0.9), (moving(500.0, 0.0), 0.9)]);
        let mut ended = t.end_all();
        ended.sort();
        assert_eq!(ended, r.assigned);
    }
}
