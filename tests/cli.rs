//! The command line as an installer meets it: `check` on good and bad
//! configs, `detect` on real images and on a broken one.

mod support;

use support::*;

/// `matthan` with its exit code, standard output and error.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = matthan(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn shipped_example_configs_pass_check() {
    let path = repo_root().join("pipelines/demo.toml");
    let (code, out, err) = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "demo.toml: {out}{err}");
    assert!(out.contains("OK"), "{out}");
    // The site example as an installer would start from it: only the
    // gateway's folders differ here.
    let dir = tempfile::tempdir().unwrap();
    let mut here =
        std::fs::read_to_string(repo_root().join("pipelines/example-site.toml")).unwrap();
    for (from, to) in [
        ("\"/usr/share/matthan/models\"", models_dir()),
        (
            "\"/var/lib/matthan/events.jsonl\"",
            dir.path().join("events.jsonl"),
        ),
        ("\"/var/lib/matthan\"", dir.path().join("state")),
    ] {
        assert!(
            here.contains(from),
            "example-site.toml no longer has {from}"
        );
        here = here.replace(from, &format!("{:?}", to.display().to_string()));
    }
    let site = dir.path().join("site.toml");
    std::fs::write(&site, here).unwrap();
    let (code, out, err) = run(&["check", "-c", site.to_str().unwrap()]);
    assert_eq!(code, 0, "example-site.toml: {out}{err}");
}

#[test]
fn check_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[site]\nid='s'\nnmae='x'\n[[camera]]\nid='a'\nsource='rtsp://h/x'\n[outputs.jsonl]\npath='-'\n",
            "unknown field `nmae`",
        ),
        (
            "[site]\nid='s'\n[[camera]]\nid='a'\nsource='rtsp://h/x'\nlocation={lat=95.0,lon=1.0}\n[outputs.jsonl]\npath='-'\n",
            "`camera[0].location.lat`",
        ),
        (
            "[site]\nid='s'\n[[camera]]\nid='a'\nsource='http://h/x'\n[outputs.jsonl]\npath='-'\n",
            "not a camera source",
        ),
        (
            "[site]\nid='s'\n[[camera]]\nid='a'\nsource='rtsp://h/x'\n",
            "missing field `outputs`",
        ),
        (
            "[site]\nid='s'\n[storage]\ndir='bad.toml/state'\n[[camera]]\nid='a'\nsource='rtsp://h/x'\n[outputs.jsonl]\npath='-'\n",
            "`storage.dir`",
        ),
        // Folders where files belong open without error: `run` would fail.
        (
            "[site]\nid='s'\n[[camera]]\nid='a'\nsource='rtsp://h/x'\n[outputs.mqtt]\nurl='mqtts://h'\nca_file='.'\n",
            "`outputs.mqtt.ca_file`",
        ),
        (
            "[site]\nid='s'\n[[camera]]\nid='a'\nsource='rtsp://h/x'\n[outputs.jsonl]\npath='.'\n",
            "`outputs.jsonl.path`",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        write_file(&path, text);
        let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()]);
        assert_ne!(code, 0, "{text}");
        assert!(
            err.contains(expected) && err.contains("bad.toml"),
            "expected `{expected}` in: {err}"
        );
    }
}

#[test]
fn detect_prints_one_json_object_per_image() {
    let models = models_dir();
    let car =
        shared().join("data/vn_plate_detect_extra/dungnt_parking_gate/images/e4a7bc1c-37112.jpg");
    let group = shared().join("media/faces/group_5_faces.jpg");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.jpg");
    write_file(&broken, "not a jpeg");
    let (code, out, err) = run(&[
        "detect",
        "--models",
        models.to_str().unwrap(),
        "--json",
        car.to_str().unwrap(),
        broken.to_str().unwrap(),
        group.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "a broken image makes the exit status non-zero");
    assert!(err.contains("broken.jpg"), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    let plate = &lines[0]["plates"][0];
    assert_eq!(lines[0]["width"], 472);
    assert_eq!(plate["chars"], "51A60216");
    assert_eq!(plate["text"], "51A-602.16");
    assert_eq!(plate["corners"].as_array().unwrap().len(), 4);
    assert!(lines[1]["error"].as_str().unwrap().contains("broken.jpg"));
    assert_eq!(lines[2]["faces"].as_array().unwrap().len(), 5);
    assert_eq!(
        lines[2]["faces"][0]["landmarks"].as_array().unwrap().len(),
        5
    );
}
