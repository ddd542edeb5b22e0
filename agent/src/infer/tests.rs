//! Model decoding on real images from ../shared, with the real models and
//! the real ONNX Runtime.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::Models as ModelsConfig;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

fn models() -> Models {
    models_with(
        crate::config::DEFAULT_PLATE_DETECTOR,
        crate::config::DEFAULT_PLATE_READER,
    )
}

fn models_with(plate_detector: &str, plate_reader: &str) -> Models {
    let config = ModelsConfig {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fetched"),
        plate_detector: plate_detector.into(),
        plate_reader: plate_reader.into(),
        ..Default::default()
    };
    Models::load(&config).expect("models missing: run scripts/setup")
}

/// An image file as a camera's frame (I420).
fn open_frame(path: &Path) -> I420Image {
    I420Image::from_bgr(&BgrImage::open(path).unwrap()).unwrap()
}

fn gate_frame(name: &str) -> (I420Image, [f32; 4]) {
    let dir = shared().join("data/vn_plate_detect_extra/dungnt_parking_gate");
    let img = open_frame(&dir.join("images").join(format!("{name}.jpg")));
    // YOLO label: class cx cy w h, normalised.
    let label = std::fs::read_to_string(dir.join("labels").join(format!("{name}.txt"))).unwrap();
    let v: Vec<f32> = label
        .split_whitespace()
        .skip(1)
        .take(4)
        .map(|x| x.parse().unwrap())
        .collect();
    let (w, h) = (img.width as f32, img.height as f32);
    let b = [
        (v[0] - v[2] / 2.0) * w,
        (v[1] - v[3] / 2.0) * h,
        (v[0] + v[2] / 2.0) * w,
        (v[1] + v[3] / 2.0) * h,
    ];
    (img, b)
}

#[test]
fn yunet_finds_the_five_faces_of_the_group_photo() {
    let m = models();
    let img = open_frame(&shared().join("media/faces/group_5_faces.jpg"));
    let faces = m.faces.detect(&img, 0.7).unwrap();
    assert_eq!(faces.len(), 5, "{faces:?}");
    for f in &faces {
        let [x1, y1, x2, y2] = f.bbox;
        assert!(x2 - x1 > 10.0 && y2 - y1 > 10.0);
        for [x, y] in f.landmarks {
            assert!(
                x >= x1 - 2.0 && x <= x2 + 2.0 && y >= y1 - 2.0 && y <= y2 + 2.0,
                "landmark outside face {f:?}"
            );
        }
        // Eyes above the mouth corners, nose between.
        assert!(f.landmarks[0][1] < f.landmarks[3][1] && f.landmarks[1][1] < f.landmarks[4][1]);
        assert!(f.landmarks[2][1] > f.landmarks[0][1] && f.landmarks[2][1] < f.landmarks[3][1]);
    }
    // No two faces overlap: NMS removed duplicates.
    for (i, a) in faces.iter().enumerate() {
        for b in &faces[i + 1..] {
            assert!(geometry::iou(&a.bbox, &b.bbox) < 0.3);
        }
    }
}

#[test]
fn yunet_finds_no_face_in_a_car_frame() {
    let (img, _) = gate_frame("e4a7bc1c-37112");
    assert!(models().faces.detect(&img, 0.7).unwrap().is_empty());
}

#[test]
fn plate_detector_box_matches_the_human_label() {
    let m = models();
    for name in ["e4a7bc1c-37112", "3e4fefb8-38696", "d127aacf-36972"] {
        let (img, label) = gate_frame(name);
        let plates = m.plates.detect(&img, 0.5).unwrap();
        let best = plates
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .expect("no plate found");
        let iou = geometry::iou(&best.bbox, &label);
        assert!(
            iou > 0.6,
            "{name}: IoU {iou} of {:?} with label {label:?}",
            best.bbox
        );
        assert_eq!(best.lines, 1, "{name}: car plates here are one-line");
        // The corners go round the plate: TL, TR, BR, BL.
        let c = best.corners;
        assert!(
            c[0][0] < c[1][0] && c[3][0] < c[2][0] && c[0][1] < c[3][1] && c[1][1] < c[2][1],
            "{name}: {c:?}"
        );
    }
}

#[test]
fn rectified_plates_read_exactly() {
    let m = models();
    for (name, chars) in [
        ("e4a7bc1c-37112", "51A60216"),
        ("3e4fefb8-38696", "51A85325"),
        ("d127aacf-36972", "51G10209"),
    ] {
        let (img, _) = gate_frame(name);
        let d = m
            .analyze(
                &img,
                &[crate::config::DetectKind::Plates],
                &Default::default(),
            )
            .unwrap();
        assert!(
            d.plates.iter().any(|p| p.chars == chars),
            "{name}: {:?}",
            d.plates
        );
    }
}

#[test]
fn a_corrupt_model_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fetched");
    for f in [
        crate::config::DEFAULT_FACE_DETECTOR,
        crate::config::DEFAULT_PLATE_READER,
    ] {
        std::fs::copy(real.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join(crate::config::DEFAULT_PLATE_DETECTOR),
        b"not onnx",
    )
    .unwrap();
    let config = ModelsConfig {
        dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let e = format!("{:#}", Models::load(&config).err().unwrap());
    assert!(
        e.contains("plate_detector")
            && e.contains(crate::config::DEFAULT_PLATE_DETECTOR)
            && e.contains("sha256"),
        "{e}"
    );

    std::fs::remove_file(dir.path().join(crate::config::DEFAULT_PLATE_DETECTOR)).unwrap();
    let e = format!("{:#}", Models::load(&config).err().unwrap());
    assert!(e.contains("scripts/setup"), "{e}");
}

/// A real model named for the wrong role (each default model put in each
/// other role) is refused when loaded, naming the key and the file, rather
/// than failing every frame of every camera.
#[test]
fn a_model_named_for_the_wrong_role_is_refused_at_load() {
    let defaults = ModelsConfig::default();
    let files = [
        defaults.face_detector.clone(),
        defaults.plate_detector.clone(),
        defaults.plate_reader.clone(),
    ];
    for (role, wrong) in [
        ("face_detector", &files[1]),
        ("face_detector", &files[2]),
        ("plate_detector", &files[0]),
        ("plate_detector", &files[2]),
        ("plate_reader", &files[0]),
        ("plate_reader", &files[1]),
    ] {
        let mut config = ModelsConfig {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fetched"),
            ..Default::default()
        };
        match role {
            "face_detector" => config.face_detector = wrong.clone(),
            "plate_detector" => config.plate_detector = wrong.clone(),
            _ => config.plate_reader = wrong.clone(),
        }
        let e = format!("{:#}", Models::load(&config).err().unwrap());
        assert!(
            e.contains(&format!("models.{role} = `{wrong}` does not fit")) && e.contains("layout"),
            "{role} = {wrong}: {e}"
        );
    }
}

/// The agent's pre- and post-processing against an independent reference
/// implementation (tests/reference/make_reference.py, numpy + OpenCV +
/// onnxruntime in Python) on real images. JPEG decoders differ slightly
/// between the two, hence the tolerances.
#[test]
fn outputs_match_the_reference_implementation() {
    const PX: f32 = 1.5;
    const SCORE: f32 = 0.02;
    let reference: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/reference/reference_outputs.json"
    ))
    .unwrap();
    let close = |a: &serde_json::Value, b: &[f32], tol: f32, what: &str| {
        let a: Vec<f32> = a
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{what}: reference {a:?}, agent {b:?}");
        }
    };
    let mut compared = (0, 0);
    for set in reference["model_sets"].as_array().unwrap() {
        let m = models_with(
            set["plate_detector"].as_str().unwrap(),
            set["plate_reader"].as_str().unwrap(),
        );
        for entry in set["images"].as_array().unwrap() {
            let name = entry["image"].as_str().unwrap();
            let img = open_frame(&shared().join(name));
            let d = m
                .analyze(
                    &img,
                    &[
                        crate::config::DetectKind::Plates,
                        crate::config::DetectKind::Faces,
                    ],
                    &Default::default(),
                )
                .unwrap();

            let ref_faces = entry["faces"].as_array().unwrap();
            assert_eq!(d.faces.len(), ref_faces.len(), "{name}: face count");
            for (r, f) in ref_faces.iter().zip(&d.faces) {
                close(&r["bbox"], &f.bbox, PX, &format!("{name} face box"));
                close(
                    &serde_json::json!([r["score"]]),
                    &[f.score],
                    SCORE,
                    &format!("{name} face score"),
                );
                let flat: Vec<f32> = f.landmarks.iter().flatten().copied().collect();
                let ref_flat = serde_json::Value::Array(
                    r["landmarks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|p| p.as_array().unwrap().clone())
                        .collect(),
                );
                close(&ref_flat, &flat, PX, &format!("{name} landmarks"));
                compared.0 += 1;
            }

            let ref_plates = entry["plates"].as_array().unwrap();
            assert_eq!(d.plates.len(), ref_plates.len(), "{name}: plate count");
            for (r, p) in ref_plates.iter().zip(&d.plates) {
                close(&r["bbox"], &p.bbox, PX, &format!("{name} plate box"));
                let flat: Vec<f32> = p.corners.iter().flatten().copied().collect();
                let ref_flat = serde_json::Value::Array(
                    r["corners"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|c| c.as_array().unwrap().clone())
                        .collect(),
                );
                close(&ref_flat, &flat, PX, &format!("{name} plate corners"));
                close(
                    &serde_json::json!([r["score"], r["read_confidence"]]),
                    &[p.detector_score, p.read_confidence],
                    SCORE,
                    &format!("{name} plate scores"),
                );
                assert_eq!(r["chars"].as_str().unwrap(), p.chars, "{name}: plate read");
                assert_eq!(
                    r["lines"].as_u64().unwrap() as u8,
                    p.lines,
                    "{name}: plate lines"
                );
                compared.1 += 1;
            }
        }
    }
    assert!(compared.0 >= 18 && compared.1 >= 8, "compared {compared:?}");
}

/// A 10-character electric-motorbike plate with `Đ` (`29-MĐ1 234.56`),
/// which the reader's alphabet and slots must hold. The shared footage has
/// none: a flat render from the reader's own synthetic generator
/// (`models/vn/synth.py`, drawn for this test, not a training sample) is
/// pasted into a real gate frame, where detector, rectification and
/// reader must find and read it as they would a camera's plate.
#[test]
fn a_ten_character_plate_with_dj_is_read() {
    let dir = shared().join("data/vn_plate_detect_extra/dungnt_parking_gate/images");
    let mut frame = BgrImage::open(&dir.join("e4a7bc1c-37112.jpg")).unwrap();
    let plate = BgrImage::open(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/plate_29MD123456.png"),
    )
    .unwrap();
    let plate = image_ops::resize(&plate, 114, 84).unwrap();
    let (x0, y0) = (60, 60);
    for y in 0..plate.height as usize {
        let row = &plate.data[y * plate.width as usize * 3..(y + 1) * plate.width as usize * 3];
        let at = ((y0 + y) * frame.width as usize + x0) * 3;
        frame.data[at..at + row.len()].copy_from_slice(row);
    }
    let d = models()
        .analyze(
            &I420Image::from_bgr(&frame).unwrap(),
            &[crate::config::DetectKind::Plates],
            &Default::default(),
        )
        .unwrap();
    let read: Vec<_> = d.plates.iter().map(|p| p.chars.as_str()).collect();
    assert!(read.contains(&"29MĐ123456"), "{read:?}");
}
