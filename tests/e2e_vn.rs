//! Vietnamese motorbike plates on real street and phone footage
//! (../shared/media/vn), through the project's own detector and reader.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::*;

/// The plates a person reads in each clip.
const CLIPS: &[(&str, &[&str])] = &[
    (
        "parked_motorbikes_854x480.mp4",
        &["59KA19166", "59GA18593", "59K134074"],
    ),
    ("motorbike_close_1280x720.mp4", &["47AD15155"]),
];

/// The agent reading plates of one camera, `source` with its options,
/// into `dir/events.jsonl`; `health` is the `[health]` table, if any.
fn vn_agent(dir: &Path, source: &str, health: &str) -> Agent {
    Agent::start(&format!(
        r#"
[site]
id = "vn"
[analysis]
fps = 5
[models]
dir = "{models}"
[storage]
dir = "{state}"
{health}
[[camera]]
id = "street"
{source}
detect = ["plates"]
[outputs.jsonl]
path = "{jsonl}"
"#,
        models = models_dir().display(),
        state = dir.join("state").display(),
        jsonl = dir.join("events.jsonl").display(),
    ))
}

fn plate_events(clip: &Path) -> Vec<serde_json::Value> {
    let out = tempfile::tempdir().unwrap();
    let mut agent = vn_agent(
        out.path(),
        &format!("source = \"file://{}\"\nrealtime = false", clip.display()),
        "",
    );
    let status = agent.process.wait_exit(Duration::from_secs(180));
    assert!(status.success(), "{}", agent.log_text());
    read_jsonl(&out.path().join("events.jsonl"))
}

#[test]
fn one_event_per_readable_motorbike_plate() {
    for (clip, wanted) in CLIPS {
        let events = plate_events(&shared().join("media/vn").join(clip));
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e["kind"] == "plate") {
            *seen
                .entry(e["plate"]["chars"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        for w in *wanted {
            assert_eq!(
                seen.get(*w).copied().unwrap_or(0),
                1,
                "{clip}: exactly one event for {w}; events by plate: {seen:?}"
            );
        }
        for e in events
            .iter()
            .filter(|e| wanted.contains(&e["plate"]["chars"].as_str().unwrap_or("")))
        {
            assert_eq!(e["plate"]["kind"], "motorbike", "{clip}: {e}");
            assert_eq!(e["plate"]["lines"], 2, "{clip}: {e}");
        }
        eprintln!("{clip}: {seen:?}");
    }
}

#[test]
fn detect_reads_every_plate_on_frames_of_the_clips() {
    for (clip, wanted) in CLIPS {
        let dir = tempfile::tempdir().unwrap();
        gst_launch(
            "filesrc location={0} ! decodebin ! videoconvert ! videorate ! video/x-raw,framerate=2/1 ! jpegenc ! multifilesink location={1}/f%03d.jpg",
            &[&shared().join("media/vn").join(clip), dir.path()],
        );
        let mut frames: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        frames.sort();
        let reads: Vec<String> = detect_plates(&frames).into_iter().flatten().collect();
        for w in *wanted {
            assert!(
                reads.iter().any(|r| r == w),
                "{clip}: no frame read {w}; reads: {reads:?}"
            );
        }
    }
}

/// A live camera whose encoder uses B-frames, as many "high profile"
/// settings do: the agent leaves the non-reference pictures it will not
/// analyse undecoded, and still reads every parked plate.
#[test]
fn a_live_camera_with_b_frames_is_read_with_pictures_left_undecoded() {
    let (clip, wanted) = CLIPS[0];
    let dir = tempfile::tempdir().unwrap();
    let b_frames = dir.path().join("b_frames.mp4");
    // x264 `veryfast`: 3 B-frames in a pyramid, half the pictures non-reference.
    gst_launch(
        "filesrc location={0} ! decodebin ! videoconvert ! video/x-raw,format=I420 \
         ! x264enc speed-preset=veryfast bitrate=2000 key-int-max=50 ! video/x-h264,profile=high \
         ! h264parse ! mp4mux ! filesink location={1}",
        &[&shared().join("media/vn").join(clip), &b_frames],
    );
    let camera = TestCam::start(&[("bframes", &b_frames)]);
    let metrics = free_port();
    let jsonl = dir.path().join("events.jsonl");
    let mut agent = vn_agent(
        dir.path(),
        &format!(
            "source = \"{}\"\nrtsp_transport = \"tcp\"",
            camera.url("bframes")
        ),
        &format!("[health]\nmetrics_listen = \"127.0.0.1:{metrics}\""),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let read = loop {
        // Read while the agent writes: a line still being written is skipped.
        let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
        let read: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["kind"] == "plate")
            .filter_map(|e| e["plate"]["chars"].as_str().map(str::to_string))
            .collect();
        if wanted.iter().all(|w| read.iter().any(|r| r == w))
            || std::time::Instant::now() > deadline
        {
            break read;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let page = http_get(metrics, "/metrics");
    agent.process.terminate();
    for w in wanted {
        assert!(
            read.iter().any(|r| r == w),
            "{w} not read; events: {read:?}\n{}",
            agent.log_text()
        );
    }
    let skipped = metric(&page, "matthan_pictures_skipped_total{camera=\"street\"}")
        .unwrap_or_else(|| panic!("no skipped-pictures metric:\n{page}"));
    assert!(skipped > 0.0, "every picture was decoded:\n{page}");
    eprintln!("{clip} over RTSP with B-frames: {read:?}, {skipped} pictures left undecoded");
}
