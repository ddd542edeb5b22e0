//! Rules turn tracked detections into events. The first rule is the one
//! every other builds on: **one vehicle (or face) pass, one event**.
//!
//! Per camera, [`Passes`] tracks plates and faces, collects each plate
//! track's reads for voting, and reports a pass when its track ends, or
//! once when it has been visible for `max_delay` (so a car parked in view
//! still produces its event in time). A plate reported unreadable that way
//! is reported again when it is read after all. A plate read again by the
//! same camera within `dedup_window` of its last sighting is the same pass,
//! not a new event. A plate found again where a parked plate's track ended
//! unreadable moments before is that plate, back from behind people walking
//! past or from the detector's doubt, not a new event either. A new stream
//! (a reconnected camera, a looped file) ends every track of the old one.
//! Line, zone and watchlist rules come here later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::frame::I420Image;
use crate::infer::geometry::{iou, quad_aspect};
use crate::infer::{BBox, Detections, Face};
use crate::ingest::Frame;
use crate::plate::colour::{PlateColour, is_monochrome, plate_colour};
use crate::plate::vote::{PlateObservation, Vote, similarity, vote};
use crate::track::{Likeness, TrackId, Tracker, TrackerConfig};

pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct PassConfig {
    pub max_delay: Duration,
    pub dedup_window: Duration,
    pub emit_unreadable: bool,
    /// Reads below this confidence do not vote.
    pub min_read_confidence: f32,
    /// A track no frame could read is reported as an unreadable plate only
    /// if the detector was at least this sure, in some frame, that it is a
    /// plate; below, it was most likely a badge, a sign or a headlight.
    pub min_unreadable_score: f32,
    pub tracker: TrackerConfig,
}

impl Default for PassConfig {
    fn default() -> Self {
        Self {
            max_delay: DEFAULT_MAX_DELAY,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            emit_unreadable: true,
            min_read_confidence: 0.0,
            min_unreadable_score: 0.0,
            tracker: TrackerConfig::default(),
        }
    }
}

/// Where and when an object was seen.
#[derive(Debug, Clone, Serialize)]
pub struct Sighting {
    pub captured_at: SystemTime,
    /// The stream attempt the frame came from (see `Frame::stream`).
    pub stream: u64,
    pub stream_time: Option<Duration>,
    pub frame_number: u64,
    pub frame_width: u32,
    pub frame_height: u32,
    pub bbox: BBox,
}

#[derive(Debug, Clone)]
pub struct PlateSighting {
    pub at: Sighting,
    pub corners: [[f32; 2]; 4],
    pub detector_score: f32,
    pub lines: u8,
    pub observation: PlateObservation,
    pub colour: PlateColour,
}

#[derive(Debug, Clone)]
pub struct PlatePass {
    pub track_id: TrackId,
    pub vote: Vote,
    pub colour: PlateColour,
    /// The frame that best shows the voted reading.
    pub best: PlateSighting,
    pub frames: usize,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// The full frame of `best`, for evidence; None only when the frame
    /// was not kept (a pass split off another vehicle's track).
    pub frame: Option<Arc<I420Image>>,
    /// The id of the event this pass makes.
    pub event_id: uuid::Uuid,
    /// The event of the same pass this one replaces: reported unreadable,
    /// or as a reading the rest of the pass voted down.
    pub supersedes: Option<uuid::Uuid>,
}

#[derive(Debug, Clone)]
pub struct FacePass {
    pub event_id: uuid::Uuid,
    pub track_id: TrackId,
    pub best: Sighting,
    pub face: Face,
    pub frames: usize,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

#[derive(Debug, Clone)]
pub enum Pass {
    Plate(PlatePass),
    /// A plate track whose reads never formed a valid plate.
    UnreadablePlate(PlatePass),
    Face(FacePass),
}

struct PlateTrack {
    /// Id of the pass (reported as the event's track id): a tracker track
    /// that turns out to hold two vehicles becomes two passes.
    pass_id: u64,
    rest: Rest,
    /// The parked plate's place whose pass it took up, while it may be
    /// that plate ([`ParkedSpot`]).
    returned: Option<ParkedSpot>,
    sightings: Vec<PlateSighting>,
    frames: KeptFrames,
    first_clock: Duration,
    /// Set once the pass was reported at `max_delay`: the reading it was
    /// reported as. Later sightings only keep the dedup window fresh, unless
    /// it was reported unreadable: then they are kept, to be reported again
    /// if they read as a plate.
    reported: Option<Reported>,
    /// Sightings since the last report whose read is confident enough to
    /// vote and is a valid plate as it stands.
    readable_reads: usize,
    /// The latest confident reading consistent with the track.
    anchor: Option<String>,
    /// A confident reading unlike the anchor, and on how many consecutive
    /// frames: at [`SWITCH_FRAMES`], another vehicle has taken the box.
    switch_candidate: Option<(String, usize)>,
}

/// The full frames of a track's best reads, one per reading, by read
/// weight. A few, not one: the vote at the end may settle on a reading the
/// single best frame does not show, and the event's frame must be one the
/// evidence holds. One per reading, because a second frame of the same
/// reading shows nothing the first does not, and each full frame held is
/// megabytes of the gateway's memory.
#[derive(Default)]
struct KeptFrames(Vec<Kept>);

struct Kept {
    /// Reads that vote first (the event's frame is chosen among them), then by weight.
    rank: (bool, f32),
    number: u64,
    chars: String,
    image: Arc<I420Image>,
}

const KEPT_FRAMES: usize = 3;
/// Frames a track reported as a plate keeps for a correction: the two
/// likeliest other readings.
const SETTLED_KEPT_FRAMES: usize = 2;

impl KeptFrames {
    fn offer(&mut self, rank: (bool, f32), chars: &str, frame: &Frame) {
        let at_least = |k: &Kept| k.rank >= rank;
        if let Some(i) = self.0.iter().position(|k| k.chars == chars) {
            if at_least(&self.0[i]) {
                return;
            }
            self.0.remove(i);
        } else if self.0.len() == KEPT_FRAMES && self.0.iter().all(at_least) {
            return;
        }
        self.0.push(Kept {
            rank,
            number: frame.number,
            chars: chars.to_string(),
            image: frame.image.clone(),
        });
        self.0
            .sort_by(|a, b| b.rank.0.cmp(&a.rank.0).then(b.rank.1.total_cmp(&a.rank.1)));
        self.0.truncate(KEPT_FRAMES);
    }

    /// Keeps the `n` best (they are kept best first).
    fn keep_best(&mut self, n: usize) {
        self.0.truncate(n);
    }

    fn get(&self, number: u64) -> Option<&Arc<I420Image>> {
        self.0.iter().find(|k| k.number == number).map(|k| &k.image)
    }

    /// Moves the frames of `sightings` into a new set (a split pass).
    fn split_off(&mut self, sightings: &[PlateSighting]) -> KeptFrames {
        let (moved, kept) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|k| sightings.iter().any(|s| s.at.frame_number == k.number));
        self.0 = kept;
        KeptFrames(moved)
    }
}

#[derive(Clone)]
struct Reported {
    chars: String,
    readable: bool,
    /// Whether the detector was sure it is a plate: false only for an
    /// unreadable track dismissed, which made no event.
    sure: bool,
    /// The event it made; None when it made none (dismissed, or a
    /// duplicate of another pass's).
    event_id: Option<uuid::Uuid>,
}

impl Reported {
    /// A pass decided as the plate `chars`.
    fn plate(chars: String, event_id: Option<uuid::Uuid>) -> Self {
        Self {
            chars,
            readable: true,
            sure: true,
            event_id,
        }
    }
}

/// A plate track seen in one place this long is parked (a vehicle parked
/// in view, or queued).
const PARKED_AFTER: Duration = Duration::from_secs(5);
/// How long the place of a parked plate whose track ended unreadable is
/// remembered: longer than people walking past or the detector doubting a
/// far plate for a while, and short, because another unreadable plate
/// stopping in that very place within it is taken for the first.
const PARKED_MEMORY: Duration = Duration::from_secs(20);
/// A plate's first box overlapping a parked plate's place this much is in
/// that place (a detector's boxes of one still plate overlap by 0.8 and
/// more; a plate half its height away, by 0.33).
const IN_PLACE_IOU: f32 = 0.7;
/// A box overlapping the place where a track came to rest less than this
/// has moved on.
const MOVED_IOU: f32 = 0.5;

/// Where a plate track came to rest, since when, and when last seen there
/// (analysis clock).
#[derive(Debug, Clone, Copy)]
struct Rest {
    bbox: BBox,
    since: Duration,
    last: Duration,
}

impl Rest {
    fn new(bbox: BBox, now: Duration) -> Self {
        Self {
            bbox,
            since: now,
            last: now,
        }
    }

    /// Returns whether it moved on.
    fn seen(&mut self, bbox: BBox, now: Duration) -> bool {
        let moved = iou(&bbox, &self.bbox) < MOVED_IOU;
        if moved {
            *self = Self::new(bbox, now);
        } else {
            self.last = now;
        }
        moved
    }

    fn parked(&self) -> bool {
        self.last.saturating_sub(self.since) >= PARKED_AFTER
    }
}

/// The place of a parked plate whose track ended unreadable, for
/// [`PARKED_MEMORY`]: a plate track starting there takes up its pass,
/// reported again only if it reads as a plate. A plate that drove off seen
/// leaves none: it was no longer at rest.
#[derive(Clone)]
struct ParkedSpot {
    rest: Rest,
    pass_id: u64,
    chars: String,
    event_id: Option<uuid::Uuid>,
}

impl PlateTrack {
    /// What the plate reads as: the plate reported, else the last
    /// confident read (a pass reported unreadable is still to be read).
    fn identity(&self) -> Option<&str> {
        match &self.reported {
            Some(r) if r.readable => Some(&r.chars),
            _ => self.anchor.as_deref(),
        }
    }

    /// Whether a confident read `chars` is this plate, another, or cannot
    /// tell. Two reads of much different lengths cannot tell: one of them
    /// saw part of the plate (a line hidden by a leg or a bag).
    fn likeness(&self, chars: &str) -> Likeness {
        let Some(identity) = self.identity() else {
            return Likeness::Unknown;
        };
        match similarity(identity, chars) {
            s if s >= CONFIRM_SIMILARITY => Likeness::Same,
            s if s < SPLIT_SIMILARITY
                && !much_shorter(chars, identity)
                && !much_shorter(identity, chars) =>
            {
                Likeness::Different
            }
            _ => Likeness::Unknown,
        }
    }

    /// Whether the track, ending now, may still have something to report:
    /// a first report, a reading after an unreadable one, or a reading
    /// the whole pass votes for instead of the one reported.
    fn has_news(&self) -> bool {
        match &self.reported {
            None => true,
            Some(r) => r.readable || self.readable_reads > 0,
        }
    }
}

/// Whether `a` has fewer characters than `b` by more than one.
fn much_shorter(a: &str, b: &str) -> bool {
    a.chars().count() + 1 < b.chars().count()
}

/// Whether a read is confident enough to vote and a valid plate as it
/// stands, or after changes the grammar forces (an `O` where only a digit
/// may stand), which the vote makes too; not after a guess.
fn reads_as_plate(o: &PlateObservation, min_confidence: f32) -> bool {
    o.read_confidence >= min_confidence
        && (crate::plate::parse(&o.chars).is_some()
            || crate::plate::grammar::correct(&o.chars, &o.char_confidences, 4)
                .iter()
                .any(|c| c.certainty >= 1.0))
}

/// Whether a read is `chars`, as it stands or after changes the grammar
/// forces; a Đ the plate's shape restored may have been read as D.
fn reads_exactly(o: &PlateObservation, chars: &str) -> bool {
    let same = |read: &str| {
        read.chars().count() == chars.chars().count()
            && read
                .chars()
                .zip(chars.chars())
                .all(|(r, c)| r == c || (r == 'D' && c == 'Đ'))
    };
    same(&o.chars)
        || crate::plate::grammar::correct(&o.chars, &o.char_confidences, 4)
            .iter()
            .any(|c| c.certainty >= 1.0 && same(&c.chars))
}

/// Sightings a track holds before the least telling go: a plate in view for
/// hours that is never reported early (never read, never surely a plate)
/// must not grow without end.
const MAX_SIGHTINGS: usize = 256;

struct FaceTrack {
    best: (Sighting, Face),
    frames: usize,
    first_seen: SystemTime,
    last_seen: SystemTime,
    first_clock: Duration,
    reported: bool,
}

/// A plate reported lately: when last seen (analysis clock), the event
/// that reported it (None for a pass taken for a duplicate), and how many
/// passes were taken for duplicates of it since.
#[derive(Debug, Clone, Copy)]
struct Recent {
    seen: Duration,
    event_id: Option<uuid::Uuid>,
    duplicates: u32,
}

/// Marks the plate a pass reported as seen `now`.
fn refresh(recent: &mut HashMap<String, Recent>, r: &Reported, now: Duration) {
    recent
        .entry(r.chars.clone())
        .and_modify(|e| e.seen = now)
        .or_insert(Recent {
            seen: now,
            event_id: r.event_id,
            duplicates: 0,
        });
}

/// Counters a health endpoint reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassCounters {
    pub plate_passes: u64,
    pub unreadable_plates: u64,
    /// Unreadable tracks the detector was never sure were plates.
    pub dismissed_plate_tracks: u64,
    pub duplicates_suppressed: u64,
    /// Plate passes reported again with a reading the rest of the pass
    /// voted for instead of the one reported at `max_delay`.
    pub corrected_passes: u64,
    pub face_passes: u64,
}

pub struct Passes {
    config: PassConfig,
    plate_tracker: Tracker,
    face_tracker: Tracker,
    plates: HashMap<TrackId, PlateTrack>,
    faces: HashMap<TrackId, FaceTrack>,
    /// Plate chars → their last sighting, and the event that reported them.
    recent: HashMap<String, Recent>,
    parked_spots: Vec<ParkedSpot>,
    clock: AnalysisClock,
    /// The clock at the last frame: the trackers follow objects as far as
    /// they move in the time between frames.
    last_frame_clock: Duration,
    /// The stream attempt of the last frame.
    stream: Option<u64>,
    next_pass_id: u64,
    pub counters: PassCounters,
}

/// Two confident reads this different cannot be misreads of one plate: the
/// tracker followed a box into the next vehicle (a gate, bumper to bumper).
const SPLIT_CONFIDENCE: f32 = 0.7;
const SPLIT_SIMILARITY: f32 = 0.5;
/// Two reads at least this alike are the same plate read twice.
const CONFIRM_SIMILARITY: f32 = 0.75;
/// Consecutive frames a different plate must be read on before the pass
/// is split: a blur or a hand over the plate lasts a frame or two.
const SWITCH_FRAMES: usize = 3;

/// A per-camera clock that only moves forward: the stream's own time
/// within one stream (so files analysed faster than real time behave as at
/// real time), the time between the frames' arrivals across streams (a
/// camera back after an hour's outage has been away an hour), when
/// timestamps jump back, or when there are none.
#[derive(Default)]
struct AnalysisClock {
    now: Duration,
    /// The last frame's stream attempt and stream time.
    last_stream: Option<(u64, Option<Duration>)>,
    last_wall: Option<SystemTime>,
}

impl AnalysisClock {
    fn advance(&mut self, frame: &Frame) -> Duration {
        let step = match (self.last_stream, frame.stream_time) {
            (Some((stream, Some(prev))), Some(t)) if stream == frame.stream && t >= prev => {
                t - prev
            }
            _ => self
                .last_wall
                .and_then(|w| frame.captured_at.duration_since(w).ok())
                .unwrap_or_default(),
        };
        self.last_stream = Some((frame.stream, frame.stream_time));
        self.last_wall = Some(frame.captured_at);
        self.now += step;
        self.now
    }
}

fn sighting(frame: &Frame, bbox: BBox) -> Sighting {
    Sighting {
        captured_at: frame.captured_at,
        stream: frame.stream,
        stream_time: frame.stream_time,
        frame_number: frame.number,
        frame_width: frame.image.width,
        frame_height: frame.image.height,
        bbox,
    }
}

impl Passes {
    pub fn new(config: PassConfig) -> Self {
        Self {
            plate_tracker: Tracker::new(config.tracker.clone()),
            // Faces read as nothing: a face seen once is not followed
            // beyond overlap, where in a crowd it would as well be another's.
            face_tracker: Tracker::new(TrackerConfig {
                reach_unknown: 0.0,
                ..config.tracker.clone()
            }),
            config,
            plates: HashMap::new(),
            faces: HashMap::new(),
            recent: HashMap::new(),
            parked_spots: Vec::new(),
            clock: AnalysisClock::default(),
            last_frame_clock: Duration::ZERO,
            stream: None,
            next_pass_id: 1,
            counters: PassCounters::default(),
        }
    }

    pub fn on_frame(&mut self, frame: &Frame, detections: &Detections) -> Vec<Pass> {
        // A new stream: what was in view of the old one is gone (or, after
        // an outage, cannot be told from the vehicle now in its place).
        let mut out = match self.stream.replace(frame.stream) {
            Some(old) if old != frame.stream => self.finish(),
            _ => Vec::new(),
        };
        let now = self.clock.advance(frame);
        self.parked_spots
            .retain(|s| now.saturating_sub(s.rest.last) <= PARKED_MEMORY);

        let boxes: Vec<(BBox, f32)> = detections
            .plates
            .iter()
            .map(|p| (p.bbox, p.detector_score))
            .collect();
        // What a plate reads follows it where its box cannot: a vehicle
        // driving past moves its plate many heights between frames.
        let plates = &self.plates;
        let since_last = now.saturating_sub(std::mem::replace(&mut self.last_frame_clock, now));
        let tracks = self.plate_tracker.update_with(&boxes, since_last, |i, id| {
            let read = &detections.plates[i];
            match plates.get(&id) {
                Some(t) if read.read_confidence >= SPLIT_CONFIDENCE => t.likeness(&read.chars),
                _ => Likeness::Unknown,
            }
        });
        let grey = std::cell::OnceCell::new();
        for (p, id) in detections.plates.iter().zip(&tracks.assigned) {
            if frame.unchanged {
                // The motion gate found the scene still: these are the last
                // analysed frame's detections again. They keep the tracks
                // alive, but are no new reads: counted again, one misread
                // at a red light would outvote every real frame.
                if let Some(t) = self.plates.get_mut(id) {
                    let _ = t.rest.seen(p.bbox, now);
                    if let Some(r) = &t.reported
                        && r.readable
                    {
                        refresh(&mut self.recent, r, now);
                    }
                }
                continue;
            }
            let observation = PlateObservation {
                chars: p.chars.clone(),
                char_confidences: p.char_confidences.clone(),
                read_confidence: p.read_confidence,
                sharpness: p.sharpness,
            };
            let weight = observation.weight();
            // Does this read belong to another vehicle the tracker's box
            // slid onto? Only when a confident, dissimilar reading repeats on
            // the next frame: one wild misread is not a new vehicle.
            let confident = observation.read_confidence >= SPLIT_CONFIDENCE;
            let mut carried = Vec::new();
            let mut carried_frames = KeptFrames::default();
            let mut new_vehicle = false;
            if confident && let Some(t) = self.plates.get_mut(id) {
                match t.likeness(&observation.chars) {
                    Likeness::Different => {
                        let seen = match &t.switch_candidate {
                            Some((c, n))
                                if similarity(c, &observation.chars) >= CONFIRM_SIMILARITY =>
                            {
                                n + 1
                            }
                            _ => 1,
                        };
                        if seen >= SWITCH_FRAMES {
                            new_vehicle = true;
                            // The candidate frames (the last ones kept) showed the new vehicle already.
                            let from = t.sightings.len().saturating_sub(seen - 1);
                            carried = t.sightings.split_off(from);
                            carried_frames = t.frames.split_off(&carried);
                        } else {
                            t.switch_candidate = Some((observation.chars.clone(), seen));
                        }
                    }
                    // A partial read is no anchor for the plate's next reads.
                    _ if t
                        .identity()
                        .is_some_and(|a| much_shorter(&observation.chars, a)) =>
                    {
                        t.switch_candidate = None;
                    }
                    _ => {
                        t.switch_candidate = None;
                        t.anchor = Some(observation.chars.clone());
                    }
                }
            }
            if new_vehicle {
                let old = self.plates.remove(id).expect("checked");
                self.finish_track(old, now, &mut out);
            }
            if !self.plates.contains_key(id) {
                let spot = if new_vehicle {
                    None
                } else {
                    self.parked_spots
                        .iter()
                        .position(|s| iou(&p.bbox, &s.rest.bbox) >= IN_PLACE_IOU)
                        .map(|i| self.parked_spots.swap_remove(i))
                };
                let returned = spot.clone();
                let (pass_id, reported, rest) = match spot {
                    Some(s) => {
                        tracing::debug!(pass = s.pass_id, chars = %s.chars, "a plate back where a parked one ended unreadable: the same pass");
                        let reported = Reported {
                            chars: s.chars,
                            readable: false,
                            sure: true,
                            event_id: s.event_id,
                        };
                        (s.pass_id, Some(reported), s.rest)
                    }
                    None => {
                        self.next_pass_id += 1;
                        (self.next_pass_id - 1, None, Rest::new(p.bbox, now))
                    }
                };
                let anchor = confident.then(|| observation.chars.clone());
                let min_confidence = self.config.min_read_confidence;
                let readable_reads = carried
                    .iter()
                    .filter(|s| reads_as_plate(&s.observation, min_confidence))
                    .count();
                self.plates.insert(
                    *id,
                    PlateTrack {
                        pass_id,
                        rest,
                        returned,
                        sightings: carried,
                        frames: carried_frames,
                        first_clock: now,
                        reported,
                        readable_reads,
                        anchor,
                        switch_candidate: None,
                    },
                );
            }
            let track = self.plates.get_mut(id).expect("inserted above");
            let moved = track.rest.seen(p.bbox, now);
            let min_confidence = self.config.min_read_confidence;
            let readable = |o: &PlateObservation| reads_as_plate(o, min_confidence);
            let settled_as = track.reported.as_ref().filter(|r| r.readable);
            if let Some(r) = settled_as {
                // Reported at max_delay already: the rest of the pass is the same event.
                refresh(&mut self.recent, r, now);
            }
            let votes = observation.read_confidence >= min_confidence;
            let reads = readable(&observation);
            match settled_as {
                None => track
                    .frames
                    .offer((votes, weight), &observation.chars, frame),
                // Once settled, two frames at most, and only ones that may show
                // a correction: a valid plate like the one reported, not it.
                Some(r)
                    if reads
                        && similarity(&r.chars, &observation.chars) >= CONFIRM_SIMILARITY
                        && !reads_exactly(&observation, &r.chars) =>
                {
                    track
                        .frames
                        .offer((votes, weight), &observation.chars, frame);
                    track.frames.keep_best(SETTLED_KEPT_FRAMES);
                }
                Some(_) => {}
            }
            if reads {
                track.readable_reads += 1;
            }
            // A plate that took up a parked one's pass but drives on, or
            // reads: another vehicle that stopped in its place, as likely as
            // the parked one read at last. A pass of its own, so that the
            // parked plate's pass is never given another's reading.
            if (moved || track.readable_reads > 0)
                && let Some(spot) = track.returned.take()
            {
                track.reported = None;
                track.pass_id = self.next_pass_id;
                self.next_pass_id += 1;
                // The parked plate may still come back there.
                self.parked_spots.push(spot);
            }
            if track.sightings.len() == MAX_SIGHTINGS {
                // The least telling goes, never the first or last (the
                // pass's span), nor one whose frame is kept.
                // Nor the surest detection: it alone may vouch that an
                // unreadable track is a plate.
                let score = |i: usize| track.sightings[i].detector_score;
                let surest = (0..MAX_SIGHTINGS).max_by(|&a, &b| score(a).total_cmp(&score(b)));
                let least = (1..MAX_SIGHTINGS - 1)
                    .filter(|&i| {
                        Some(i) != surest
                            && track
                                .frames
                                .get(track.sightings[i].at.frame_number)
                                .is_none()
                    })
                    .min_by(|&a, &b| {
                        let w = |i: usize| track.sightings[i].observation.weight();
                        w(a).total_cmp(&w(b))
                    });
                if let Some(i) = least {
                    let gone = track.sightings.remove(i);
                    // A read dropped before any report no longer counts
                    // towards one; reads since a report are counted anew.
                    if readable(&gone.observation) {
                        track.readable_reads = track.readable_reads.saturating_sub(1);
                    }
                }
            }
            track.sightings.push(PlateSighting {
                at: sighting(frame, p.bbox),
                corners: p.corners,
                detector_score: p.detector_score,
                lines: p.lines,
                // In a grey (night-mode) frame every plate would read white.
                colour: if *grey.get_or_init(|| is_monochrome(&frame.image)) {
                    PlateColour::Unknown
                } else {
                    plate_colour(&p.crop)
                },
                observation,
            });
        }
        for id in tracks.ended {
            if let Some(t) = self.plates.remove(&id) {
                let (rest, pass_id) = (t.rest, t.pass_id);
                if let Some(r) = self.finish_track(t, now, &mut out)
                    && !r.readable
                    && r.sure
                    && rest.parked()
                {
                    self.parked_spots.push(ParkedSpot {
                        rest,
                        pass_id,
                        chars: r.chars,
                        event_id: r.event_id,
                    });
                }
            }
        }
        let due: Vec<TrackId> = self
            .plates
            .iter()
            .filter(|(_, t)| match &t.reported {
                None => {
                    !t.sightings.is_empty()
                        && now.saturating_sub(t.first_clock) >= self.config.max_delay
                        // A track neither read nor surely a plate is decided
                        // when it ends: reported now and dismissed, it would
                        // swallow the rest of its pass, however clearly it
                        // is seen later.
                        && (t.readable_reads > 0
                            || t.sightings
                                .iter()
                                .any(|s| s.detector_score >= self.config.min_unreadable_score))
                }
                // Reported unreadable, now read on a few frames: the plate.
                Some(r) => !r.readable && t.readable_reads >= SWITCH_FRAMES,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let t = self.plates.get_mut(&id).expect("due track exists");
            let (sightings, frames, pass_id, earlier) = (
                t.sightings.clone(),
                std::mem::take(&mut t.frames),
                t.pass_id,
                t.reported.clone(),
            );
            t.readable_reads = 0;
            let reported =
                self.finish_plate(pass_id, sightings, frames, now, earlier.as_ref(), &mut out);
            let t = self.plates.get_mut(&id).expect("due track exists");
            // A plate keeps its sightings for the vote at its end, which may
            // correct the reading; an unreadable one starts afresh, to be
            // reported again only if what follows reads.
            if !reported.as_ref().is_some_and(|r| r.readable) {
                t.sightings.clear();
            }
            if reported.is_some() {
                t.reported = reported;
            }
        }

        let boxes: Vec<(BBox, f32)> = detections.faces.iter().map(|f| (f.bbox, f.score)).collect();
        let tracks = self
            .face_tracker
            .update_with(&boxes, since_last, |_, _| Likeness::Unknown);
        for (f, id) in detections.faces.iter().zip(&tracks.assigned) {
            let s = sighting(frame, f.bbox);
            let t = self.faces.entry(*id).or_insert_with(|| FaceTrack {
                best: (s.clone(), f.clone()),
                frames: 0,
                first_seen: frame.captured_at,
                last_seen: frame.captured_at,
                first_clock: now,
                reported: false,
            });
            t.frames += usize::from(!frame.unchanged);
            t.last_seen = frame.captured_at;
            if f.score > t.best.1.score {
                t.best = (s, f.clone());
            }
        }
        for id in tracks.ended {
            if let Some(t) = self.faces.remove(&id)
                && !t.reported
            {
                out.push(Self::face_pass(&mut self.counters, id, &t));
            }
        }
        let due: Vec<TrackId> = self
            .faces
            .iter()
            .filter(|(_, t)| {
                !t.reported && now.saturating_sub(t.first_clock) >= self.config.max_delay
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let pass = Self::face_pass(&mut self.counters, id, &self.faces[&id]);
            self.faces.get_mut(&id).expect("due face").reported = true;
            out.push(pass);
        }
        out
    }

    /// Ends every open track: the camera stopped or the agent shuts down.
    /// Nothing seen is left unreported.
    pub fn finish(&mut self) -> Vec<Pass> {
        let now = self.clock.now;
        let mut out = Vec::new();
        // After an outage, a vehicle in a parked one's place cannot be told from it.
        self.parked_spots.clear();
        self.plate_tracker.end_all();
        self.face_tracker.end_all();
        let mut plates: Vec<_> = self.plates.drain().collect();
        plates.sort_by_key(|(id, _)| *id);
        for (_, t) in plates {
            self.finish_track(t, now, &mut out);
        }
        let mut faces: Vec<_> = self.faces.drain().collect();
        faces.sort_by_key(|(id, _)| *id);
        for (id, t) in faces {
            if !t.reported {
                out.push(Self::face_pass(&mut self.counters, id, &t));
            }
        }
        out
    }

    fn face_pass(counters: &mut PassCounters, id: TrackId, t: &FaceTrack) -> Pass {
        counters.face_passes += 1;
        Pass::Face(FacePass {
            event_id: crate::event::new_event_id(),
            track_id: id,
            best: t.best.0.clone(),
            face: t.best.1.clone(),
            frames: t.frames,
            first_seen: t.first_seen,
            last_seen: t.last_seen,
        })
    }

    /// Reports what an ending track has not reported yet, or a better
    /// reading than the one it reported; returns what the pass was decided
    /// as, if anything.
    fn finish_track(
        &mut self,
        t: PlateTrack,
        now: Duration,
        out: &mut Vec<Pass>,
    ) -> Option<Reported> {
        if !t.has_news() {
            // Still the parked plate, unread: its return made no event.
            if t.returned.is_some() {
                self.counters.duplicates_suppressed += 1;
            }
            return t.reported;
        }
        self.finish_plate(
            t.pass_id,
            t.sightings,
            t.frames,
            now,
            t.reported.as_ref(),
            out,
        )
        .or(t.reported)
    }

    /// Votes a plate track and reports it, unless it is a duplicate or,
    /// after an `earlier` report, it tells nothing new: no valid plate, or
    /// (after a plate) no correction of it. Returns what the pass stands
    /// as: the reading voted for, or the earlier one where that stands;
    /// None when there was nothing to vote, or no valid plate after an
    /// unreadable report.
    fn finish_plate(
        &mut self,
        id: TrackId,
        sightings: Vec<PlateSighting>,
        frames: KeptFrames,
        now: Duration,
        earlier: Option<&Reported>,
        out: &mut Vec<Pass>,
    ) -> Option<Reported> {
        let surest = sightings
            .iter()
            .map(|s| s.detector_score)
            .fold(0.0, f32::max);
        // Only reads confident enough vote; a track with none is unreadable
        // and reported with its best raw read, never dropped.
        let voters: Vec<PlateSighting> = sightings
            .iter()
            .filter(|s| s.observation.read_confidence >= self.config.min_read_confidence)
            .cloned()
            .collect();
        let (sightings, readable) = if voters.is_empty() {
            (sightings, false)
        } else {
            (voters, true)
        };
        let observations: Vec<PlateObservation> =
            sightings.iter().map(|s| s.observation.clone()).collect();
        let mut v = vote(&observations)?;
        // The event's frame: the vote's best if it was kept, else the kept
        // frame whose reading is closest to the vote.
        let chosen = if frames
            .get(sightings[v.best_observation].at.frame_number)
            .is_some()
        {
            Some(v.best_observation)
        } else {
            (0..sightings.len())
                .filter(|&i| frames.get(sightings[i].at.frame_number).is_some())
                .max_by(|&a, &b| {
                    let score = |i: usize| {
                        let o = &sightings[i].observation;
                        (similarity(&o.chars, &v.chars), o.weight())
                    };
                    let (sa, sb) = (score(a), score(b));
                    sa.0.total_cmp(&sb.0).then(sa.1.total_cmp(&sb.1))
                })
        };
        let best = sightings[chosen.unwrap_or(v.best_observation)].clone();
        let frame = frames.get(best.at.frame_number).cloned();
        if !readable {
            v.plate = None;
        } else {
            let lines = majority_lines(&sightings, best.lines);
            v.plate = crate::plate::parse_shaped(&v.chars, lines, two_line_aspect(&sightings));
            // The shape can restore a Đ the reader took for D.
            if let Some(p) = &v.plate {
                v.chars.clone_from(&p.chars);
            }
        }
        let mut pass = PlatePass {
            track_id: id,
            colour: majority_colour(&sightings),
            frames: sightings.len(),
            first_seen: sightings
                .first()
                .map_or(best.at.captured_at, |s| s.at.captured_at),
            last_seen: sightings
                .last()
                .map_or(best.at.captured_at, |s| s.at.captured_at),
            frame,
            best,
            vote: v,
            event_id: crate::event::new_event_id(),
            // Decided below, with the dedup window.
            supersedes: None,
        };
        let chars = pass.vote.chars.clone();
        if pass.vote.plate.is_none() {
            if earlier.is_some() {
                return None;
            }
            let sure = surest >= self.config.min_unreadable_score;
            let unreadable = Some(Reported {
                chars,
                readable: false,
                sure,
                event_id: (sure && self.config.emit_unreadable).then_some(pass.event_id),
            });
            if !sure {
                self.counters.dismissed_plate_tracks += 1;
                tracing::debug!(track = id, chars = %pass.vote.chars, surest, "unreadable track dismissed: the detector was never sure it is a plate");
                return unreadable;
            }
            self.counters.unreadable_plates += 1;
            tracing::debug!(track = id, chars = %pass.vote.chars, frames = pass.frames, "plate track never read as a valid plate");
            if self.config.emit_unreadable {
                out.push(Pass::UnreadablePlate(pass));
            }
            return unreadable;
        }
        let correction = earlier.filter(|e| e.readable);
        if let Some(e) = correction {
            // A correction needs the whole pass to vote for a plate like the
            // one reported (unlike it, the track slid onto another vehicle
            // without a confident read to show it), and a frame that reads
            // it, for the evidence; else the first reading stands.
            let shown = pass.frame.is_some() && reads_exactly(&pass.best.observation, &chars);
            if chars == e.chars || similarity(&chars, &e.chars) < CONFIRM_SIMILARITY || !shown {
                if chars != e.chars {
                    tracing::debug!(track = id, reported = %e.chars, voted = %chars, shown, "the pass voted for another plate at its end; the reported one stands");
                }
                return Some(e.clone());
            }
        }
        // Sightings older than the window can suppress nothing: forget them,
        // so a junction that sees thousands of plates a day keeps a small map.
        let window = self.config.dedup_window;
        self.recent
            .retain(|_, r| now.saturating_sub(r.seen) < window);
        // The event this one replaces: the pass's own earlier one. Unless
        // another pass was taken for a duplicate of it: replaced, it would
        // leave that pass with no event; then the reading is a pass of its own.
        let replaces = earlier.and_then(|e| e.event_id).filter(|id| {
            !self
                .recent
                .values()
                .any(|r| r.event_id == Some(*id) && r.duplicates > 0)
        });
        // A correction is no new pass, whatever the window holds.
        let corrects = correction.is_some() && replaces.is_some();
        if !corrects && let Some(r) = self.recent.get_mut(&chars) {
            r.seen = now;
            r.duplicates += 1;
            self.counters.duplicates_suppressed += 1;
            tracing::debug!(track = id, chars = %chars, "same plate within the dedup window: same pass, no new event");
            // Not linked to that event: a correction of this pass is a pass
            // of its own (it may be another vehicle, misread at first as
            // the one reported before).
            return Some(Reported::plate(chars, None));
        }
        pass.supersedes = replaces;
        if let Some(e) = correction.filter(|_| corrects) {
            self.counters.corrected_passes += 1;
            tracing::info!(track = id, reported = %e.chars, now = %chars, "the rest of the pass reads its plate otherwise: reported again");
            // The misread stands for no vehicle: another plate that reads
            // so within the window is a pass of its own.
            if self
                .recent
                .get(&e.chars)
                .is_some_and(|r| r.event_id == e.event_id)
            {
                self.recent.remove(&e.chars);
            }
        } else {
            self.counters.plate_passes += 1;
        }
        self.recent.insert(
            chars.clone(),
            Recent {
                seen: now,
                event_id: Some(pass.event_id),
                duplicates: 0,
            },
        );
        let reported = Reported::plate(chars, Some(pass.event_id));
        out.push(Pass::Plate(pass));
        Some(reported)
    }
}

/// The median shape of a track's two-line sightings, by their corners.
/// The lines most sightings found, `best`'s on a tie: the shape decides
/// a plate's kind (and restores a Đ), so one frame's class must not.
fn majority_lines(sightings: &[PlateSighting], best: u8) -> u8 {
    let two = sightings.iter().filter(|s| s.lines == 2).count();
    match (2 * two).cmp(&sightings.len()) {
        std::cmp::Ordering::Greater => 2,
        std::cmp::Ordering::Less => 1,
        std::cmp::Ordering::Equal => best,
    }
}

fn two_line_aspect(sightings: &[PlateSighting]) -> f32 {
    let mut aspects: Vec<f32> = sightings
        .iter()
        .filter(|s| s.lines == 2)
        .map(|s| quad_aspect(&s.corners))
        .collect();
    if aspects.is_empty() {
        return 0.0;
    }
    let mid = aspects.len() / 2;
    *aspects.select_nth_unstable_by(mid, f32::total_cmp).1
}

fn majority_colour(sightings: &[PlateSighting]) -> PlateColour {
    let mut tally: Vec<(PlateColour, f32)> = Vec::new();
    for s in sightings {
        let w = s.observation.weight();
        match tally.iter_mut().find(|(c, _)| *c == s.colour) {
            Some((_, t)) => *t += w,
            None => tally.push((s.colour, w)),
        }
    }
    tally
        .into_iter()
        .filter(|(c, _)| *c != PlateColour::Unknown)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(PlateColour::Unknown, |(c, _)| c)
}

#[cfg(test)]
mod tests;
