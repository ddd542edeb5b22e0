//! Faces end to end on a real clip read as a file source, to JSON lines and
//! MQTT at once.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn face_clip_to_events() {
    let clip = shared().join("media/faces/short_hamilton_clip.mp4");
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, "matthan/v1/#");
    let out = tempfile::tempdir().unwrap();
    let jsonl = out.path().join("events.jsonl");
    let mut agent = Agent::start(&format!(
        r#"
[site]
id = "lobby"
[analysis]
fps = 2
[models]
dir = "{models}"
[[camera]]
id = "door"
source = "file://{clip}"
realtime = false
detect = ["faces"]
[outputs.mqtt]
url = "{mqtt}"
[outputs.jsonl]
path = "{jsonl}"
"#,
        models = models_dir().display(),
        clip = clip.display(),
        mqtt = broker.url(),
        jsonl = jsonl.display(),
    ));
    // A file that does not loop ends the run by itself.
    let status = agent.process.wait_exit(Duration::from_secs(120));
    assert!(
        status.success(),
        "agent failed: {status}\n{}",
        agent.log_text()
    );

    let lines = read_jsonl(&jsonl);
    assert!(!lines.is_empty(), "expected face events in the clip");
    // Every event written to the file also reached the broker, in order.
    let messages = sub.wait_until(
        Duration::from_secs(10),
        "all face events over MQTT",
        |msgs| {
            msgs.iter()
                .filter(|m| m.topic.ends_with("/event/face"))
                .count()
                >= lines.len()
        },
    );
    let events = parse_events(&messages);
    assert_contiguous_sequences(&events);
    assert_eq!(events.len(), lines.len());
    for (_, e) in &events {
        assert_eq!(e["kind"], "face");
        let b: Vec<f64> = e["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            b[2] - b[0] > 10.0 && b[3] - b[1] > 10.0,
            "face box too small: {b:?}"
        );
        // The eyes lie inside the face box, the right eye (image left) left of the left eye.
        let lm = e["face"]["landmarks"].as_array().unwrap();
        let (rx, lx) = (lm[0][0].as_f64().unwrap(), lm[1][0].as_f64().unwrap());
        assert!(
            b[0] <= rx && rx < lx && lx <= b[2],
            "landmarks {lm:?} vs box {b:?}"
        );
    }
    // One event per face pass, not per frame: the clip's faces stay in view
    // for many analysed frames.
    let frames: Vec<u64> = events
        .iter()
        .map(|(_, e)| e["face"]["track"]["frames"].as_u64().unwrap())
        .collect();
    assert!(frames.iter().any(|&f| f >= 3), "face tracks {frames:?}");
    let tracks: std::collections::HashSet<u64> = events
        .iter()
        .map(|(_, e)| e["face"]["track"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(tracks.len(), events.len(), "one event per track");
}
