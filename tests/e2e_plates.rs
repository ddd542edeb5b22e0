//! End to end, as deployed: an RTSP camera serving real car footage, the
//! agent, and a real MQTT broker; the test subscribes like the IOC would.

mod support;

use std::time::Duration;

use support::*;

/// Plates a person reads in the frames the clip is made from
/// (../shared/data/vn_plate_detect_extra/dungnt_parking_gate).
const FRAMES: &[(&str, &str)] = &[
    ("e4a7bc1c-37112.jpg", "51A60216"), // white Mazda, "51A-602.16"
    ("3e4fefb8-38696.jpg", "51A85325"), // silver Toyota, "51A-853.25"
];

#[test]
fn rtsp_camera_to_mqtt_plate_events() {
    let frames = shared().join("data/vn_plate_detect_extra/dungnt_parking_gate/images");
    let work = tempfile::tempdir().unwrap();
    let clip = work.path().join("gate.mp4");
    clip_from_images(
        &FRAMES
            .iter()
            .map(|(f, _)| frames.join(f))
            .collect::<Vec<_>>(),
        4,
        &clip,
    );

    let broker = Mosquitto::start();
    let camera = TestCam::start(&[("gate", &clip)]);
    let sub = Subscriber::connect(broker.port, "matthan/v1/#");
    let metrics_port = free_port();
    let mut agent = Agent::start(&format!(
        r#"
[site]
id = "test-site"
name = "Cổng bãi xe (test)"

[models]
dir = "{models}"

[[camera]]
id = "gate-1"
name = "Parking gate, entry lane"
source = "{rtsp}"
lanes = ["entry"]
detect = ["plates"]
location = {{ lat = 10.7769, lon = 106.7009, address = "Quận 1, TP. Hồ Chí Minh" }}

[evidence]
# Long enough that the first package is still recording when the test
# acknowledges it on sight of its event.
post_seconds = 10

[outputs.mqtt]
url = "{mqtt}"

[health]
metrics_listen = "127.0.0.1:{metrics}"
"#,
        models = models_dir().display(),
        rtsp = camera.url("gate"),
        mqtt = broker.url(),
        metrics = metrics_port,
    ));

    let wanted: Vec<&str> = FRAMES.iter().map(|(_, chars)| *chars).collect();
    // The IOC acknowledges the first event's package as soon as the event
    // arrives, while the package is still recording its post-roll.
    let first = sub.wait_until(Duration::from_secs(120), "the first plate event", |msgs| {
        msgs.iter().any(|m| {
            m.topic.ends_with("/event/plate")
                && m.text().contains(&format!("\"chars\":\"{}\"", wanted[0]))
        })
    });
    let early: serde_json::Value = first
        .iter()
        .find(|m| m.topic.ends_with("/event/plate") && m.text().contains(wanted[0]))
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .unwrap();
    let early = early["id"].as_str().unwrap().to_string();
    publish(
        broker.port,
        "matthan/v1/test-site/evidence/ack",
        &format!(r#"{{"id": "{early}"}}"#),
    );
    sub.wait_until(
        Duration::from_secs(120),
        "a plate event for every plate in the clip",
        |msgs| {
            let events = msgs
                .iter()
                .filter(|m| m.topic.ends_with("/event/plate"))
                .map(|m| m.text())
                .collect::<Vec<_>>();
            wanted.iter().all(|w| {
                events
                    .iter()
                    .any(|e| e.contains(&format!("\"chars\":\"{w}\"")))
            })
        },
    );
    // Each plate event's evidence package is sealed and announced; the IOC
    // acknowledges one (and sends one malformed acknowledgement).
    let notices = sub.wait_until(
        Duration::from_secs(60),
        "an evidence notice for each plate event",
        |msgs| {
            msgs.iter()
                .filter(|m| m.topic == "matthan/v1/test-site/gate-1/evidence")
                .count()
                >= wanted.len()
        },
    );
    let sealed: Vec<serde_json::Value> = notices
        .iter()
        .filter(|m| m.topic.ends_with("/evidence"))
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert!(
        sealed.iter().all(|n| n["status"] == "sealed"),
        "{sealed:#?}"
    );
    let acked = sealed
        .iter()
        .map(|n| n["event_id"].as_str().unwrap().to_string())
        .find(|id| *id != early)
        .unwrap();
    publish(broker.port, "matthan/v1/test-site/evidence/ack", "not json");
    // An IOC acknowledges in batches: one of 301 ids is a 12 KB message,
    // more than an MQTT client takes by default (rumqttc: 10 KiB).
    let batch: Vec<String> = std::iter::once(acked.clone())
        .chain((0..300).map(|i| format!("00000000-0000-7000-8000-{i:012}")))
        .collect();
    let batch = serde_json::json!({ "ids": batch }).to_string();
    assert!(batch.len() > 10 * 1024);
    publish(broker.port, "matthan/v1/test-site/evidence/ack", &batch);
    // The camera replays the clip after it ends (a reconnect): the same
    // cars again within the dedup window must not make new events (both
    // cars seen again, and still two passes, below).
    let metric_now = |name: &str| metric(&http_get(metrics_port, "/metrics"), name);
    poll(
        Duration::from_secs(60),
        "the replay was not suppressed as duplicates",
        &agent,
        || metric_now("matthan_duplicate_plates_total{camera=\"gate-1\"}").filter(|&n| n >= 2.0),
    );
    // The clip ends every 8 s and the camera reconnects: streaming again within seconds.
    poll(
        Duration::from_secs(15),
        "the camera did not stream again",
        &agent,
        || metric_now("matthan_camera_streaming{camera=\"gate-1\"}").filter(|&s| s == 1.0),
    );
    let metrics = http_get(metrics_port, "/metrics");
    let value = |name: &str| -> f64 {
        metric(&metrics, name).unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert!(value("matthan_frames_analysed_total{camera=\"gate-1\"}") >= 10.0);
    assert_eq!(value("matthan_plate_passes_total{camera=\"gate-1\"}"), 2.0);
    assert_eq!(value("matthan_outbox_pending"), 0.0);
    assert!(value("matthan_outbox_acknowledged_total") >= 2.0);
    assert_eq!(value("matthan_evidence_sealed_total"), 2.0);
    assert_eq!(value("matthan_evidence_failed_total"), 0.0);
    let status = agent.process.terminate();
    let messages = sub.messages.lock().unwrap().clone();
    assert!(
        status.success(),
        "agent exited with {status}; log:\n{}",
        agent.log_text()
    );

    let events = parse_events(&messages);
    assert!(
        events
            .iter()
            .all(|(topic, _)| topic.starts_with("matthan/v1/test-site/gate-1/event/plate")),
        "events on unexpected topics"
    );
    assert_contiguous_sequences(&events);
    for (_, e) in &events {
        assert_eq!(e["kind"], "plate");
        assert_eq!(
            e["camera"]["location"]["address"],
            "Quận 1, TP. Hồ Chí Minh"
        );
        assert_eq!(e["frame"]["width"], 472);
        let roles: Vec<_> = e["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert!(
            roles.contains(&"plate_detector") && roles.contains(&"plate_reader"),
            "{roles:?}"
        );
    }
    // One vehicle, one event: exactly one event per car, with the right reading.
    let mut chars: Vec<_> = events
        .iter()
        .map(|(_, e)| e["plate"]["chars"].as_str().unwrap().to_string())
        .collect();
    chars.sort();
    assert_eq!(
        chars,
        vec!["51A60216", "51A85325"],
        "plates: {:#?}",
        events.iter().map(|e| &e.1["plate"]).collect::<Vec<_>>()
    );
    for (_, e) in &events {
        let p = &e["plate"];
        assert!(
            p["track"]["frames"].as_u64().unwrap() >= 3,
            "a 4 s view at 2 fps gives several frames: {p}"
        );
        assert_eq!(p["kind"], "car");
        assert_eq!(p["colour"], "white");
        assert_eq!(p["province"]["code"], 51);
    }
    let texts: Vec<_> = events
        .iter()
        .map(|(_, e)| e["plate"]["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        texts.contains(&"51A-602.16".to_string()),
        "display text missing: {texts:?}"
    );

    // The agent said it was online while running, and offline when it stopped.
    let after = sub.wait_until(Duration::from_secs(10), "offline status", |msgs| {
        msgs.iter()
            .any(|m| m.topic == "matthan/v1/test-site/status" && m.text().contains("offline"))
    });
    let states: Vec<String> = after
        .iter()
        .filter(|m| m.topic == "matthan/v1/test-site/status")
        .map(|m| m.text())
        .collect();
    assert!(
        states.first().is_some_and(|s| s.contains("\"online\"")),
        "{states:?}"
    );
    assert!(
        after
            .iter()
            .any(|m| m.topic == "matthan/v1/test-site/gate-1/status"
                && m.text().contains("streaming")),
        "no camera status"
    );
    let log = agent.log_text();
    assert!(
        log.contains("plate event"),
        "each event is one log line:\n{log}"
    );
    assert!(
        log.contains("evidence acknowledgement ignored"),
        "a malformed acknowledgement is named in the log:\n{log}"
    );

    // The packages are whole and signed, and the acknowledgement is in
    // the custody log.
    let store = agent.dir.path().join("state/evidence");
    let (verified, report) = verify_evidence(&store);
    assert!(verified, "{report}");
    let custody = std::fs::read_to_string(store.join("custody.log")).unwrap();
    for id in [&acked, &early] {
        assert!(
            custody
                .lines()
                .any(|l| l.contains("\"acknowledged\"") && l.contains(id.as_str())),
            "{id} not acknowledged:\n{custody}"
        );
    }
    assert!(
        log.contains("still being recorded"),
        "the early acknowledgement waited for its package:\n{log}"
    );
}

#[test]
fn a_broken_camera_does_not_stop_the_others() {
    let frames = shared().join("data/vn_plate_detect_extra/dungnt_parking_gate/images");
    let work = tempfile::tempdir().unwrap();
    let clip = work.path().join("gate.mp4");
    clip_from_images(&[frames.join(FRAMES[0].0)], 6, &clip);
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, "matthan/v1/#");
    let dead_port = free_port();
    let mut agent = Agent::start(&format!(
        r#"
[site]
id = "s"
[models]
dir = "{models}"
[[camera]]
id = "dead"
source = "rtsp://127.0.0.1:{dead_port}/nothing"
rtsp_transport = "tcp"
[[camera]]
id = "alive"
source = "file://{clip}"
detect = ["plates"]
[outputs.mqtt]
url = "{mqtt}"
"#,
        models = models_dir().display(),
        clip = clip.display(),
        mqtt = broker.url(),
    ));
    sub.wait_until(
        Duration::from_secs(60),
        "a plate from the working camera and a reconnecting status from the dead one",
        |msgs| {
            msgs.iter().any(|m| {
                m.topic == "matthan/v1/s/alive/event/plate" && m.text().contains("51A60216")
            }) && msgs
                .iter()
                .any(|m| m.topic == "matthan/v1/s/dead/status" && m.text().contains("reconnecting"))
        },
    );
    assert!(
        agent.process.child.try_wait().unwrap().is_none()
            || agent.process.wait_exit(Duration::from_secs(1)).success()
    );
    let log = agent.log_text();
    assert!(
        log.contains("camera failed"),
        "the dead camera's failure is logged:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
