//! The pre-event buffer: the last seconds of one camera's video as it
//! arrived, still encoded, starting at a keyframe.
//!
//! GStreamer's streaming thread appends; the evidence thread cuts clips.
//! Trimming drops whole groups of pictures from the front, so the buffer
//! always starts where a decoder can start. A group that grows past the
//! byte cap (or twice the time kept) with no keyframe after it goes whole,
//! and the buffer starts again at the next keyframe: a camera that sends
//! a keyframe only when its stream starts must not take the gateway's
//! memory.

use std::collections::VecDeque;
use std::time::Duration;

use crate::ingest::EncodedUnit;

pub struct Ring {
    /// Units in arrival (decode) order, each with its arrival number.
    units: VecDeque<(u64, EncodedUnit)>,
    next: u64,
    bytes: usize,
    /// Stream time kept behind the newest unit.
    keep: Duration,
    /// Hard cap whatever the bitrate: a camera misconfigured at 50 Mb/s
    /// must not take the gateway's memory.
    max_bytes: usize,
    /// The stream attempt the units belong to; a new one empties the ring.
    stream: u64,
    /// Bumped when timestamps jump back within one attempt (a camera that
    /// reset its clock), or when the only group of pictures had to go:
    /// spans of the old timeline end there.
    epoch: u64,
    /// Why the ring last started afresh: what the spans it cut short say.
    restarted: &'static str,
    /// Set while the ring waits for a keyframe after dropping its only
    /// group of pictures: why a clip asked for now finds no video.
    waiting: Option<&'static str>,
    /// Set when the camera will send no more units (a file that ended).
    pub finished: bool,
}

/// A span cut from the ring: whole units from a keyframe on, in decode
/// order. It grows as video arrives until a unit past its end is seen.
#[derive(Debug, Clone, Default)]
pub struct Span {
    pub stream: u64,
    pub units: Vec<EncodedUnit>,
    /// Arrival number of the last unit taken.
    last: Option<u64>,
    /// No more units will be taken: a unit past the end arrived, or the
    /// span was cut short (`short` says why).
    pub closed: bool,
    pub short: Option<&'static str>,
    epoch: u64,
}

/// How far past its end a span may run to finish a group of reordered frames.
const REORDER_LIMIT: Duration = Duration::from_secs(2);
const STREAM_RESTARTED: &str = "the camera's stream restarted before the end of the clip";
const LONE_GROUP_DROPPED: &str = "the camera sent no keyframe for too long (a stream without regular keyframes): the buffer dropped its video and waits for the next keyframe";

impl Span {
    /// Whether the frames held show without a gap: their presentation
    /// times are as many consecutive frame slots as there are frames.
    fn displays_whole(&self) -> bool {
        let n = self.units.len();
        let (Some(first), Some(last)) = (self.start(), self.end()) else {
            return true;
        };
        if n < 2 {
            return true;
        }
        let pts = self.units.iter().filter_map(|u| u.pts);
        let (Some(min), Some(max)) = (pts.clone().min(), pts.max()) else {
            return true;
        };
        // Open-GOP streams may end a span on a unit shown before its first.
        let Some(spread) = last.checked_sub(first) else {
            return false;
        };
        let slot = spread / (n as u32 - 1);
        max - min <= slot * (n as u32 - 1) + slot / 2
    }

    pub fn start(&self) -> Option<Duration> {
        self.units.first().and_then(EncodedUnit::time)
    }

    pub fn end(&self) -> Option<Duration> {
        self.units.last().and_then(EncodedUnit::time)
    }
}

impl Ring {
    pub fn new(keep: Duration, max_bytes: usize) -> Self {
        Self {
            units: VecDeque::new(),
            next: 0,
            bytes: 0,
            keep,
            max_bytes,
            stream: 0,
            epoch: 0,
            restarted: STREAM_RESTARTED,
            waiting: None,
            finished: false,
        }
    }

    pub fn push(&mut self, unit: EncodedUnit) {
        let jumped_back =
            matches!((unit.time(), self.newest()), (Some(t), Some(n)) if t + REORDER_LIMIT < n);
        if unit.stream != self.stream || jumped_back {
            self.start_afresh(STREAM_RESTARTED);
            self.stream = unit.stream;
        }
        self.finished = false;
        // Without a time a unit cannot be placed in a clip; without a
        // keyframe before it, it cannot be decoded.
        if unit.time().is_none() || (self.units.is_empty() && !unit.keyframe) {
            return;
        }
        if unit.keyframe {
            self.waiting = None;
        }
        self.bytes += unit.data.len();
        self.units.push_back((self.next, unit));
        self.next += 1;
        self.trim();
    }

    /// Empties the ring: the spans cut from it end, saying `why`.
    fn start_afresh(&mut self, why: &'static str) {
        self.units.clear();
        self.bytes = 0;
        self.epoch += 1;
        self.restarted = why;
    }

    fn trim(&mut self) {
        let Some(newest) = self.newest() else {
            return;
        };
        let horizon = newest.saturating_sub(self.keep);
        // Drop the oldest group of pictures while the next one still
        // starts early enough (or the ring is over its byte cap).
        loop {
            let Some(next_key) = self.units.iter().skip(1).position(|(_, u)| u.keyframe) else {
                return self.drop_lone_group(horizon);
            };
            let next_key = next_key + 1;
            let next_time = self.units[next_key].1.time().unwrap_or_default();
            if next_time > horizon && self.bytes <= self.max_bytes {
                return;
            }
            for (_, u) in self.units.drain(..next_key) {
                self.bytes -= u.data.len();
            }
        }
    }

    /// A lone group of pictures cannot lose its front and still decode, so
    /// over the byte cap, or spanning twice the time kept, it goes whole
    /// and the ring starts again at the next keyframe. Twice: a camera
    /// whose keyframes are merely far apart (a "smart" encoder on a still
    /// scene) still gets its clips from the keyframe before; a group that
    /// long is a stream without regular keyframes, whose clips would only
    /// grow.
    fn drop_lone_group(&mut self, horizon: Duration) {
        let oldest = self.units.front().and_then(|(_, u)| u.time());
        let too_long = oldest.is_some_and(|t| t + self.keep < horizon);
        if self.bytes > self.max_bytes || too_long {
            self.start_afresh(LONE_GROUP_DROPPED);
            self.waiting = Some(LONE_GROUP_DROPPED);
        }
    }

    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Why the ring holds no video now, when it dropped its only group of
    /// pictures and waits for the next keyframe.
    pub fn waiting(&self) -> Option<&'static str> {
        self.waiting
    }

    pub fn newest(&self) -> Option<Duration> {
        self.units.back().and_then(|(_, u)| u.time())
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The units from the last keyframe at or before `from` (or the oldest
    /// keyframe, when the ring starts later) up to `to`, as far as they
    /// have arrived.
    pub fn cut(&self, from: Duration, to: Duration) -> Span {
        let start = self
            .units
            .iter()
            .rposition(|(_, u)| u.keyframe && u.time().is_some_and(|t| t <= from))
            .unwrap_or(0);
        let mut span = Span {
            stream: self.stream,
            epoch: self.epoch,
            ..Span::default()
        };
        self.take(&mut span, start, to);
        span
    }

    /// Adds what arrived since to a span of the same stream.
    pub fn extend(&self, span: &mut Span, to: Duration) {
        if span.closed {
            return;
        }
        let mut cut_short = |why| {
            span.closed = true;
            span.short = Some(why);
        };
        if span.stream != self.stream {
            return cut_short(STREAM_RESTARTED);
        }
        if span.epoch != self.epoch {
            return cut_short(self.restarted);
        }
        // A span that took nothing yet is cut afresh by its owner.
        if let Some(last) = span.last {
            if self.units.front().is_some_and(|(n, _)| *n > last + 1) {
                return cut_short("video after this point left the buffer before it was saved");
            }
            let start = self.units.partition_point(|(n, _)| *n <= last);
            self.take(span, start, to);
        }
    }

    /// Takes units in arrival order from `start` while they are not past
    /// `to`; the first one past it closes the span. With B-frames, decode
    /// order runs ahead of display order, so the span goes on past `to`
    /// until every frame it holds can be shown (MP4 players cut a frame
    /// displayed after the last decode time).
    fn take(&self, span: &mut Span, start: usize, to: Duration) {
        for (n, u) in self.units.iter().skip(start) {
            let past = u.time().is_none_or(|t| t > to);
            if past && (span.displays_whole() || u.time().is_none_or(|t| t > to + REORDER_LIMIT)) {
                span.closed = true;
                return;
            }
            span.units.push(u.clone());
            span.last = Some(*n);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A picture of `stream` at `ms`, 40 ms long, arriving now.
    pub(in crate::evidence) fn unit(stream: u64, ms: u64, keyframe: bool) -> EncodedUnit {
        EncodedUnit {
            stream,
            format: "video/x-h264".into(),
            data: vec![0u8; 100].into(),
            pts: Some(Duration::from_millis(ms)),
            dts: Some(Duration::from_millis(ms)),
            duration: Some(Duration::from_millis(40)),
            keyframe,
            arrived: std::time::SystemTime::now(),
        }
    }

    /// 25 fps, a keyframe every second.
    fn fill(ring: &mut Ring, stream: u64, seconds: u64) {
        for i in 0..seconds * 25 {
            ring.push(unit(stream, i * 40, i % 25 == 0));
        }
    }

    #[test]
    fn keeps_whole_groups_of_pictures_for_the_configured_time() {
        let mut ring = Ring::new(Duration::from_secs(5), usize::MAX);
        fill(&mut ring, 1, 20);
        let first = &ring.units[0].1;
        assert!(first.keyframe);
        let span = ring.newest().unwrap() - first.time().unwrap();
        assert!(
            span >= Duration::from_secs(5) && span < Duration::from_secs(6),
            "{span:?}"
        );
    }

    #[test]
    fn a_cut_starts_at_the_keyframe_before_it() {
        let mut ring = Ring::new(Duration::from_secs(30), usize::MAX);
        fill(&mut ring, 1, 10);
        let span = ring.cut(Duration::from_millis(3500), Duration::from_millis(6000));
        assert_eq!(span.start(), Some(Duration::from_secs(3)));
        assert!(span.units[0].keyframe);
        assert_eq!(span.end(), Some(Duration::from_secs(6)));
        assert_eq!(span.units.len(), 76);
        assert!(span.closed);
    }

    #[test]
    fn a_span_grows_in_arrival_order_until_its_end_arrives() {
        let mut ring = Ring::new(Duration::from_secs(30), usize::MAX);
        fill(&mut ring, 1, 4);
        let mut span = ring.cut(Duration::from_millis(3500), Duration::from_millis(6000));
        assert!(!span.closed);
        // A unit with an out-of-order time must not be skipped or reordered.
        ring.push(unit(1, 4100, false));
        ring.push(unit(1, 4000, false));
        for i in 105..175 {
            ring.push(unit(1, i * 40, i % 25 == 0));
        }
        ring.extend(&mut span, Duration::from_millis(6000));
        assert!(span.closed);
        let times: Vec<u64> = span
            .units
            .iter()
            .map(|u| u.pts.unwrap().as_millis() as u64)
            .collect();
        assert_eq!(&times[25..27], &[4100, 4000]);
        assert_eq!(*times.last().unwrap(), 6000);
    }

    #[test]
    fn a_stream_that_joins_mid_group_starts_at_its_first_keyframe() {
        let mut ring = Ring::new(Duration::from_secs(30), usize::MAX);
        ring.push(unit(1, 0, false));
        ring.push(unit(1, 40, false));
        ring.push(unit(1, 80, true));
        assert_eq!(ring.units.len(), 1);
        assert!(ring.units[0].1.keyframe);
    }

    #[test]
    fn a_span_ends_where_its_reordered_frames_are_all_shown() {
        // Shown I0 B1 B2 P3 B4 B5 P6 …, decoded I0 P3 B1 B2 P6 B4 B5 …
        let mut ring = Ring::new(Duration::from_secs(30), usize::MAX);
        for i in 0..60u64 {
            let dts = i * 40;
            let shown = match i {
                0 => 0,
                _ => {
                    let (group, r) = ((i - 1) / 3, (i - 1) % 3);
                    [3 * group + 3, 3 * group + 1, 3 * group + 2][r as usize]
                }
            };
            let pts = (shown + 1) * 40;
            let mut u = unit(1, dts, i == 0);
            u.pts = Some(Duration::from_millis(pts));
            ring.push(u);
        }
        let span = ring.cut(Duration::ZERO, Duration::from_millis(1000));
        assert!(span.closed);
        let mut shown: Vec<u64> = span
            .units
            .iter()
            .map(|u| u.pts.unwrap().as_millis() as u64)
            .collect();
        shown.sort();
        let expected: Vec<u64> = (1..=shown.len() as u64).map(|i| i * 40).collect();
        assert_eq!(shown, expected, "a frame is missing from the shown span");
        assert!(*shown.last().unwrap() >= 1000);
    }

    #[test]
    fn a_new_stream_attempt_starts_afresh() {
        let mut ring = Ring::new(Duration::from_secs(30), usize::MAX);
        fill(&mut ring, 1, 3);
        fill(&mut ring, 2, 1);
        assert_eq!(ring.stream(), 2);
        assert_eq!(ring.units.len(), 25);
    }

    /// A camera that sends a keyframe only when its stream starts
    /// (intra refresh): one group of pictures that never ends.
    #[test]
    fn a_lone_group_of_pictures_cannot_grow_past_the_cap() {
        let cap = 100 * 25 * 3;
        let mut ring = Ring::new(Duration::from_secs(60), cap);
        ring.push(unit(1, 0, true));
        let mut span = ring.cut(Duration::ZERO, Duration::from_secs(60));
        for i in 1..25 * 60 {
            ring.push(unit(1, i * 40, false));
            assert!(
                ring.bytes() <= cap,
                "{} bytes after {i} units",
                ring.bytes()
            );
        }
        // Emptied, and it takes nothing it could not decode.
        assert_eq!(ring.bytes(), 0);
        assert!(ring.waiting().is_some());
        // The span being recorded ends there, and says why.
        ring.extend(&mut span, Duration::from_secs(60));
        assert!(span.closed);
        assert!(
            span.short.unwrap().contains("no keyframe"),
            "{:?}",
            span.short
        );
        // The next keyframe starts it again.
        ring.push(unit(1, 60_000, true));
        ring.push(unit(1, 60_040, false));
        assert_eq!(ring.units.len(), 2);
        assert!(ring.units[0].1.keyframe);
        assert!(ring.waiting().is_none());
    }

    #[test]
    fn a_lone_group_goes_when_it_spans_twice_the_time_kept() {
        let mut ring = Ring::new(Duration::from_secs(5), usize::MAX);
        // Keyframes 9 s apart: more than the 5 s kept, still clipped.
        for i in 0..25 * 9 {
            ring.push(unit(1, i * 40, i == 0));
        }
        assert_eq!(ring.units.len(), 25 * 9);
        assert!(ring.units[0].1.keyframe);
        // No keyframe at all: gone once it spans more than 10 s.
        let mut ring = Ring::new(Duration::from_secs(5), usize::MAX);
        for i in 0..25 * 20 {
            ring.push(unit(1, i * 40, i == 0));
            assert!(
                ring.units.len() <= 25 * 10 + 1,
                "{} units after {i}",
                ring.units.len()
            );
        }
        assert!(ring.waiting().is_some());
    }

    #[test]
    fn the_byte_cap_wins_over_the_time() {
        let mut ring = Ring::new(Duration::from_secs(60), 100 * 25 * 3);
        fill(&mut ring, 1, 20);
        assert!(ring.bytes() <= 100 * 25 * 3, "{}", ring.bytes());
        assert!(ring.units[0].1.keyframe);
    }
}
