//! `matthan eval` scores the agent's own models on labelled data in
//! ../shared: the figures must add up, name the weights they came from,
//! and hold the accuracy the project's models reached (a regression in
//! the detector, the reader or the grammar shows here first).

mod support;

use support::*;

fn eval(args: &[&str]) -> serde_json::Value {
    let models = models_dir();
    let mut all = args.to_vec();
    all.extend(["--models", models.to_str().unwrap()]);
    let out = matthan(&all);
    assert!(
        out.status.success(),
        "matthan {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn rate(v: &serde_json::Value) -> f64 {
    v["rate"].as_f64().unwrap()
}

#[test]
fn crops_are_scored_and_every_miss_is_listed() {
    let dir = shared().join("data/vn_plate_crops_cctv");
    let r = eval(&["eval", "crops", dir.to_str().unwrap()]);
    assert_eq!(r["crops"], 223);
    let hits = r["exact"]["hits"].as_u64().unwrap();
    assert_eq!(
        hits + r["misreads"].as_array().unwrap().len() as u64,
        223,
        "every crop is either read exactly or listed as a misread"
    );
    let layouts = &r["by_layout"];
    assert_eq!(
        layouts["one_line"]["of"].as_u64().unwrap() + layouts["two_line"]["of"].as_u64().unwrap(),
        223
    );
    // The third-party reader reads 28 % of these; the project's, over 50 %.
    assert!(rate(&r["exact"]) > 0.5, "{}", r["exact"]);
    let reader = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "plate_reader")
        .unwrap();
    assert_eq!(reader["name"], "vn_plate_ocr");
    assert_eq!(reader["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn held_out_frames_meet_the_motorbike_targets() {
    let dir = shared().join("data/vn_plate_detect_train");
    let labels = repo_root().join("models/vn/eval/heldout_frames.csv");
    let r = eval(&[
        "eval",
        "frames",
        dir.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    assert_eq!(r["frames"], 255);
    let moto = &r["by_category"]["motorbike"];
    assert!(rate(&moto["recall"]) >= 0.95, "{moto}");
    assert!(rate(&moto["precision"]) >= 0.95, "{moto}");
    assert!(rate(&moto["end_to_end_exact"]) >= 0.90, "{moto}");
    // Categories add up to the whole.
    let all = &r["by_category"]["all"]["recall"]["of"];
    let parts: u64 = ["motorbike", "car", "other"]
        .iter()
        .map(|c| r["by_category"][c]["recall"]["of"].as_u64().unwrap())
        .sum();
    assert_eq!(all.as_u64().unwrap(), parts);
}

#[test]
fn a_folder_without_labels_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = matthan(&["eval", "frames", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(dir.path().to_str().unwrap()) && err.contains("labels/"),
        "{err}"
    );
}

#[test]
fn a_clip_cut_short_is_named() {
    // The close clip with its index first, as cameras' and phones' files
    // are, then cut in half, as an interrupted copy leaves it: it plays to
    // the cut and ends without an error.
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.mp4");
    let source = shared().join("media/vn/motorbike_close_1280x720.mp4");
    gst_launch(
        "filesrc location={0} ! qtdemux ! h264parse ! mp4mux faststart=true ! filesink location={1}",
        &[&source, &whole],
    );
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let models = models_dir();
    let run = |clip: &std::path::Path| {
        matthan(&[
            "eval",
            "clip",
            clip.to_str().unwrap(),
            "--plates",
            "47AD15155",
            "--models",
            models.to_str().unwrap(),
        ])
    };
    let whole = run(&whole);
    assert!(whole.status.success());
    assert!(!String::from_utf8_lossy(&whole.stderr).contains("cut short"));
    let out = run(&cut);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(cut.to_str().unwrap()) && err.contains("cut short"),
        "{err}"
    );
}
