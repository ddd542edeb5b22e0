//! Passes driven by recorded detections: no models, no video.

use std::time::{Duration, SystemTime};

use super::*;
use crate::frame::{BgrImage, I420Image};
use crate::infer::{Detections, PlateRead};
use crate::ingest::Frame;
use crate::plate::PlateKind;

fn frame(n: u64) -> Frame {
    Frame {
        image: I420Image::new(2, 2, vec![0; 6]).into(),
        stream_time: Some(Duration::from_millis(500 * n)),
        captured_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 500 * n),
        number: n,
        missed_slots: 0,
        skipped: 0,
        behind: 0,
        unchanged: false,
        stream: 1,
    }
}

fn white_crop() -> BgrImage {
    BgrImage::new(128, 64, vec![235; 128 * 64 * 3])
}

fn plate(x: f32, chars: &str) -> PlateRead {
    PlateRead {
        bbox: [x, 100.0, x + 80.0, 130.0],
        corners: [[x, 100.0], [x + 80.0, 100.0], [x + 80.0, 130.0], [x, 130.0]],
        detector_score: 0.9,
        lines: 1,
        chars: chars.into(),
        char_confidences: vec![0.9; chars.len()],
        read_confidence: 0.9,
        sharpness: 200.0,
        crop: white_crop(),
    }
}

fn plates(list: Vec<PlateRead>) -> Detections {
    Detections {
        plates: list,
        ..Default::default()
    }
}

fn chars_of(passes: &[Pass]) -> Vec<String> {
    passes
        .iter()
        .map(|p| match p {
            Pass::Plate(p) => p.vote.chars.clone(),
            Pass::UnreadablePlate(p) => format!("unreadable:{}", p.vote.chars),
            Pass::Face(_) => "face".into(),
        })
        .collect()
}

#[test]
fn one_vehicle_many_frames_one_event_with_the_voted_reading() {
    let mut p = Passes::new(PassConfig::default());
    let reads = ["51A60216", "51A6O216", "5IA60216", "51A60216", "51A80216"];
    let mut out = Vec::new();
    for (i, r) in reads.iter().enumerate() {
        out.extend(p.on_frame(
            &frame(i as u64),
            &plates(vec![plate(100.0 + 20.0 * i as f32, r)]),
        ));
    }
    assert!(out.is_empty(), "no event while the vehicle is in view");
    for i in 5..12 {
        out.extend(p.on_frame(&frame(i), &plates(vec![])));
    }
    assert_eq!(chars_of(&out), vec!["51A60216"]);
    let Pass::Plate(pass) = &out[0] else {
        unreachable!()
    };
    assert_eq!(pass.frames, 5);
    assert_eq!(pass.colour, PlateColour::White);
    assert_eq!(pass.vote.plate.as_ref().unwrap().display, "51A-602.16");
    assert_eq!(p.counters.plate_passes, 1);
}

#[test]
fn the_same_plate_within_the_window_is_the_same_pass() {
    let mut p = Passes::new(PassConfig {
        dedup_window: Duration::from_secs(30),
        ..Default::default()
    });
    let mut out = Vec::new();
    let mut n = 0;
    let mut pass_of = |p: &mut Passes, frames_seen: u64, gap: u64, out: &mut Vec<Pass>| {
        for _ in 0..frames_seen {
            out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, "51A60216")])));
            n += 1;
        }
        for _ in 0..gap {
            out.extend(p.on_frame(&frame(n), &plates(vec![])));
            n += 1;
        }
    };
    pass_of(&mut p, 3, 10, &mut out); // first pass, then gone 5 s
    pass_of(&mut p, 3, 70, &mut out); // back: the same pass; then gone 35 s
    assert_eq!(chars_of(&out), vec!["51A60216"]);
    assert_eq!(p.counters.duplicates_suppressed, 1);
    pass_of(&mut p, 3, 10, &mut out); // after 35 s away: a new pass
    assert_eq!(chars_of(&out), vec!["51A60216", "51A60216"]);
}

#[test]
fn a_parked_vehicle_is_reported_after_max_delay_once() {
    let mut p = Passes::new(PassConfig {
        max_delay: Duration::from_secs(3),
        ..Default::default()
    });
    let mut out = Vec::new();
    for i in 0..20 {
        out.extend(p.on_frame(&frame(i), &plates(vec![plate(100.0, "59KA19166")])));
        if i == 5 {
            assert!(out.is_empty(), "2.5 s in view: not yet");
        }
        if i == 6 {
            assert_eq!(
                chars_of(&out),
                vec!["59KA19166"],
                "reported at 3 s of stream time"
            );
        }
    }
    out.extend(p.finish());
    assert_eq!(
        chars_of(&out),
        vec!["59KA19166"],
        "no second event for the same pass"
    );
}

#[test]
fn unreadable_tracks_are_reported_not_dropped() {
    let mut p = Passes::new(PassConfig::default());
    let mut out = p.on_frame(&frame(0), &plates(vec![plate(100.0, "XX")]));
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["unreadable:XX"]);
    assert_eq!(p.counters.unreadable_plates, 1);

    let mut quiet = Passes::new(PassConfig {
        emit_unreadable: false,
        ..Default::default()
    });
    quiet.on_frame(&frame(0), &plates(vec![plate(100.0, "XX")]));
    assert!(quiet.finish().is_empty());
    assert_eq!(quiet.counters.unreadable_plates, 1, "still counted");
}

#[test]
fn unreadable_tracks_the_detector_doubted_are_dismissed() {
    let config = PassConfig {
        min_read_confidence: 0.6,
        min_unreadable_score: 0.7,
        ..Default::default()
    };
    let badge = |score: f32| {
        let mut p = plate(100.0, "45520006");
        p.detector_score = score;
        p.read_confidence = 0.3;
        p
    };
    let mut p = Passes::new(config.clone());
    // One track over both frames.
    p.on_frame(&frame(0), &plates(vec![badge(0.62)]));
    p.on_frame(&frame(1), &plates(vec![badge(0.68)]));
    assert!(p.finish().is_empty(), "never sure it was a plate");
    assert_eq!(p.counters.dismissed_plate_tracks, 1);
    assert_eq!(p.counters.unreadable_plates, 0);

    // One sure frame is enough: a real plate that cannot be read is reported.
    let mut p = Passes::new(config.clone());
    p.on_frame(&frame(0), &plates(vec![badge(0.62)]));
    p.on_frame(&frame(1), &plates(vec![badge(0.8)]));
    assert_eq!(chars_of(&p.finish()), vec!["unreadable:45520006"]);

    // A doubtful detection that reads as a valid plate is still a plate.
    let mut p = Passes::new(config);
    let mut faint = plate(100.0, "51A60216");
    faint.detector_score = 0.55;
    let mut out = p.on_frame(&frame(0), &plates(vec![faint]));
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["51A60216"]);
}

#[test]
fn a_sure_frame_counts_even_when_its_read_does_not_vote() {
    let mut p = Passes::new(PassConfig {
        min_read_confidence: 0.6,
        min_unreadable_score: 0.7,
        ..Default::default()
    });
    // Sure it is a plate, but the read is too weak to vote...
    let mut sure = plate(100.0, "51A6");
    (sure.detector_score, sure.read_confidence) = (0.9, 0.3);
    // ...then a confident read of nothing valid, with a doubtful box.
    let mut doubtful = plate(100.0, "XX12");
    (doubtful.detector_score, doubtful.read_confidence) = (0.62, 0.65);
    p.on_frame(&frame(0), &plates(vec![sure]));
    p.on_frame(&frame(1), &plates(vec![doubtful]));
    assert_eq!(chars_of(&p.finish()), vec!["unreadable:XX12"]);
}

#[test]
fn a_doubtful_start_does_not_swallow_a_clear_plate_seen_later() {
    let mut p = Passes::new(PassConfig {
        max_delay: Duration::from_secs(3),
        min_read_confidence: 0.6,
        min_unreadable_score: 0.7,
        ..Default::default()
    });
    let mut out = Vec::new();
    // 4 s of a far, doubtful detection (past max_delay)...
    for n in 0..8 {
        let mut far = plate(100.0, "5A");
        (far.detector_score, far.read_confidence) = (0.62, 0.2);
        out.extend(p.on_frame(&frame(n), &plates(vec![far])));
    }
    assert!(out.is_empty(), "{:?}", chars_of(&out));
    // ...then the same vehicle close up.
    for n in 8..12 {
        out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, "51A60216")])));
    }
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["51A60216"]);
    assert_eq!(p.counters.dismissed_plate_tracks, 0);
}

#[test]
fn low_confidence_reads_do_not_vote() {
    let mut p = Passes::new(PassConfig {
        min_read_confidence: 0.5,
        ..Default::default()
    });
    let mut weak = plate(100.0, "51A60216");
    weak.read_confidence = 0.3;
    p.on_frame(&frame(0), &plates(vec![weak]));
    assert_eq!(chars_of(&p.finish()), vec!["unreadable:51A60216"]);
}

#[test]
fn two_vehicles_side_by_side_are_two_passes() {
    let mut p = Passes::new(PassConfig::default());
    for i in 0..4 {
        p.on_frame(
            &frame(i),
            &plates(vec![plate(100.0, "51A60216"), plate(600.0, "51G10209")]),
        );
    }
    let mut got = chars_of(&p.finish());
    got.sort();
    assert_eq!(got, vec!["51A60216", "51G10209"]);
}

#[test]
fn finish_reports_open_tracks_and_a_stream_restart_does_not_rewind_the_clock() {
    let mut p = Passes::new(PassConfig {
        dedup_window: Duration::from_secs(2),
        ..Default::default()
    });
    for i in 0..3 {
        p.on_frame(&frame(i), &plates(vec![plate(100.0, "51A60216")]));
    }
    // The stream restarts (a looping file): timestamps go back to 0.
    let mut out = Vec::new();
    for i in 0..12 {
        out.extend(p.on_frame(&frame(i), &plates(vec![])));
    }
    for i in 0..3 {
        out.extend(p.on_frame(&frame(i), &plates(vec![plate(100.0, "51A60216")])));
    }
    out.extend(p.finish());
    assert_eq!(
        chars_of(&out),
        vec!["51A60216", "51A60216"],
        "time kept moving forward across the restart"
    );
}

#[test]
fn a_track_that_jumps_to_another_vehicle_becomes_two_passes() {
    // Bumper to bumper at a gate: the next car's plate appears where the
    // last one was, and the tracker keeps the box.
    let mut p = Passes::new(PassConfig::default());
    let mut out = Vec::new();
    for i in 0..4 {
        out.extend(p.on_frame(&frame(i), &plates(vec![plate(100.0, "51A60216")])));
    }
    for i in 4..8 {
        out.extend(p.on_frame(&frame(i), &plates(vec![plate(100.0, "51A85325")])));
    }
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["51A60216", "51A85325"]);
    let ids: Vec<u64> = out
        .iter()
        .map(|p| {
            if let Pass::Plate(p) = p {
                p.track_id
            } else {
                0
            }
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn a_misread_for_two_frames_does_not_split_the_pass() {
    let mut p = Passes::new(PassConfig::default());
    let reads = [
        "51A85325", "51A85325", "85B25552", "85B25552", "51A85325", "51A85325",
    ];
    let mut out = Vec::new();
    for (i, r) in reads.iter().enumerate() {
        out.extend(p.on_frame(&frame(i as u64), &plates(vec![plate(100.0, r)])));
    }
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["51A85325"]);
}

#[test]
fn a_plate_in_a_night_mode_frame_has_no_colour() {
    // A yellow plate under infrared light: grey, like a white one.
    let mut p = Passes::new(PassConfig::default());
    let mut grey = frame(0);
    grey.image = I420Image::new(2, 2, vec![90, 90, 90, 90, 128, 128]).into();
    p.on_frame(&grey, &plates(vec![plate(100.0, "51A60216")]));
    let out = p.finish();
    let [Pass::Plate(pass)] = &out[..] else {
        panic!("one pass")
    };
    assert_eq!(pass.colour, PlateColour::Unknown);
}

/// A two-line plate `w` wide and `h` high at `x`.
fn two_line(x: f32, w: f32, h: f32, chars: &str) -> PlateRead {
    let mut p = plate(x, chars);
    p.lines = 2;
    p.bbox = [x, 100.0, x + w, 100.0 + h];
    p.corners = [
        [x, 100.0],
        [x + w, 100.0],
        [x + w, 100.0 + h],
        [x, 100.0 + h],
    ];
    p
}

#[test]
fn a_two_line_plate_with_eight_characters_is_a_motorbike_or_a_car_by_its_shape() {
    let mut p = Passes::new(PassConfig::default());
    // 190 x 140 mm, 330 x 165 mm, and a one-line plate.
    let motorbike = two_line(100.0, 38.0, 28.0, "51G12345");
    let car = two_line(400.0, 66.0, 33.0, "51G12347");
    p.on_frame(
        &frame(0),
        &plates(vec![motorbike, car, plate(900.0, "51G12346")]),
    );
    let out = p.finish();
    let shown: Vec<String> = out
        .iter()
        .map(|p| {
            if let Pass::Plate(p) = p {
                p.vote.plate.as_ref().unwrap().display.clone()
            } else {
                String::new()
            }
        })
        .collect();
    assert_eq!(shown, vec!["51-G1 2345", "51G-123.47", "51G-123.46"]);
}

#[test]
fn the_dedup_memory_forgets_plates_older_than_the_window() {
    let mut p = Passes::new(PassConfig {
        dedup_window: Duration::from_secs(2),
        ..Default::default()
    });
    let mut n = 0;
    for chars in ["51A60216", "51A85325", "51G10209", "59KA19166", "47AD15155"] {
        p.on_frame(&frame(n), &plates(vec![plate(100.0, chars)]));
        n += 1;
        for _ in 0..10 {
            p.on_frame(&frame(n), &plates(vec![]));
            n += 1;
        }
    }
    assert_eq!(p.counters.plate_passes, 5);
    assert!(
        p.recent.len() <= 1,
        "only plates seen within the window are kept: {:?}",
        p.recent
    );
}

#[test]
fn a_track_keeps_one_frame_per_reading_and_its_best_readings() {
    let mut kept = KeptFrames::default();
    // Ten frames of one reading: one frame held, the heaviest.
    for n in 1..=10 {
        kept.offer((true, n as f32), "59KA19166", &frame(n));
    }
    assert_eq!(kept.0.len(), 1);
    assert!(kept.get(10).is_some());
    // Other readings each keep their own heaviest frame, up to three readings.
    kept.offer((true, 4.0), "59KA19168", &frame(11));
    kept.offer((true, 5.0), "59KA19168", &frame(12));
    kept.offer((true, 3.0), "59K419166", &frame(13));
    kept.offer((true, 2.0), "59KA1916", &frame(14));
    let held: Vec<u64> = kept.0.iter().map(|k| k.number).collect();
    assert_eq!(held, [10, 12, 13]);
    // A heavier frame of a held reading replaces it, never another reading's.
    kept.offer((true, 3.5), "59K419166", &frame(15));
    let held: Vec<u64> = kept.0.iter().map(|k| k.number).collect();
    assert_eq!(held, [10, 12, 15]);
    // A read that does not vote never displaces one that does, however
    // sharp: the event's frame is chosen among the reads that vote.
    kept.offer((false, 99.0), "51G12345", &frame(16));
    let held: Vec<u64> = kept.0.iter().map(|k| k.number).collect();
    assert_eq!(held, [10, 12, 15]);
}

/// The agent's thresholds: reads from 0.6 vote; unread tracks are reported
/// only when the detector was once sure (0.7) it saw a plate.
fn agent_thresholds() -> PassConfig {
    PassConfig {
        max_delay: Duration::from_secs(3),
        min_read_confidence: 0.6,
        min_unreadable_score: 0.7,
        ..Default::default()
    }
}

#[test]
fn a_plate_parked_in_view_that_the_detector_doubts_is_reported_in_time_and_held_bounded() {
    let mut p = Passes::new(agent_thresholds());
    let mut parked = plate(100.0, "51G12345");
    parked.detector_score = 0.65;
    let mut out = Vec::new();
    // 3 s is max_delay: the event comes then, not when the car leaves.
    for n in 0..8 {
        out.extend(p.on_frame(&frame(n), &plates(vec![parked.clone()])));
    }
    assert_eq!(chars_of(&out), vec!["51G12345"]);
    // Never read and never sure: held until it ends, but bounded.
    let mut p = Passes::new(agent_thresholds());
    let mut badge = plate(100.0, "XX");
    (badge.detector_score, badge.read_confidence) = (0.65, 0.3);
    for n in 0..(MAX_SIGHTINGS as u64 + 100) {
        assert!(
            p.on_frame(&frame(n), &plates(vec![badge.clone()]))
                .is_empty()
        );
    }
    let held: Vec<usize> = p.plates.values().map(|t| t.sightings.len()).collect();
    assert_eq!(held, vec![MAX_SIGHTINGS]);
    assert!(p.finish().is_empty(), "never sure it was a plate");
}

#[test]
fn a_vehicle_seen_only_weakly_is_one_pass_whatever_its_misreads() {
    let mut p = Passes::new(agent_thresholds());
    let mut out = Vec::new();
    for (n, chars) in ["51G12345", "51G12346", "51G12845", "51G12345"]
        .iter()
        .enumerate()
    {
        let mut far = plate(100.0 + 5.0 * n as f32, chars);
        far.detector_score = 0.55;
        out.extend(p.on_frame(&frame(n as u64), &plates(vec![far])));
    }
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["51G12345"]);
}

#[test]
fn a_plate_reported_unreadable_at_max_delay_is_reported_again_once_read() {
    // Read as it stands, or with a change the grammar forces (an O where
    // only a digit may stand).
    for (close, plate_read) in [("51G12345", "51G12345"), ("51G1234O", "51G12340")] {
        let mut p = Passes::new(agent_thresholds());
        let mut out = Vec::new();
        // Queued far off for 4 s: sure it is a plate, never read.
        for n in 0..8 {
            let mut far = plate(100.0, "51G1Z34");
            far.read_confidence = 0.4;
            out.extend(p.on_frame(&frame(n), &plates(vec![far])));
        }
        let early = chars_of(&out);
        assert!(
            early.len() == 1 && early[0].starts_with("unreadable:"),
            "{early:?}"
        );
        // Then it comes close and reads clearly.
        for n in 8..18 {
            out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, close)])));
        }
        out.extend(p.finish());
        assert_eq!(chars_of(&out), vec![early[0].clone(), plate_read.into()]);
        // Both are the one pass.
        let ids: Vec<u64> = out
            .iter()
            .map(|p| match p {
                Pass::Plate(p) | Pass::UnreadablePlate(p) => p.track_id,
                Pass::Face(_) => 0,
            })
            .collect();
        assert_eq!(ids[0], ids[1]);
        // The plate event replaces the unreadable one.
        assert_eq!(
            plate_pass(&out[1]).supersedes,
            Some(plate_pass(&out[0]).event_id)
        );
    }
}

#[test]
fn a_new_stream_ends_the_old_ones_passes_and_counts_the_time_between() {
    let mut p = Passes::new(PassConfig {
        dedup_window: Duration::from_secs(60),
        ..agent_thresholds()
    });
    let at = |n: u64, stream: u64, wall_offset: Duration| Frame {
        stream,
        captured_at: frame(n).captured_at + wall_offset,
        ..frame(n)
    };
    let mut out = Vec::new();
    for n in 0..3 {
        out.extend(p.on_frame(
            &at(n, 1, Duration::ZERO),
            &plates(vec![plate(100.0, "51G12345")]),
        ));
    }
    assert!(out.is_empty());
    // The camera comes back an hour later, on a new stream whose
    // timestamps start again: another car stands where the first stood.
    let hour = Duration::from_secs(3600);
    out.extend(p.on_frame(&at(0, 2, hour), &plates(vec![plate(100.0, "30A99999")])));
    assert_eq!(
        chars_of(&out),
        vec!["51G12345"],
        "the old stream's pass ends"
    );
    for n in 1..3 {
        out.extend(p.on_frame(&at(n, 2, hour), &plates(vec![plate(100.0, "30A99999")])));
    }
    // And the first car again: an hour is past the dedup window.
    for n in 3..6 {
        out.extend(p.on_frame(&at(n, 2, hour), &plates(vec![plate(700.0, "51G12345")])));
    }
    out.extend(p.finish());
    let mut got = chars_of(&out);
    got.sort();
    assert_eq!(got, vec!["30A99999", "51G12345", "51G12345"]);
}

#[test]
fn vehicles_driving_past_at_two_frames_a_second_are_one_pass_each() {
    // Two cars down one lane, the second two frames (a second) behind the
    // first; their plates (30 px high) move 150 px, five heights, a frame.
    // A misread on the way must not make a pass of its own.
    let at = |y: f32, chars: &str| PlateRead {
        bbox: [400.0, y, 520.0, y + 30.0],
        corners: [[400.0, y], [520.0, y], [520.0, y + 30.0], [400.0, y + 30.0]],
        ..plate(0.0, chars)
    };
    let a = ["51A60216", "51A60216", "51A80216", "51A60216", "51A60216"];
    let b = ["30H12345", "30H12345", "30H12845", "30H12345", "30H12345"];
    let mut p = Passes::new(PassConfig {
        tracker: TrackerConfig::at_fps(2.0),
        dedup_window: Duration::ZERO,
        ..Default::default()
    });
    let mut out = Vec::new();
    for n in 0..16u64 {
        let mut seen = Vec::new();
        for (reads, start) in [(&a, 0), (&b, 2)] {
            let step = n as i64 - start;
            if (0..5).contains(&step) {
                seen.push(at(100.0 + 150.0 * step as f32, reads[step as usize]));
            }
        }
        out.extend(p.on_frame(&frame(n), &plates(seen)));
    }
    let mut got = chars_of(&out);
    got.sort();
    assert_eq!(got, vec!["30H12345", "51A60216"]);
}

#[test]
fn frames_the_motion_gate_found_still_are_not_counted_as_reads_again() {
    // A car stops at a red light; the last frame analysed before the scene
    // went still misread it, and the gate repeats that frame's detections.
    let mut p = Passes::new(PassConfig {
        max_delay: Duration::from_secs(60),
        ..Default::default()
    });
    let mut out = Vec::new();
    let reads = ["51A60216", "51A60216", "51A60216", "51A60216", "51A60218"];
    for (n, r) in reads.iter().enumerate() {
        out.extend(p.on_frame(&frame(n as u64), &plates(vec![plate(100.0, r)])));
    }
    for n in 5..25 {
        let still = Frame {
            unchanged: true,
            ..frame(n)
        };
        out.extend(p.on_frame(&still, &plates(vec![plate(100.0, "51A60218")])));
    }
    assert!(out.is_empty(), "{:?}", chars_of(&out));
    for n in 25..35 {
        out.extend(p.on_frame(&frame(n), &plates(vec![])));
    }
    assert_eq!(chars_of(&out), vec!["51A60216"]);
    let Pass::Plate(pass) = &out[0] else {
        unreachable!()
    };
    assert_eq!(pass.frames, 5);
}

#[test]
fn a_read_of_half_the_plate_is_no_other_vehicle() {
    // A motorbike's lower line hidden by the rider's leg for a few frames:
    // the top line alone, read confidently, must not split the pass (the
    // dedup window, which would hide a second pass of the same plate, off).
    let (full, top) = ("59KA19166", "59KA");
    // Hidden on the way, and hidden from the start.
    for reads in [
        vec![full, full, top, top, top, top, full, full, full, full],
        vec![top, top, top, top, full, full, full, full],
    ] {
        let mut p = Passes::new(PassConfig {
            dedup_window: Duration::ZERO,
            ..agent_thresholds()
        });
        let mut out = Vec::new();
        for (n, r) in reads.iter().enumerate() {
            let mut read = plate(100.0, r);
            read.read_confidence = 0.8;
            out.extend(p.on_frame(&frame(n as u64), &plates(vec![read])));
        }
        out.extend(p.finish());
        assert_eq!(chars_of(&out), vec![full], "{reads:?}");
    }
}

#[test]
fn trimming_a_long_track_keeps_the_detection_that_vouches_for_it() {
    // Hundreds of frames of a plate never read, the detector sure of it on
    // one frame only, the one read worst: the track, trimmed to its bound,
    // is still reported unreadable when it ends, not dismissed.
    let mut p = Passes::new(PassConfig {
        max_delay: Duration::from_secs(3600),
        ..agent_thresholds()
    });
    let mut out = Vec::new();
    for n in 0..(MAX_SIGHTINGS as u64 + 50) {
        let mut seen = plate(100.0, "51G1Z34");
        (seen.detector_score, seen.read_confidence) = if n == 1 { (0.9, 0.1) } else { (0.6, 0.3) };
        out.extend(p.on_frame(&frame(n), &plates(vec![seen])));
    }
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["unreadable:51G1234"]);
}

#[test]
fn the_plates_lines_are_what_most_frames_found_not_the_best_frame_alone() {
    let run = |lines_of: &dyn Fn(u64) -> u8| {
        let mut p = Passes::new(PassConfig::default());
        let mut out = Vec::new();
        for i in 0..5u64 {
            let mut read = plate(100.0, "30TD12345");
            read.lines = lines_of(i);
            if i == 2 {
                // The sharpest, surest frame: the one the pass keeps.
                read.read_confidence = 0.99;
                read.sharpness = 400.0;
            }
            out.extend(p.on_frame(&frame(i), &plates(vec![read])));
        }
        for i in 5..12 {
            out.extend(p.on_frame(&frame(i), &plates(vec![])));
        }
        let [Pass::Plate(pass)] = &out[..] else {
            panic!("{:?}", chars_of(&out))
        };
        let plate = pass.vote.plate.clone().unwrap();
        (pass.vote.chars.clone(), plate.kind)
    };
    // One frame took the motorbike's two-line plate for one line.
    assert_eq!(
        run(&|i| if i == 2 { 1 } else { 2 }),
        ("30TD12345".to_string(), PlateKind::Motorbike)
    );
    // Every frame saw one line: the car series with Đ.
    assert_eq!(run(&|_| 1), ("30TĐ12345".to_string(), PlateKind::Special));
}
/// A plate far off that the detector is sure of but the reader cannot read.
fn far_unreadable(y: f32) -> PlateRead {
    let mut p = plate(100.0, "5IG1Z3");
    p.bbox = [100.0, y, 180.0, y + 30.0];
    p.read_confidence = 0.3;
    p
}

#[test]
fn a_parked_plate_the_detector_finds_on_and_off_is_one_pass() {
    let config = PassConfig {
        tracker: TrackerConfig::at_fps(2.0),
        ..agent_thresholds()
    };
    let mut p = Passes::new(config.clone());
    let mut out = Vec::new();
    let mut n = 0;
    // Seen, then hidden (people walking past, the detector's doubt), for
    // seconds at a time over two minutes.
    for (seen, gone) in [(8, 6), (3, 12), (4, 3), (10, 18), (2, 9), (6, 30)] {
        for _ in 0..2 * seen {
            out.extend(p.on_frame(&frame(n), &plates(vec![far_unreadable(100.0)])));
            n += 1;
        }
        for _ in 0..2 * gone {
            out.extend(p.on_frame(&frame(n), &plates(vec![])));
            n += 1;
        }
    }
    assert_eq!(chars_of(&out), vec!["unreadable:5IG1Z3"]);

    // One that drives off, seen moving, and the next vehicle stopping in
    // its place: two passes.
    let mut p = Passes::new(config);
    let mut out = Vec::new();
    let mut n = 0;
    let mut show = |p: &mut Passes, y: f32, out: &mut Vec<Pass>| {
        let dets = plates(if y < 0.0 {
            vec![]
        } else {
            vec![far_unreadable(y)]
        });
        out.extend(p.on_frame(&frame(n), &dets));
        n += 1;
    };
    for _ in 0..16 {
        show(&mut p, 100.0, &mut out);
    }
    for y in [130.0, 170.0] {
        show(&mut p, y, &mut out);
    }
    for _ in 0..6 {
        show(&mut p, -1.0, &mut out);
    }
    for _ in 0..16 {
        show(&mut p, 100.0, &mut out);
    }
    out.extend(p.finish());
    assert_eq!(
        chars_of(&out),
        vec!["unreadable:5IG1Z3", "unreadable:5IG1Z3"]
    );
}

#[test]
fn a_plate_in_place_that_was_not_parked_or_a_readable_one_in_a_parked_ones_place_is_a_new_pass() {
    let config = PassConfig {
        tracker: TrackerConfig::at_fps(2.0),
        ..agent_thresholds()
    };
    let mut n = 0;
    let mut show = |p: &mut Passes, dets: Vec<PlateRead>, frames: usize, out: &mut Vec<Pass>| {
        for _ in 0..frames {
            out.extend(p.on_frame(&frame(n), &plates(dets.clone())));
            n += 1;
        }
    };
    // In place under 5 s at a time: not parked, each is a pass.
    let mut p = Passes::new(config.clone());
    let mut out = Vec::new();
    for _ in 0..2 {
        show(&mut p, vec![far_unreadable(100.0)], 8, &mut out);
        show(&mut p, vec![], 8, &mut out);
    }
    assert_eq!(chars_of(&out), vec!["unreadable:5IG1Z3"; 2]);
    // A parked plate that ended unreadable (it left unseen), then a
    // vehicle stopping in its place that reads: its own event.
    let mut p = Passes::new(config);
    let mut out = Vec::new();
    show(&mut p, vec![far_unreadable(100.0)], 16, &mut out);
    show(&mut p, vec![], 10, &mut out);
    let mut next = far_unreadable(100.0);
    next.chars = "51G12345".into();
    next.read_confidence = 0.9;
    show(&mut p, vec![next], 8, &mut out);
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["unreadable:5IG1Z3", "51G12345"]);
    assert_ne!(
        pass_ids(&out)[0],
        pass_ids(&out)[1],
        "not given the parked one's pass"
    );
}

fn pass_ids(passes: &[Pass]) -> Vec<u64> {
    passes
        .iter()
        .map(|p| match p {
            Pass::Plate(p) | Pass::UnreadablePlate(p) => p.track_id,
            Pass::Face(f) => f.track_id,
        })
        .collect()
}

#[test]
fn an_unreadable_vehicle_driving_through_a_parked_ones_place_is_a_pass_of_its_own() {
    let mut p = Passes::new(PassConfig {
        tracker: TrackerConfig::at_fps(2.0),
        ..agent_thresholds()
    });
    let mut out = Vec::new();
    let mut n = 0;
    let mut show = |p: &mut Passes, dets: Vec<PlateRead>, out: &mut Vec<Pass>| {
        out.extend(p.on_frame(&frame(n), &plates(dets)));
        n += 1;
    };
    // Parked, unreadable, 8 s; then hidden 5 s.
    for _ in 0..16 {
        show(&mut p, vec![far_unreadable(100.0)], &mut out);
    }
    for _ in 0..10 {
        show(&mut p, vec![], &mut out);
    }
    // Another, unreadable, first seen in its place, drives on down the lane.
    for y in [101.0, 140.0, 180.0, 220.0, 260.0] {
        let mut other = far_unreadable(y);
        other.chars = "7XK0Q".into();
        show(&mut p, vec![other], &mut out);
    }
    for _ in 0..10 {
        show(&mut p, vec![], &mut out);
    }
    // The parked one, seen again: still its one pass.
    for _ in 0..6 {
        show(&mut p, vec![far_unreadable(100.0)], &mut out);
    }
    out.extend(p.finish());
    assert_eq!(
        chars_of(&out),
        vec!["unreadable:5IG1Z3", "unreadable:7XK0Q"]
    );
    let ids = pass_ids(&out);
    assert_ne!(ids[0], ids[1]);
    assert_eq!(
        p.counters.duplicates_suppressed, 1,
        "the parked plate's return"
    );
}

fn plate_pass(pass: &Pass) -> &PlatePass {
    match pass {
        Pass::Plate(p) | Pass::UnreadablePlate(p) => p,
        Pass::Face(_) => panic!("a face pass"),
    }
}

#[test]
fn a_plate_reported_at_max_delay_that_the_rest_of_its_pass_reads_otherwise_is_corrected() {
    // Queued far off at a red light, misread the same way for 4 s (reported
    // at max_delay), then driven past the camera and read clearly.
    let mut p = Passes::new(agent_thresholds());
    let mut out = Vec::new();
    for n in 0..8 {
        let mut far = plate(100.0, "51G12845");
        far.read_confidence = 0.75;
        far.sharpness = 30.0;
        out.extend(p.on_frame(&frame(n), &plates(vec![far])));
    }
    assert_eq!(chars_of(&out), vec!["51G12845"], "reported at max_delay");
    for n in 8..20 {
        out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, "51G12345")])));
    }
    for n in 20..26 {
        out.extend(p.on_frame(&frame(n), &plates(vec![])));
    }
    assert_eq!(chars_of(&out), vec!["51G12845", "51G12345"]);
    let (first, second) = (plate_pass(&out[0]), plate_pass(&out[1]));
    assert_eq!(second.supersedes, Some(first.event_id));
    assert_eq!(first.supersedes, None);
    assert_ne!(first.event_id, second.event_id);
    assert_eq!(first.track_id, second.track_id, "the same pass");
    assert_eq!(second.frames, 20, "voted over the whole pass");
    assert!(
        second.frame.is_some(),
        "with a frame that shows the reading"
    );
    assert_eq!(second.best.observation.chars, "51G12345");
    assert_eq!(p.counters.plate_passes, 1);
    assert_eq!(p.counters.corrected_passes, 1);
}

#[test]
fn a_settled_plate_is_not_corrected_by_a_few_misreads_or_an_unlike_plate() {
    for (late, why) in [
        ("51G12845", "two misreads among many right reads"),
        (
            "29H164397",
            "a plate nothing like it: another vehicle under the box",
        ),
    ] {
        let mut p = Passes::new(agent_thresholds());
        let mut out = Vec::new();
        for n in 0..12 {
            out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, "51G12345")])));
        }
        let frames = if why.starts_with("two") {
            12..14
        } else {
            12..30
        };
        for n in frames {
            let mut read = plate(100.0, late);
            read.read_confidence = 0.65;
            out.extend(p.on_frame(&frame(n), &plates(vec![read])));
        }
        out.extend(p.finish());
        assert_eq!(chars_of(&out), vec!["51G12345"], "{why}");
        assert_eq!(p.counters.corrected_passes, 0, "{why}");
    }
}

#[test]
fn a_pass_taken_for_a_duplicate_that_reads_otherwise_at_its_end_is_a_pass_of_its_own() {
    // A plate misread far off, reported at max_delay (the first event);
    // gone for 3 s; a plate found in the same place, misread the same way
    // (a duplicate of the first event: no event of its own), then read
    // clearly. The same vehicle, or the next one of a fleet: it is not
    // known, so the first event stands, and the reading is an event of its own.
    let mut p = Passes::new(agent_thresholds());
    let mut out = Vec::new();
    let far = || {
        let mut far = plate(100.0, "51G12845");
        far.read_confidence = 0.75;
        far.sharpness = 30.0;
        far
    };
    for n in 0..8 {
        out.extend(p.on_frame(&frame(n), &plates(vec![far()])));
    }
    for n in 8..14 {
        out.extend(p.on_frame(&frame(n), &plates(vec![])));
    }
    for n in 14..22 {
        out.extend(p.on_frame(&frame(n), &plates(vec![far()])));
    }
    assert_eq!(chars_of(&out), vec!["51G12845"]);
    assert_eq!(p.counters.duplicates_suppressed, 1);
    for n in 22..34 {
        out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, "51G12345")])));
    }
    for n in 34..40 {
        out.extend(p.on_frame(&frame(n), &plates(vec![])));
    }
    assert_eq!(chars_of(&out), vec!["51G12845", "51G12345"]);
    assert_eq!(plate_pass(&out[1]).supersedes, None);
    assert_eq!(p.counters.plate_passes, 2);
    assert_eq!(p.counters.corrected_passes, 0);
}

#[test]
fn a_correction_is_reported_even_when_its_reading_was_reported_lately() {
    // Read right, then lost behind a bus; found again and misread at
    // max_delay (an event of its own: the misread was not seen lately);
    // then read right again to its end. The correction replaces the
    // misread event, though the right reading was reported within the window.
    let mut p = Passes::new(agent_thresholds());
    let mut out = Vec::new();
    for n in 0..4 {
        out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, "51G12345")])));
    }
    for n in 4..10 {
        out.extend(p.on_frame(&frame(n), &plates(vec![])));
    }
    for n in 10..18 {
        let mut far = plate(100.0, "51G12845");
        far.read_confidence = 0.75;
        far.sharpness = 30.0;
        out.extend(p.on_frame(&frame(n), &plates(vec![far])));
    }
    assert_eq!(chars_of(&out), vec!["51G12345", "51G12845"]);
    for n in 18..30 {
        out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, "51G12345")])));
    }
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["51G12345", "51G12845", "51G12345"]);
    assert_eq!(
        plate_pass(&out[2]).supersedes,
        Some(plate_pass(&out[1]).event_id)
    );
    assert_eq!(p.counters.corrected_passes, 1);
}

#[test]
fn a_reported_track_that_slides_onto_another_vehicle_hands_it_the_frames_that_showed_it() {
    let mut p = Passes::new(agent_thresholds());
    let mut out = Vec::new();
    for n in 0..8 {
        out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, "51G12345")])));
    }
    assert_eq!(chars_of(&out), vec!["51G12345"], "reported at max_delay");
    // Bumper to bumper at a gate: the box stays, the plate is another.
    for n in 8..14 {
        out.extend(p.on_frame(&frame(n), &plates(vec![plate(100.0, "29H164397")])));
    }
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["51G12345", "29H164397"]);
    assert_eq!(plate_pass(&out[1]).frames, 6, "every frame that showed it");
    assert_eq!(p.counters.corrected_passes, 0);
}

#[test]
fn a_correction_does_not_replace_an_event_another_pass_was_taken_for_a_duplicate_of() {
    // Queued at a red light: car A (51G12345) misread as 51G12845 and
    // reported so at max_delay; car B beside it, really 51G12845, reported
    // at its max_delay as a duplicate of A's event. A is then read clearly:
    // its reading must not replace the event that stands for B too.
    let mut p = Passes::new(agent_thresholds());
    let mut out = Vec::new();
    let misread_a = || {
        let mut far = plate(100.0, "51G12845");
        far.read_confidence = 0.75;
        far.sharpness = 30.0;
        far
    };
    for n in 0..8 {
        out.extend(p.on_frame(&frame(n), &plates(vec![misread_a()])));
    }
    for n in 8..16 {
        out.extend(p.on_frame(
            &frame(n),
            &plates(vec![misread_a(), plate(400.0, "51G12845")]),
        ));
    }
    assert_eq!(chars_of(&out), vec!["51G12845"], "B taken for a duplicate");
    for n in 16..28 {
        out.extend(p.on_frame(
            &frame(n),
            &plates(vec![plate(100.0, "51G12345"), plate(400.0, "51G12845")]),
        ));
    }
    out.extend(p.finish());
    assert_eq!(chars_of(&out), vec!["51G12845", "51G12345"]);
    assert_eq!(plate_pass(&out[1]).supersedes, None, "B's event stands");
    assert_eq!(p.counters.corrected_passes, 0);
    assert_eq!(p.counters.plate_passes, 2);
}
