//! A camera the gateway cannot decode in real time (one camera too many,
//! or a hardware decoder that fell back to software) must not fall further
//! and further behind: the queue before its decoder would fill, then the
//! RTSP source's buffers behind it, and events would come seconds late, then
//! memory would run out for every camera. So when the pictures reaching the
//! decoder are [`MAX_LAG`] behind real time, they are dropped, up to the
//! next keyframe (the pictures in between refer to the ones dropped), until
//! a keyframe comes within [`RESUME_LAG`]: the analysis skips a few seconds
//! of that camera, and the rest stays live. The evidence clip is cut from
//! the encoded stream before the decoder, so it keeps every picture.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

/// Behind real time by this much, a camera's decoder drops pictures. Well
/// above what a camera keeping up shows: the RTSP source's 200 ms of
/// latency, and the pictures a decoder holds to put B-frames in order.
pub const MAX_LAG: Duration = Duration::from_secs(2);
/// It decodes again from the first keyframe at most this far behind...
pub const RESUME_LAG: Duration = Duration::from_secs(1);
/// ...or from the first keyframe after dropping this long: on a narrow
/// link a keyframe's own transfer may keep every one more than
/// [`RESUME_LAG`] behind, and the camera must not go dark for good.
pub const MAX_CATCH_UP: Duration = Duration::from_secs(5);
/// At most one warning per camera in this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Decoding,
    /// Dropping every picture up to a keyframe close enough to real time,
    /// since this instant.
    CatchingUp(Instant),
}

impl State {
    /// The state after a picture `lag` behind real time (None: not known)
    /// seen at `now`, and whether that picture is dropped.
    fn next(self, lag: Option<Duration>, keyframe: bool, now: Instant) -> (State, bool) {
        match self {
            State::Decoding if lag.is_some_and(|l| l > MAX_LAG) => (State::CatchingUp(now), true),
            State::Decoding => (State::Decoding, false),
            State::CatchingUp(since)
                if keyframe
                    && (lag.is_none_or(|l| l <= RESUME_LAG)
                        || now.duration_since(since) >= MAX_CATCH_UP) =>
            {
                (State::Decoding, false)
            }
            catching_up => (catching_up, true),
        }
    }
}

/// One camera's catching up, shared between the probe at its decoder's
/// input and the camera's loop, which reports what was dropped.
#[derive(Debug, Clone)]
pub struct CatchUp {
    camera: Arc<str>,
    state: Arc<Mutex<(State, Option<Instant>)>>,
    dropped: Arc<AtomicU64>,
}

impl CatchUp {
    pub fn new(camera: &str) -> Self {
        Self {
            camera: camera.into(),
            state: Arc::new(Mutex::new((State::Decoding, None))),
            dropped: Arc::default(),
        }
    }

    /// Pictures dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Watches the pictures reaching `decoder` against the pipeline's
    /// clock, and drops them while the camera catches up.
    pub fn watch(&self, decoder: &gst::Element) {
        let this = self.clone();
        super::drop_at_decoder_input(decoder, move |pad, buffer| {
            let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            let lag = buffer.pts().and_then(|pts| lag_of(pad, pts));
            let mut guard = this.state.lock().unwrap_or_else(|e| e.into_inner());
            let (state, last_warning) = &mut *guard;
            let (next, drop) = state.next(lag, keyframe, Instant::now());
            if matches!(next, State::CatchingUp(_))
                && *state == State::Decoding
                && last_warning.is_none_or(|w| w.elapsed() >= WARN_EVERY)
            {
                *last_warning = Some(Instant::now());
                tracing::warn!(
                    camera = %this.camera,
                    behind_ms = lag.unwrap_or_default().as_millis() as u64,
                    "decoding fell behind real time: pictures are dropped up to the next keyframe (the evidence keeps them); this gateway has more video than it can decode: fewer cameras, a camera's lower-resolution stream, or a hardware decoder (ingest.decoder)"
                );
            }
            *state = next;
            if drop {
                this.dropped.fetch_add(1, Ordering::Relaxed);
            }
            drop
        });
    }
}

/// How far behind the pipeline's clock a buffer shown at `pts` reaches
/// `pad`; None when the pad has no time segment or no clock runs yet.
fn lag_of(pad: &gst::Pad, pts: gst::ClockTime) -> Option<Duration> {
    let event = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = event.segment().downcast_ref::<gst::ClockTime>()?;
    let at = segment.to_running_time(pts)?;
    let now = pad.parent_element()?.current_running_time()?;
    Some(Duration::from_nanos(now.saturating_sub(at).nseconds()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Option<Duration> = |ms| Some(Duration::from_millis(ms));

    /// Runs pictures (lag, keyframe), 40 ms apart, through the states;
    /// the dropped ones' indices.
    fn dropped(pictures: &[(Option<Duration>, bool)]) -> Vec<usize> {
        let mut state = State::Decoding;
        let mut out = Vec::new();
        let start = Instant::now();
        for (i, &(lag, key)) in pictures.iter().enumerate() {
            let now = start + Duration::from_millis(40 * i as u64);
            let (next, drop) = state.next(lag, key, now);
            state = next;
            if drop {
                out.push(i);
            }
        }
        out
    }

    #[test]
    fn a_camera_keeping_up_loses_nothing() {
        let pictures: Vec<_> = (0..100)
            .map(|i| (S(300 + i % 7 * 50), i % 50 == 0))
            .collect();
        assert!(dropped(&pictures).is_empty());
        // Nor one whose lag is not known (no clock yet).
        assert!(dropped(&[(None, true), (None, false)]).is_empty());
    }

    #[test]
    fn behind_it_drops_up_to_a_keyframe_close_to_real_time() {
        let pictures = [
            (S(400), true),
            (S(1900), false),
            (S(2100), false), // behind: dropped from here
            (S(1500), false), // the pictures after refer to the ones dropped
            (S(1500), true),  // a keyframe, but still more than 1 s behind
            (S(600), false),
            (S(300), true), // decoding again
            (S(300), false),
        ];
        assert_eq!(dropped(&pictures), [2, 3, 4, 5]);
    }

    #[test]
    fn a_camera_whose_keyframes_all_come_late_goes_dark_for_seconds_not_for_good() {
        // Every keyframe (each second) 1.5 s behind: after 5 s of dropping,
        // the next one is decoded.
        let pictures: Vec<_> = (0..250).map(|i| (S(2500), i % 25 == 0)).collect();
        let gone = dropped(&pictures);
        assert_eq!(gone.first(), Some(&0));
        assert!(!gone.contains(&125), "the keyframe after 5 s is decoded");
        assert!(gone.len() < 250);
    }
}
