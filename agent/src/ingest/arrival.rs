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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
