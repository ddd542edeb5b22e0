//! Pictures the decoder never needs to see: H.264 pictures that no other
//! picture refers to (every slice has `nal_ref_idc` 0), when they will not
//! be due for analysis either.
//!
//! A camera analysed at 5 frames a second of a 25 fps stream throws most
//! decoded frames away, and decoding is the largest cost a software-decoding
//! gateway has. A reference picture must be decoded for the pictures that
//! refer to it; a non-reference one (most B-frames, and the disposable
//! frames of cameras with temporal layers) can simply not be decoded, as
//! FFmpeg's `skip_frame=nonref` does for every such picture. Streams
//! without such pictures (most IP cameras send I and P frames only) lose
//! nothing and gain nothing. The evidence clip is cut from the encoded
//! stream before the decoder, so it keeps every frame.
//!
//! H.265 is left alone: its sub-layer non-reference pictures may still be
//! referred to by higher temporal layers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

/// How the NAL units of an access unit are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalFormat {
    /// Start codes (`00 00 01`), as RTSP cameras send.
    AnnexB,
    /// Big-endian length prefixes of 1, 2 or 4 bytes, as MP4 stores them.
    Avc { length_size: usize },
}

impl NalFormat {
    /// The format of H.264 caps; None for any other codec, or caps that do
    /// not say.
    pub fn of_h264_caps(caps: &gst::CapsRef) -> Option<Self> {
        let s = caps.structure(0)?;
        // Fields coded as pictures of their own (interlaced video) would be
        // taken for whole pictures, and one field of a due frame dropped.
        if s.name() != "video/x-h264"
            || s.get::<&str>("interlace-mode")
                .is_ok_and(|m| m != "progressive")
        {
            return None;
        }
        match s.get::<&str>("stream-format").ok()? {
            "byte-stream" => Some(NalFormat::AnnexB),
            "avc" | "avc3" => {
                let codec_data = s.get::<gst::Buffer>("codec_data").ok()?;
                let map = codec_data.map_readable().ok()?;
                // avcC: lengthSizeMinusOne in the low two bits of byte 4.
                let length_size = usize::from(*map.get(4)? & 0x03) + 1;
                (length_size != 3).then_some(NalFormat::Avc { length_size })
            }
            _ => None,
        }
    }
}

/// Calls `f` with the first byte (the header) of each NAL unit of an
/// access unit, without allocating: this runs on every picture. None when
/// the lengths do not add up.
fn for_each_nal_header(au: &[u8], format: NalFormat, mut f: impl FnMut(u8)) -> Option<()> {
    match format {
        // Emulation prevention keeps `00 00 01` out of NAL payloads, so
        // every occurrence starts a unit.
        NalFormat::AnnexB => {
            let mut i = 0;
            while i + 3 < au.len() {
                if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
                    f(au[i + 3]);
                    i += 3;
                } else {
                    i += 1;
                }
            }
        }
        NalFormat::Avc { length_size } => {
            let mut i = 0;
            while i < au.len() {
                let len = au
                    .get(i..i + length_size)?
                    .iter()
                    .fold(0usize, |n, b| n << 8 | usize::from(*b));
                let start = i + length_size;
                if len == 0 || start + len > au.len() {
                    return None;
                }
                f(au[start]);
                i = start + len;
            }
        }
    }
    Some(())
}

/// Whether an H.264 access unit is a picture no other picture refers to,
/// and carries nothing else the decoder keeps: it has slices, and no unit
/// of it has a non-zero `nal_ref_idc` (a camera may send a new picture
/// parameter set with a B-picture; dropped, the pictures after it that use
/// it would not decode).
pub fn is_non_reference(au: &[u8], format: NalFormat) -> bool {
    let (mut slices, mut referenced) = (0, 0);
    let whole = for_each_nal_header(au, format, |header| {
        // Slice types 1 to 5: non-IDR slices, data partitions A to C, IDR slices.
        if (1..=5).contains(&(header & 0x1f)) {
            slices += 1;
        }
        if header & 0x60 != 0 {
            referenced += 1;
        }
    });
    whole.is_some() && slices > 0 && referenced == 0
}

/// The analysis schedule as the decoder's input sees it. Shared between
/// the camera's loop, which moves it on as it takes due frames, and the
/// probe at the decoder's input, which runs a few pictures ahead of it.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Nanoseconds of stream time of the next due slot; 0: not known, any
    /// picture may be due.
    next_due: Arc<AtomicU64>,
    interval: u64,
    /// Presentation times of the last pictures let through to the decoder.
    passed: Arc<Mutex<VecDeque<u64>>>,
    skipped: Arc<AtomicU64>,
}

/// Enough pictures to cover one analysis slot at any frame rate a camera sends.
const PASSED_KEPT: usize = 32;

impl Schedule {
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            next_due: Arc::default(),
            interval: interval.as_nanos() as u64,
            passed: Arc::default(),
            skipped: Arc::default(),
        }
    }

    /// Where a picture shown at `pts` stands against the slots, which
    /// start from a picture's own time. Pictures are seen an eighth of an
    /// interval late: a camera's timestamps jitter by a few milliseconds,
    /// and a camera analysed at its own frame rate would otherwise see every
    /// picture shown a little early miss its slot, then count it missed.
    fn seen_at(&self, pts: u64) -> u64 {
        pts + self.interval / 8
    }

    /// Whether the picture shown at `pts` is due for analysis: the first
    /// at or after the next slot. If it is, returns how many slots passed
    /// without a picture and moves on to the next slot. A stream that jumps
    /// back (a camera restarting its clock) starts the schedule again.
    pub fn take(&self, pts: gst::ClockTime) -> Option<u64> {
        let (shown, interval) = (pts.nseconds(), self.interval.max(1));
        let pts = self.seen_at(shown);
        let mut next = self.next_due.load(Ordering::Relaxed);
        if next != 0 && pts + interval * 2 < next {
            self.restart();
            next = 0;
        }
        if next != 0 && pts < next {
            return None;
        }
        // Slots keep their grid: the picture taken fills the slot it falls
        // in, and the next one due is the slot after that one. (Moving the
        // grid to this picture would make the very next picture due: after
        // a stretch of overload, two analyses 40 ms apart.)
        let (missed, from) = if next == 0 {
            (0, shown)
        } else {
            let missed = (pts - next) / interval;
            (missed, next + missed * interval)
        };
        self.next_due.store(from + interval, Ordering::Relaxed);
        Some(missed)
    }

    /// The schedule starts again (a looped file, a camera that reset its
    /// clock): any picture may be due, and the pictures let through on the
    /// old timeline say nothing.
    pub fn restart(&self) {
        self.passed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.next_due.store(0, Ordering::Relaxed);
    }

    /// Pictures left undecoded since the last call.
    pub fn take_skipped(&self) -> u64 {
        self.skipped.swap(0, Ordering::Relaxed)
    }

    /// Whether the camera's loop will surely not take a picture shown at
    /// `pts`. The loop takes, for each slot, the first picture shown at or
    /// after it; slots follow each other at the analysis interval. So a
    /// picture is not due when it is shown before the next slot, or when a
    /// picture already let through is shown in the same slot before it.
    /// Nothing is guessed from frame rates or durations: live cameras'
    /// timestamps jitter.
    fn not_due(&self, pts: u64) -> bool {
        let pts = self.seen_at(pts);
        let next = self.next_due.load(Ordering::Relaxed);
        if next == 0 {
            return false;
        }
        if pts < next {
            return true;
        }
        let slot = next + (pts - next) / self.interval.max(1) * self.interval;
        let passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        passed.iter().any(|&q| slot <= q && q < pts)
    }

    fn let_through(&self, pts: u64) {
        let pts = self.seen_at(pts);
        let mut passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if passed.len() == PASSED_KEPT {
            passed.pop_front();
        }
        passed.push_back(pts);
    }

    /// Drops, at `decoder`'s input, the H.264 pictures that no other
    /// picture refers to and that will not be due. Buffers without a
    /// presentation time, other codecs and unreadable buffers all pass.
    pub fn skip_undue_non_reference(&self, decoder: &gst::Element) {
        let schedule = self.clone();
        super::drop_at_decoder_input(decoder, move |pad, buffer| {
            let Some(pts) = buffer.pts().map(gst::ClockTime::nseconds) else {
                return false;
            };
            let skip = schedule.not_due(pts)
                && pad
                    .current_caps()
                    .and_then(|caps| NalFormat::of_h264_caps(&caps))
                    .zip(buffer.map_readable().ok())
                    .is_some_and(|(format, map)| is_non_reference(&map, format));
            if skip {
                schedule.skipped.fetch_add(1, Ordering::Relaxed);
            } else {
                schedule.let_through(pts);
            }
            skip
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NAL headers: nal_ref_idc in bits 5-6, type in bits 0-4.
    const IDR: u8 = 0x65;
    const REF_SLICE: u8 = 0x41;
    const NONREF_SLICE: u8 = 0x01;
    const SEI: u8 = 0x06;
    const SPS: u8 = 0x67;
    const PPS: u8 = 0x68;

    fn annex_b(headers: &[u8]) -> Vec<u8> {
        headers
            .iter()
            .flat_map(|h| [0, 0, 0, 1, *h, 0x88, 0x84, 0x00])
            .collect()
    }

    fn avc(headers: &[u8], length_size: usize) -> Vec<u8> {
        headers
            .iter()
            .flat_map(|h| {
                let mut unit = vec![0; length_size - 1];
                unit.extend([4, *h, 0x88, 0x84, 0x00]);
                unit
            })
            .collect()
    }

    #[test]
    fn only_pictures_with_no_reference_slice_are_non_reference() {
        for (headers, non_ref) in [
            (&[SEI, NONREF_SLICE][..], true),
            (&[NONREF_SLICE, NONREF_SLICE], true),
            (&[SEI, REF_SLICE], false),
            (&[NONREF_SLICE, REF_SLICE], false),
            (&[IDR], false),
            // Parameter sets sent with a B-picture: the decoder keeps them.
            (&[SPS, PPS, NONREF_SLICE], false),
            (&[PPS, NONREF_SLICE], false),
            // No slice at all (parameter sets, SEI only): never skipped.
            (&[SEI], false),
            (&[], false),
        ] {
            assert_eq!(
                is_non_reference(&annex_b(headers), NalFormat::AnnexB),
                non_ref,
                "{headers:02x?} annex B"
            );
            for length_size in [1, 2, 4] {
                assert_eq!(
                    is_non_reference(&avc(headers, length_size), NalFormat::Avc { length_size }),
                    non_ref,
                    "{headers:02x?} avc {length_size}"
                );
            }
        }
    }

    #[test]
    fn units_whose_lengths_do_not_add_up_are_kept() {
        let mut au = avc(&[NONREF_SLICE], 4);
        au.push(0);
        assert!(!is_non_reference(&au, NalFormat::Avc { length_size: 4 }));
        au.truncate(6);
        assert!(!is_non_reference(&au, NalFormat::Avc { length_size: 4 }));
    }

    #[test]
    fn the_first_picture_at_or_after_each_slot_is_taken() {
        let ms = gst::ClockTime::from_mseconds;
        let schedule = Schedule::new(std::time::Duration::from_millis(200));
        assert_eq!(schedule.take(ms(1000)), Some(0));
        assert_eq!(schedule.take(ms(1100)), None);
        assert_eq!(schedule.take(ms(1250)), Some(0));
        // The slots at 1.4 and 1.6 s passed without a picture.
        assert_eq!(schedule.take(ms(1850)), Some(2));
        // That picture fills the 1.8 s slot: the next due is at 2 s, not
        // the picture right after it.
        assert_eq!(schedule.take(ms(1900)), None);
        assert_eq!(schedule.take(ms(2010)), Some(0));
        // A camera that restarted its clock: the schedule starts again.
        assert_eq!(schedule.take(ms(100)), Some(0));
        assert_eq!(schedule.take(ms(200)), None);
        assert_eq!(schedule.take(ms(300)), Some(0));
    }

    #[test]
    fn a_camera_analysed_at_its_own_rate_misses_nothing_for_jitter() {
        const MS: u64 = 1_000_000;
        // 25 fps analysed at 25 fps, timestamps a few milliseconds off.
        let schedule = Schedule::new(std::time::Duration::from_millis(40));
        let early_or_late_ms = [0, -3, 2, -1, 3, -2];
        for i in 0..100u64 {
            let off = early_or_late_ms[i as usize % early_or_late_ms.len()];
            let pts = (1000 + i * 40).saturating_add_signed(off) * MS;
            assert!(!schedule.not_due(pts), "picture {i} is due");
            schedule.let_through(pts);
            assert_eq!(
                schedule.take(gst::ClockTime::from_nseconds(pts)),
                Some(0),
                "picture {i}"
            );
        }
    }

    #[test]
    fn a_picture_is_not_due_before_the_slot_or_after_one_already_on_its_way() {
        const MS: u64 = 1_000_000;
        // 5 analysed frames a second; the next slot at 1 s.
        let schedule = Schedule::new(std::time::Duration::from_millis(200));
        assert!(!schedule.not_due(500 * MS), "no slot known yet");
        // A picture at 0.8 s taken: the next slot at 1 s.
        assert_eq!(schedule.take(gst::ClockTime::from_mseconds(800)), Some(0));
        // A 30 fps camera whose timestamps jitter by a few milliseconds,
        // every picture a non-reference one: the first in each slot goes through.
        let jitter = [0, 3, 7, 2, 9, 1];
        let mut through = Vec::new();
        for i in 0..45u64 {
            let pts = i * 100 * MS / 3 + jitter[i as usize % jitter.len()] * MS;
            if !schedule.not_due(pts) {
                schedule.let_through(pts);
                through.push(pts / MS);
            }
        }
        assert_eq!(through, [1000, 1200, 1400]);
        // In decode order a later picture may come first: an earlier one
        // in the same slot still goes through, and is the one taken.
        let schedule = Schedule::new(std::time::Duration::from_millis(200));
        // A picture at 0.8 s taken: the next slot at 1 s.
        assert_eq!(schedule.take(gst::ClockTime::from_mseconds(800)), Some(0));
        schedule.let_through(1120 * MS);
        assert!(!schedule.not_due(1040 * MS));
        schedule.let_through(1040 * MS);
        assert!(schedule.not_due(1080 * MS));
        assert!(schedule.not_due(960 * MS));
        // The timeline starts again (a looped file): the first slot's
        // pictures are due again, whatever went through before.
        schedule.restart();
        assert!(!schedule.not_due(1080 * MS));
        // A picture at 0.8 s taken: the next slot at 1 s.
        assert_eq!(schedule.take(gst::ClockTime::from_mseconds(800)), Some(0));
        assert!(!schedule.not_due(1080 * MS));
    }

    #[test]
    fn the_format_comes_from_h264_caps_only() {
        crate::ingest::init_gstreamer().unwrap();
        let caps = |s: &str| s.parse::<gst::Caps>().unwrap();
        assert_eq!(
            NalFormat::of_h264_caps(&caps("video/x-h264,stream-format=byte-stream")),
            Some(NalFormat::AnnexB)
        );
        assert_eq!(
            NalFormat::of_h264_caps(&caps(
                "video/x-h264,stream-format=avc,codec_data=(buffer)01640028ffe1"
            )),
            Some(NalFormat::Avc { length_size: 4 })
        );
        assert_eq!(
            NalFormat::of_h264_caps(&caps("video/x-h265,stream-format=byte-stream")),
            None
        );
        assert_eq!(
            NalFormat::of_h264_caps(&caps("video/x-h264,stream-format=avc")),
            None
        );
        // Interlaced: fields may be pictures of their own; nothing is skipped.
        assert_eq!(
            NalFormat::of_h264_caps(&caps(
                "video/x-h264,stream-format=byte-stream,interlace-mode=mixed"
            )),
            None
        );
        assert_eq!(
            NalFormat::of_h264_caps(&caps(
                "video/x-h264,stream-format=byte-stream,interlace-mode=progressive"
            )),
            Some(NalFormat::AnnexB)
        );
    }
}
