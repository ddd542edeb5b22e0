//! When each picture reached the camera's pipeline, by presentation time.
//!
//! A frame is pulled from the sink after the queue before the decoder, the
//! decoder and the sink's few held frames; its frame-to-event latency, and
//! its capture time, start earlier, when its access unit came out of the
//! depayloader. Pictures keep their presentation time through decoding,
//! so the stamp is found again by it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use gstreamer as gst;
use gstreamer::prelude::*;

/// Stamps kept: more pictures than lie between the stamp and the sink
/// (a second in the queue at 60 fps, the decoder's delay, the sink's).
const KEPT: usize = 128;

#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<VecDeque<(u64, SystemTime)>>>);

impl Arrivals {
    /// Stamps every buffer that passes `pad` with the wall-clock time.
    pub fn stamp_at(&self, pad: &gst::Pad) {
        let stamps = self.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                stamps.record(pts.nseconds(), SystemTime::now());
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn record(&self, pts: u64, at: SystemTime) {
        let mut stamps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if stamps.len() == KEPT {
            stamps.pop_front();
        }
        stamps.push_back((pts, at));
    }

    /// When the picture of presentation time `pts` arrived, if it was seen.
    pub fn of(&self, pts: u64) -> Option<SystemTime> {
        let stamps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        stamps
            .iter()
            .rev()
            .find(|(p, _)| *p == pts)
            .map(|(_, at)| *at)
    }
}

/// Pictures arrive in decoding order; a B-frame shown before the picture
/// that arrived ahead of it would make that one's time earlier than its
/// own, so a capture time a little before the last one (`last`) is taken
/// as the last. A clock stepped back (NTP correcting a gateway that booted
/// on local time) is another matter: held at the last time, every frame
/// would carry one frozen instant for as long as the step.
pub fn no_earlier(arrived: SystemTime, last: SystemTime) -> SystemTime {
    const REORDER: std::time::Duration = std::time::Duration::from_secs(1);
    match last.duration_since(arrived) {
        Ok(back) if back < REORDER => last,
        _ => arrived,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn capture_times_hold_through_reordering_but_follow_a_clock_step() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ms = Duration::from_millis;
        assert_eq!(no_earlier(t + ms(40), t), t + ms(40));
        assert_eq!(no_earlier(t - ms(80), t), t, "a B-frame's reordering");
        let stepped = t - Duration::from_secs(7 * 3600);
        assert_eq!(no_earlier(stepped, t), stepped, "the clock set back 7 h");
    }

    #[test]
    fn a_picture_is_found_by_its_time_and_old_ones_go() {
        let a = Arrivals::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for i in 0..(KEPT as u64 + 10) {
            a.record(i * 40, t0 + Duration::from_millis(i));
        }
        assert_eq!(a.of(20 * 40), Some(t0 + Duration::from_millis(20)));
        assert_eq!(a.of(0), None, "the oldest stamps make room");
        assert_eq!(a.of(41), None);
    }
}
