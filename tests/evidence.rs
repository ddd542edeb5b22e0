//! Evidence that holds up: real footage through `matthan run`, then the
//! package checked the way a reviewing officer or a court expert would:
//! the clip's samples are the source's own bytes, the signature and the
//! custody log catch any change and name it, retention deletes oldest
//! first under a small quota, and the exported page works in a browser
//! with no network.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use sha2::Digest;

use support::*;

const CLOSE_CLIP: &str = "media/vn/motorbike_close_1280x720.mp4";
const PARKED_CLIP: &str = "media/vn/parked_motorbikes_854x480.mp4";

struct Run {
    work: tempfile::TempDir,
    config: PathBuf,
}

impl Run {
    fn evidence_dir(&self) -> PathBuf {
        self.work.path().join("state/evidence")
    }
    fn jsonl(&self) -> PathBuf {
        self.work.path().join("events.jsonl")
    }
}

/// Runs the agent over a clip to its end, as a file camera.
fn run_clip(clip: &Path, evidence: &str) -> Run {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("site.toml");
    write_file(
        &config,
        &format!(
            r#"
[site]
id = "vn"
[analysis]
fps = 5
[models]
dir = "{models}"
[storage]
dir = "state"
[evidence]
{evidence}
[health]
metrics_listen = ""
[[camera]]
id = "street"
name = "Phố Lê Duẩn"
source = "file://{clip}"
realtime = false
detect = ["plates"]
location = {{ lat = 12.6667, lon = 108.05, address = "Buôn Ma Thuột, Đắk Lắk" }}
[outputs.jsonl]
path = "events.jsonl"
"#,
            models = models_dir().display(),
            clip = clip.display(),
        ),
    );
    let out = matthan(&["run", "-c", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Run { work, config }
}

/// The video samples of an MP4 file as stored (no parser, no decoder),
/// with their keyframe flags.
fn samples(path: &Path) -> Vec<(Vec<u8>, bool)> {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! qtdemux ! capsfilter caps=\"video/x-h264;video/x-h265\" ! appsink name=s sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("s")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let buffer = sample.buffer().unwrap();
        let map = buffer.map_readable().unwrap();
        out.push((
            map.as_slice().to_vec(),
            !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        ));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

/// Drops H.264 SPS and PPS NAL units (types 7 and 8) from length-prefixed
/// samples; every other NAL unit is kept as it is.
fn without_parameter_sets(samples: Vec<(Vec<u8>, bool)>) -> Vec<(Vec<u8>, bool)> {
    samples
        .into_iter()
        .map(|(data, key)| {
            let mut out = Vec::with_capacity(data.len());
            let mut i = 0;
            while i + 4 <= data.len() {
                let n = u32::from_be_bytes(data[i..i + 4].try_into().unwrap()) as usize;
                let nal = &data[i..(i + 4 + n).min(data.len())];
                if !matches!(nal.get(4).map(|b| b & 0x1f), Some(7 | 8)) {
                    out.extend_from_slice(nal);
                }
                i += 4 + n;
            }
            (out, key)
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_plate_event_gets_a_signed_package_of_original_footage() {
    let source = shared().join(CLOSE_CLIP);
    let run = run_clip(&source, "");
    let store = run.evidence_dir();

    // The event points at its package; the notice that follows pins it.
    let events: Vec<_> = read_jsonl(&run.jsonl())
        .into_iter()
        .filter(|e| e["kind"] == "plate")
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["plate"]["chars"], "47AD15155");
    let id = event["evidence"]["id"].as_str().unwrap().to_string();
    assert_eq!(id, event["id"].as_str().unwrap());
    let package = store.join(&id);
    assert!(
        event["evidence"]["uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/state/evidence/{id}"))
    );
    let notices = read_notices(&run.jsonl());
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../agent/schema/evidence.v1.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let notice = notices
        .iter()
        .find(|n| n["event_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no evidence notice for {id}: {notices:#?}"));
    assert!(validator.is_valid(notice), "{notice:#}");
    assert_eq!(notice["status"], "sealed", "{notice:#}");
    let manifest_bytes = std::fs::read(package.join("manifest.json")).unwrap();
    assert_eq!(
        notice["manifest_sha256"].as_str().unwrap(),
        format!("{:x}", sha2::Sha256::digest(&manifest_bytes))
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["event"]["plate"]["text"], "47-AD 151.55");
    assert_eq!(manifest["event"]["camera"]["location"]["lat"], 12.6667);
    assert!(manifest["clock"]["synchronized"].is_boolean());
    assert_eq!(manifest["clock_stepped_back"], false);
    assert_eq!(manifest["config_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["event"]["models"].as_array().unwrap().len(), 3);

    // No re-encode: the clip's samples are a run of the source's own
    // samples, byte for byte, from a keyframe, around the event's frame.
    // (GStreamer's H.264 parser repeats the stream's SPS/PPS in the first
    // keyframe so the clip decodes on its own; those are compared apart.)
    let source_samples = without_parameter_sets(samples(&source));
    let clip = without_parameter_sets(samples(&package.join("clip.mp4")));
    assert!(clip.len() >= 25, "clip of {} samples", clip.len());
    assert!(clip[0].1, "the clip must start at a keyframe");
    let start = source_samples
        .iter()
        .position(|s| s.0 == clip[0].0)
        .expect("the clip's first sample is not in the source");
    for (i, (c, s)) in clip.iter().zip(&source_samples[start..]).enumerate() {
        assert!(
            c == s,
            "clip sample {i} (source sample {}) differs: {} bytes keyframe {} vs {} bytes keyframe {}",
            start + i,
            c.0.len(),
            c.1,
            s.0.len(),
            s.1
        );
    }
    assert!(start + clip.len() <= source_samples.len());
    let frame_ms = manifest["frame"]["stream_time_ms"].as_u64().unwrap();
    let (from, to) = (
        manifest["clip"]["start_stream_ms"].as_u64().unwrap(),
        manifest["clip"]["end_stream_ms"].as_u64().unwrap(),
    );
    assert!(
        from <= frame_ms && frame_ms <= to,
        "{frame_ms} not in {from}..{to}"
    );
    eprintln!(
        "clip: source samples {start}..{} of {}, {from}–{to} ms, frame at {frame_ms} ms",
        start + clip.len(),
        source_samples.len()
    );

    // An untouched store verifies, log included.
    let (ok, text) = verify_evidence(&store);
    assert!(ok, "{text}");
    assert!(text.contains("custody.log: 1 entries"), "{text}");
    let before_export = tempfile::tempdir().unwrap();
    copy_dir(&store, before_export.path());

    // One byte changed in any file is caught and named.
    let scratch = tempfile::tempdir().unwrap();
    for name in [
        "clip.mp4",
        "frame.jpg",
        "plate.jpg",
        "vehicle.jpg",
        "manifest.json",
    ] {
        let copy = scratch.path().join(name);
        copy_dir(&package, &copy);
        flip_byte(&copy.join(name));
        let (ok, text) = verify_evidence(&copy);
        assert!(!ok, "a changed {name} passed:\n{text}");
        let named = text
            .lines()
            .filter(|l| l.starts_with("CHANGED"))
            .any(|l| l.contains(name));
        assert!(named, "{name} not named:\n{text}");
    }
    // A file slipped in after sealing is named too.
    let copy = scratch.path().join("added");
    copy_dir(&package, &copy);
    std::fs::write(copy.join("other.jpg"), b"x").unwrap();
    let (ok, text) = verify_evidence(&copy);
    assert!(!ok && text.contains("other.jpg"), "{text}");

    // A custody entry removed is caught, with the line.
    let copy = scratch.path().join("store");
    copy_dir(&store, &copy);
    std::fs::write(copy.join("custody.log"), "").unwrap();
    let (ok, text) = verify_evidence(&copy);
    assert!(!ok, "{text}");
    assert!(text.contains("no `created` entry"), "{text}");

    // The review page: the export verifies, logs itself, and the page
    // shows the plate and plays the clip in Chromium with no network.
    let out = scratch.path().join("export");
    let export = matthan(&[
        "evidence",
        "export",
        &id,
        "--out",
        out.to_str().unwrap(),
        "-c",
        run.config.to_str().unwrap(),
    ]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let (ok, text) = verify_evidence(&out);
    assert!(ok, "{text}");
    assert!(text.contains("as signed at export"), "{text}");
    // The page the officer reads is signed at export: an edit is caught.
    let edited = scratch.path().join("export-edited");
    copy_dir(&out, &edited);
    let page = std::fs::read_to_string(edited.join("index.html")).unwrap();
    std::fs::write(edited.join("index.html"), page + "<!-- edited -->").unwrap();
    let (ok, text) = verify_evidence(&edited);
    assert!(!ok && text.contains("changed after export"), "{text}");
    // A page slipped into a stored package is covered by no signature.
    let stored_copy = scratch.path().join("copies").join(&id);
    copy_dir(&package, &stored_copy);
    std::fs::write(stored_copy.join("index.html"), "<h1>30A-999.99</h1>").unwrap();
    let (ok, text) = verify_evidence(&stored_copy);
    assert!(
        !ok && text.contains("index.html: not in the manifest"),
        "{text}"
    );
    // Another event's package under this one's name is caught.
    let other = scratch.path().join("01a00000-0000-7000-8000-000000000000");
    copy_dir(&package, &other);
    let (ok, text) = verify_evidence(&other);
    assert!(!ok && text.contains("swapped"), "{text}");
    let (ok, text) = verify_evidence(&store);
    assert!(ok && text.contains("custody.log: 2 entries"), "{text}");

    // The notice gave the IOC the package's custody line: it holds on the
    // real log, and shows an older copy of log and head put back, which
    // verifies on its own.
    let verify_with = |dir: &Path, seq: u64, sha: &str| {
        let out = matthan(&[
            "evidence",
            "verify",
            dir.to_str().unwrap(),
            "--custody",
            &format!("{seq}:{sha}"),
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let anchor = &notice["custody"];
    let (seq, sha) = (
        anchor["seq"].as_u64().unwrap(),
        anchor["line_sha256"].as_str().unwrap(),
    );
    let (ok, text) = verify_with(&store, seq, sha);
    assert!(ok && text.contains("the one the IOC was told of"), "{text}");
    let log = std::fs::read_to_string(store.join("custody.log")).unwrap();
    let export_line = log.lines().nth(1).unwrap();
    let export_sha = format!("{:x}", sha2::Sha256::digest(export_line.as_bytes()));
    let (ok, text) = verify_evidence(before_export.path());
    assert!(ok, "the older copy verifies on its own: {text}");
    let (ok, text) = verify_with(before_export.path(), 2, &export_sha);
    assert!(!ok && text.contains("has no line 2"), "{text}");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must need no network"
    );
    let dom = chromium_dom(&out.join("index.html"));
    assert!(dom.contains("47-AD 151.55"), "{dom}");
    assert!(dom.contains("Verified at export"), "{dom}");
    assert!(
        dom.contains("data-video=\"playing\""),
        "the clip did not play: {}",
        &dom[..dom.len().min(400)]
    );
}

/// The page's DOM after Chromium has loaded it and played for a moment,
/// with every network request refused.
fn chromium_dom(page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args([
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--proxy-server=127.0.0.1:9",
            "--autoplay-policy=no-user-gesture-required",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium is needed for the page test; run scripts/setup");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn retention_deletes_oldest_first_and_logs_it() {
    let run = run_clip(&shared().join(PARKED_CLIP), "max_mb = 4");
    let store = run.evidence_dir();
    let log = std::fs::read_to_string(store.join("custody.log")).unwrap();
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let created: Vec<&str> = entries
        .iter()
        .filter(|e| e["action"] == "created")
        .map(|e| e["package"].as_str().unwrap())
        .collect();
    let deleted: Vec<&str> = entries
        .iter()
        .filter(|e| e["action"] == "deleted")
        .map(|e| e["package"].as_str().unwrap())
        .collect();
    assert!(created.len() >= 5, "{log}");
    assert!(
        !deleted.is_empty(),
        "nothing deleted under a 4 MiB quota:\n{log}"
    );
    // Oldest first: package ids are UUIDv7, so their order is their age.
    let mut by_age = created.clone();
    by_age.sort();
    assert_eq!(deleted, by_age[..deleted.len()], "{log}");
    for e in entries.iter().filter(|e| e["action"] == "deleted") {
        assert!(
            e["reason"].as_str().unwrap().contains("never exported"),
            "{e}"
        );
    }
    let bytes: u64 = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .flat_map(|p| std::fs::read_dir(p).unwrap())
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes <= 4 * 1024 * 1024, "{bytes} bytes kept");
    for id in &by_age[deleted.len()..] {
        assert!(store.join(id).is_dir(), "{id} should remain");
    }
    // Deletions are logged, so the store still verifies.
    let (ok, text) = verify_evidence(&store);
    assert!(ok, "{text}");
    // And the IOC was told, as forced deletions.
    let notices = read_notices(&run.jsonl());
    let told: Vec<&str> = notices
        .iter()
        .filter(|n| n["status"] == "deleted" && n["forced"] == true)
        .map(|n| n["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(told, deleted);
    eprintln!(
        "{} packages created, {} deleted oldest first",
        created.len(),
        deleted.len()
    );
}

#[test]
fn evidence_can_be_turned_off() {
    let run = run_clip(&shared().join(CLOSE_CLIP), "enabled = false");
    let events = read_jsonl(&run.jsonl());
    assert!(events.iter().any(|e| e["kind"] == "plate"));
    assert!(events.iter().all(|e| e.get("evidence").is_none()));
    assert!(read_notices(&run.jsonl()).is_empty());
    assert!(!run.evidence_dir().exists());
}

#[test]
fn an_unusable_evidence_folder_never_stops_detection() {
    // The folder would be inside a file: it cannot be created.
    let run = run_clip(&shared().join(CLOSE_CLIP), r#"dir = "site.toml/evidence""#);
    let events = read_jsonl(&run.jsonl());
    assert!(
        events.iter().any(|e| e["plate"]["chars"] == "47AD15155"),
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e.get("evidence").is_none()));
}
