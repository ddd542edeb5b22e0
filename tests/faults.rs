//! Never lose an event: the real agent, a real broker that goes away, an
//! agent killed with SIGKILL, an outbox cut mid-record. Quick versions run
//! in the default test run.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

/// Six cars at the gate, one second each, looping: with no dedup window
/// every pass is an event, about one a second.
fn gate_loop(work: &Path) -> std::path::PathBuf {
    let frames = shared().join("data/vn_plate_detect_extra/dungnt_parking_gate/images");
    let clip = work.join("gate-loop.mp4");
    let cars = [
        "e4a7bc1c-37112",
        "3e4fefb8-38696",
        "bd68329a-37050",
        "d127aacf-36972",
        "411597a0-40844",
        "6e51abab-37550",
    ];
    clip_from_images(
        &cars
            .iter()
            .map(|c| frames.join(format!("{c}.jpg")))
            .collect::<Vec<_>>(),
        1,
        &clip,
    );
    clip
}

fn config(clip: &Path, mqtt: &str, state: &Path) -> String {
    format!(
        r#"
[site]
id = "s"
[analysis]
fps = 4
[events]
dedup_seconds = 0
[models]
dir = "{models}"
[storage]
dir = "{state}"
[[camera]]
id = "gate"
source = "file://{clip}"
loop = true
detect = ["plates"]
[outputs.mqtt]
url = "{mqtt}"
[outputs.jsonl]
path = "{state}/events.jsonl"
"#,
        models = models_dir().display(),
        clip = clip.display(),
        state = state.display(),
    )
}

/// [`config`] with the camera on the test camera's `/gate` mount.
fn rtsp_config(clip: &Path, mqtt: &str, state: &Path, cam_port: u16) -> String {
    config(clip, mqtt, state)
        .replace(
            &format!("file://{}", clip.display()),
            &format!("rtsp://127.0.0.1:{cam_port}/gate"),
        )
        .replace("loop = true\n", "rtsp_transport = \"tcp\"\n")
}

/// How many plate events have been received.
fn plate_events(messages: &[Received]) -> usize {
    messages
        .iter()
        .filter(|r| r.topic.ends_with("/event/plate"))
        .count()
}

/// Waits for plate events after the `before` already counted.
fn wait_for_more_events(sub: &Subscriber, before: usize, within: Duration, what: &str) {
    sub.wait_until(within, what, |m| plate_events(m) > before);
}

/// Waits for the `gate` camera's retained status to say `state`.
fn wait_for_camera_state(sub: &Subscriber, state: &str) {
    sub.wait_until(
        Duration::from_secs(30),
        &format!("the camera reported {state}"),
        |m| {
            m.iter()
                .any(|r| r.topic == "matthan/v1/s/gate/status" && r.text().contains(state))
        },
    );
}

/// Plate events received, by seq (duplicates with the same id collapse).
fn by_seq(messages: &[Received]) -> BTreeMap<u64, serde_json::Value> {
    let mut out: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    for (_, e) in parse_events(messages) {
        let seq = e["seq"].as_u64().unwrap();
        if let Some(prev) = out.get(&seq) {
            assert_eq!(
                prev["id"], e["id"],
                "seq {seq} was given to two different events"
            );
        }
        out.insert(seq, e);
    }
    out
}

/// Waits until the agent has written `n` events to its JSON-lines file;
/// returns them.
fn wait_for_written(jsonl: &Path, n: usize, agent: &Agent) -> Vec<serde_json::Value> {
    poll(
        Duration::from_secs(60),
        &format!("fewer than {n} events written"),
        agent,
        || {
            let events: Vec<serde_json::Value> = std::fs::read_to_string(jsonl)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["kind"] != "evidence")
                .collect();
            (events.len() >= n).then_some(events)
        },
    )
}

/// Waits until every event id in `ids` has been received.
fn wait_for_ids(sub: &Subscriber, ids: &[String], what: &str) -> Vec<Received> {
    sub.wait_until(Duration::from_secs(60), what, |m| {
        let got: Vec<String> = m
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).ok())
            .map(|e| e["id"].as_str().unwrap_or("").to_string())
            .collect();
        ids.iter().all(|id| got.contains(id))
    })
}

fn ids_of(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn assert_no_gap(events: &BTreeMap<u64, serde_json::Value>) {
    let seqs: Vec<u64> = events.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap in sequence numbers"
    );
}

#[test]
fn broker_outage_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_lasting_on(port, store.path());
    let sub = Subscriber::connect_lasting(port, "matthan/v1/s/gate/event/#");
    let mut agent = Agent::start(&config(
        &clip,
        &format!("mqtt://127.0.0.1:{port}"),
        work.path(),
    ));
    sub.wait_until(Duration::from_secs(60), "first events", |m| m.len() >= 2);

    broker.stop();
    // 8 s in the default run; the long version (the issue's 30 s) is
    // MATTHAN_OUTAGE_SECONDS=30 cargo test --test faults broker_outage
    let outage: u64 = std::env::var("MATTHAN_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    std::thread::sleep(Duration::from_secs(outage));
    // Events only: evidence notices share the file but not the topic.
    let written_while_down = read_jsonl(&work.path().join("events.jsonl")).len();
    let _broker = Mosquitto::start_lasting_on(port, store.path());
    let wanted = written_while_down + 2;
    let messages = sub.wait_until(
        Duration::from_secs(60),
        "every event written during the outage",
        |m| by_seq(m).len() >= wanted,
    );
    let events = by_seq(&messages);
    assert_no_gap(&events);
    eprintln!(
        "{outage} s outage: {written_while_down} events written by the end of it; {} received, seq 1..{} without a gap",
        events.len(),
        events.len()
    );
    let status = agent.process.terminate();
    assert!(status.success(), "{}", agent.log_text());
    assert!(
        agent.log_text().contains("MQTT connection lost"),
        "the outage is logged"
    );
}

#[test]
fn sigkill_then_restart_delivers_everything_written_before() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let port = free_port();
    // No broker yet: events pile up in the outbox.
    let cfg = config(&clip, &format!("mqtt://127.0.0.1:{port}"), work.path());
    let jsonl = work.path().join("events.jsonl");
    let mut agent = Agent::start(&cfg);
    wait_for_written(&jsonl, 4, &agent);
    agent.process.child.kill().unwrap(); // SIGKILL
    agent.process.child.wait().unwrap();
    let before = read_jsonl(&jsonl);

    let _broker = Mosquitto::start_on(port);
    let sub = Subscriber::connect(port, "matthan/v1/s/gate/event/#");
    let mut again = Agent::start(&cfg);
    let messages = wait_for_ids(
        &sub,
        &ids_of(&before),
        "every event written before the kill",
    );
    let events = by_seq(&messages);
    // Numbering went on across the restart: no seq repeats with another id, none is skipped.
    assert_no_gap(&events);
    assert!(events.len() >= before.len());
    eprintln!(
        "{} events written before SIGKILL; all delivered after restart, {} in all without a gap",
        before.len(),
        events.len()
    );
    again.process.terminate();
}

#[test]
fn an_outbox_cut_mid_record_keeps_every_complete_record() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let port = free_port();
    let cfg = config(&clip, &format!("mqtt://127.0.0.1:{port}"), work.path());
    let jsonl = work.path().join("events.jsonl");
    let mut agent = Agent::start(&cfg);
    wait_for_written(&jsonl, 3, &agent);
    agent.process.terminate();
    let before = read_jsonl(&jsonl);
    // Cut the newest record in half, as a power cut mid-write would.
    let seg = std::fs::read_dir(work.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .max()
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 40)
        .unwrap();

    let _broker = Mosquitto::start_on(port);
    let sub = Subscriber::connect(port, "matthan/v1/s/gate/event/#");
    let mut again = Agent::start(&cfg);
    wait_for_ids(
        &sub,
        &ids_of(&before[..before.len() - 1]),
        "every complete record",
    );
    again.process.terminate();
    assert!(
        again.log_text().contains("torn"),
        "the cut is reported: {}",
        again.log_text()
    );
}

#[test]
fn camera_server_restart_resumes_within_seconds() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let broker = Mosquitto::start();
    let cam_port = free_port();
    let camera = TestCam::start_on(cam_port, &[("gate", &clip)]);
    let sub = Subscriber::connect(broker.port, "matthan/v1/s/#");
    let cfg = rtsp_config(&clip, &broker.url(), work.path(), cam_port);
    let mut agent = Agent::start(&cfg);
    wait_for_more_events(&sub, 0, Duration::from_secs(60), "events from the camera");

    drop(camera);
    wait_for_camera_state(&sub, "reconnecting");
    std::thread::sleep(Duration::from_secs(6));
    let before = plate_events(&sub.messages.lock().unwrap());
    let _camera = TestCam::start_on(cam_port, &[("gate", &clip)]);
    wait_for_more_events(
        &sub,
        before,
        Duration::from_secs(30),
        "events after the camera came back",
    );
    // "Within seconds": the agent never waits longer than 5 s between
    // attempts, however long the camera was away.
    let retries: Vec<f64> = sub
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.topic == "matthan/v1/s/gate/status")
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).ok())
        .filter_map(|v| v["retry_in_s"].as_f64())
        .collect();
    assert!(
        !retries.is_empty() && retries.iter().all(|&s| s <= 5.0),
        "{retries:?}"
    );
    let status = agent.process.terminate();
    assert!(status.success());
    assert!(!agent.log_text().contains("panicked"));
}

/// An event names its evidence package before the package is sealed (the
/// clip needs the seconds after the frame). Killed in between, the agent
/// tells the IOC at its next start that the package was lost, instead of
/// leaving the IOC waiting for it.
#[test]
fn a_package_cut_short_by_a_kill_is_reported_at_the_next_start() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let port = free_port();
    let cfg = config(&clip, &format!("mqtt://127.0.0.1:{port}"), work.path())
        + "[evidence]\npost_seconds = 30\n";
    let jsonl = work.path().join("events.jsonl");
    let mut agent = Agent::start(&cfg);
    let first = wait_for_written(&jsonl, 1, &agent)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    agent.process.child.kill().unwrap(); // SIGKILL, 30 s before the package is due
    agent.process.child.wait().unwrap();
    let promise = work
        .path()
        .join("evidence/.pending")
        .join(format!("{first}.json"));
    assert!(promise.is_file(), "no record of the pending package");
    assert!(
        read_notices(&jsonl).iter().all(|n| n["event_id"] != first),
        "a notice came before the kill"
    );

    let mut again = Agent::start(&cfg);
    let notice = poll(
        Duration::from_secs(30),
        &format!("no notice for {first} after the restart"),
        &again,
        || {
            read_notices(&jsonl)
                .into_iter()
                .find(|n| n["event_id"] == first)
        },
    );
    assert_eq!(notice["status"], "failed", "{notice}");
    assert!(
        notice["error"].as_str().unwrap().contains("stopped"),
        "{notice}"
    );
    // Settled once the notice is stored in the outbox, which the JSON line
    // does not wait for.
    poll(
        Duration::from_secs(10),
        "the promise was kept after its notice",
        &again,
        || (!promise.exists()).then_some(()),
    );
    assert!(again.process.terminate().success());
}

/// Many IP cameras also send their microphone, and may list it first: the
/// agent must pick the video track, whichever track's packets come first.
#[test]
fn a_camera_that_also_sends_audio_gives_events() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let broker = Mosquitto::start();
    let cam_port = free_port();
    let _camera = TestCam::start_with(cam_port, &[("gate", &clip)], &["--with-audio"]);
    let sub = Subscriber::connect(broker.port, "matthan/v1/s/#");
    let cfg = rtsp_config(&clip, &broker.url(), work.path(), cam_port);
    let mut agent = Agent::start(&cfg);
    wait_for_more_events(
        &sub,
        0,
        Duration::from_secs(60),
        "plate events from the camera",
    );
    assert!(agent.process.terminate().success());
    let log = agent.log_text();
    assert!(!log.contains("camera failed"), "{log}");
}

#[test]
fn a_garbage_stream_is_reported_and_retried_without_panic() {
    let work = tempfile::tempdir().unwrap();
    let garbage = work.path().join("garbage.mp4");
    let mut bytes = Vec::new();
    let mut x = 12345u32;
    for _ in 0..200_000 {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        bytes.push((x >> 16) as u8);
    }
    std::fs::write(&garbage, bytes).unwrap();
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, "matthan/v1/s/#");
    let mut agent = Agent::start(&format!(
        "[site]\nid = \"s\"\n[models]\ndir = \"{}\"\n[storage]\ndir = \"{}\"\n[[camera]]\nid = \"junk\"\nsource = \"file://{}\"\n[outputs.mqtt]\nurl = \"{}\"\n",
        models_dir().display(),
        work.path().display(),
        garbage.display(),
        broker.url()
    ));
    let msgs = sub.wait_until(
        Duration::from_secs(30),
        "a reconnecting status with a reason",
        |m| {
            m.iter()
                .filter(|r| {
                    r.topic == "matthan/v1/s/junk/status" && r.text().contains("reconnecting")
                })
                .count()
                >= 2
        },
    );
    let status: serde_json::Value = serde_json::from_slice(
        &msgs
            .iter()
            .rfind(|r| r.topic == "matthan/v1/s/junk/status")
            .unwrap()
            .payload,
    )
    .unwrap();
    assert!(
        status["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{status}"
    );
    assert!(
        agent.process.child.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    agent.process.terminate();
    assert!(
        !agent.log_text().contains("panicked"),
        "{}",
        agent.log_text()
    );
}

/// One car passing once, with storage.dir a file (nothing can be created
/// under it) and events also in `work/events.jsonl`: the config, and the
/// file in the way.
fn one_car_with_unusable_storage(work: &Path, mqtt: &str) -> (String, PathBuf) {
    let frames = shared().join("data/vn_plate_detect_extra/dungnt_parking_gate/images");
    let clip = work.join("car.mp4");
    clip_from_images(&[frames.join("e4a7bc1c-37112.jpg")], 3, &clip);
    let not_a_folder = work.join("state-is-a-file");
    std::fs::write(&not_a_folder, "x").unwrap();
    let cfg = config(&clip, mqtt, &not_a_folder)
        .replace("loop = true", "loop = false")
        .replace(
            &format!("{}/events.jsonl", not_a_folder.display()),
            &work.join("events.jsonl").display().to_string(),
        );
    (cfg, not_a_folder)
}

#[test]
fn an_unusable_outbox_folder_degrades_but_delivers() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, "matthan/v1/#");
    let (cfg, _) = one_car_with_unusable_storage(work.path(), &broker.url());
    let mut agent = Agent::start(&cfg);
    let msgs = sub.wait_until(
        Duration::from_secs(60),
        "the event and a degraded status",
        |m| {
            plate_events(m) > 0
                && m.iter()
                    .any(|r| r.topic == "matthan/v1/s/status" && r.text().contains("degraded"))
        },
    );
    let status = msgs
        .iter()
        .find(|r| r.topic == "matthan/v1/s/status" && r.text().contains("degraded"))
        .unwrap()
        .text();
    assert!(
        status.contains("storage.dir"),
        "the status says what to fix: {status}"
    );
    agent.process.wait_exit(Duration::from_secs(30));
    assert!(
        agent.log_text().contains("unusable"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn events_kept_in_the_temporary_outbox_reach_the_ioc_once_the_folder_is_fixed() {
    let work = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // No broker yet, and storage.dir unusable: the event waits in the
    // temporary outbox when the agent stops.
    let port = free_port();
    let (cfg, state) =
        one_car_with_unusable_storage(work.path(), &format!("mqtt://127.0.0.1:{port}"));
    let mut first = Agent::start_with_tmp(&cfg, Some(tmp.path()));
    first.process.wait_exit(Duration::from_secs(60));
    let ids = ids_of(&read_jsonl(&work.path().join("events.jsonl")));
    assert!(!ids.is_empty(), "{}", first.log_text());
    // Fixed, and the broker is up: the next start delivers them.
    std::fs::remove_file(&state).unwrap();
    let _broker = Mosquitto::start_on(port);
    let sub = Subscriber::connect(port, "matthan/v1/s/gate/event/#");
    let mut again = Agent::start_with_tmp(&cfg, Some(tmp.path()));
    wait_for_ids(&sub, &ids, "the events the temporary outbox held");
    again.process.wait_exit(Duration::from_secs(60));
    // The clip's car again, this run: numbered after the moved events,
    // whose numbers the unusable folder could not keep.
    let events = by_seq(
        &sub.wait_until(Duration::from_secs(30), "this run's event too", |m| {
            parse_events(m).len() > ids.len()
        }),
    );
    assert_no_gap(&events);
    assert!(again.log_text().contains("moved"), "{}", again.log_text());
}

#[test]
fn a_camera_that_goes_silent_is_reported_stalled_and_recovers() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let broker = Mosquitto::start();
    let camera = TestCam::start(&[("gate", &clip)]);
    let sub = Subscriber::connect(broker.port, "matthan/v1/s/#");
    let cfg = rtsp_config(&clip, &broker.url(), work.path(), camera.port)
        .replace("rtsp_transport", "stall_seconds = 3\nrtsp_transport");
    let mut agent = Agent::start(&cfg);
    wait_for_more_events(&sub, 0, Duration::from_secs(60), "events from the camera");

    // Frozen: the connection stays open, nothing more arrives.
    camera.signal("STOP");
    wait_for_camera_state(&sub, "stalled");
    camera.signal("CONT");
    let before = plate_events(&sub.messages.lock().unwrap());
    wait_for_more_events(
        &sub,
        before,
        Duration::from_secs(60),
        "events after the camera woke up",
    );
    agent.process.terminate();
    assert!(!agent.log_text().contains("panicked"));
}

/// A message too large for the agent, retained on the acknowledgement topic
/// (an IOC's mistake), would end every connection as soon as the broker
/// handed it over. The agent tells the broker (MQTT 5) the largest packet
/// it takes, so the broker drops that message instead, and events flow.
#[test]
fn a_huge_retained_acknowledgement_does_not_stop_delivery() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let broker = Mosquitto::start();
    let huge = work.path().join("huge.json");
    std::fs::write(&huge, vec![b' '; 9 << 20]).unwrap();
    let published = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "matthan/v1/s/evidence/ack", "-r", "-q", "1", "-f"])
        .arg(&huge)
        .status()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    assert!(published.success());
    // Not `matthan/v1/s/#`: a subscriber there would get the huge message too.
    let events = Subscriber::connect(broker.port, "matthan/v1/s/gate/event/#");
    let notices = Subscriber::connect(broker.port, "matthan/v1/s/gate/evidence");
    let mut agent = Agent::start(&config(&clip, &broker.url(), work.path()));
    wait_for_more_events(&events, 0, Duration::from_secs(60), "events");
    let before = plate_events(&events.messages.lock().unwrap());
    wait_for_more_events(&events, before, Duration::from_secs(30), "events go on");
    // And acknowledgements after it are taken.
    let id = first_sealed_package(&notices);
    acknowledge(&broker, &id);
    wait_for_acknowledged(
        work.path(),
        &id,
        &agent,
        "an acknowledgement after the huge one was not recorded",
    );
    let log = stopped_cleanly(&mut agent);
    assert!(!log.contains("connection lost"), "{log}");
}

/// Every message says it is JSON (MQTT 5's content type and UTF-8
/// payload format), events and statuses alike: a consumer's rule engine
/// need not guess.
#[test]
fn events_and_statuses_say_they_are_json() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let broker = Mosquitto::start();
    let sub = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-V",
            "mqttv5",
        ])
        .args([
            "-t",
            "matthan/v1/s/gate/event/plate",
            "-t",
            "matthan/v1/s/status",
        ])
        .args(["-C", "2", "-W", "90", "-F", "%t %C %F"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (Debian package mosquitto-clients)");
    // Subscribed long before the first event (the models load first); the
    // agent's status is retained.
    std::thread::sleep(Duration::from_millis(500));
    let mut agent = Agent::start(&config(&clip, &broker.url(), work.path()));
    let out = sub.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    for topic in ["matthan/v1/s/status", "matthan/v1/s/gate/event/plate"] {
        assert!(
            lines.contains(&format!("{topic} application/json 1")),
            "{lines}"
        );
    }
    assert!(agent.process.terminate().success());
}

/// Stops the agent as a service manager does; it must exit cleanly and
/// without a panic. Returns its log.
fn stopped_cleanly(agent: &mut Agent) -> String {
    assert!(agent.process.terminate().success());
    let log = agent.log_text();
    assert!(!log.contains("panicked"), "{log}");
    log
}

/// A broker whose access rules refuse the agent's events (an IOC's
/// mistake) says so in its PUBACK, which MQTT 3.1.1 cannot: there the
/// agent took the refusal for delivery and deleted the events. They wait
/// in the outbox, the agent's status names the topic and the reason, and
/// once the rules are fixed every event arrives, none missing, offered
/// again by the agent itself (the camera has finished: no new event
/// comes to show the way) on the same connection.
#[test]
fn events_the_broker_refuses_wait_until_its_access_rules_allow_them() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let rules = work.path().join("acl");
    // Statuses, evidence notices and acknowledgements may go; events not.
    std::fs::write(
        &rules,
        "topic readwrite matthan/v1/s/status\n\
         topic readwrite matthan/v1/s/+/status\n\
         topic readwrite matthan/v1/s/+/evidence\n\
         topic readwrite matthan/v1/s/evidence/ack\n\
         topic read #\n",
    )
    .unwrap();
    let broker = Mosquitto::start_configured(&format!("acl_file {}\n", rules.display()));
    let events = Subscriber::connect(broker.port, "matthan/v1/s/gate/event/#");
    let status = Subscriber::connect(broker.port, "matthan/v1/s/#");
    // The clip once: the camera finishes, and makes no more events. A
    // second camera, finding no faces in it, keeps the agent running.
    let cfg = format!(
        "{}\n[[camera]]\nid = \"idle\"\nsource = \"file://{}\"\nloop = true\ndetect = [\"faces\"]\n",
        config(&clip, &broker.url(), work.path()).replace("loop = true\n", ""),
        clip.display()
    );
    let mut agent = Agent::start(&cfg);
    status.wait_until(
        Duration::from_secs(60),
        "a degraded status naming the refused topic",
        |m| {
            m.iter().any(|r| {
                let t = r.text();
                t.contains("degraded")
                    && t.contains("matthan/v1/s/gate/event/plate")
                    && t.contains("not authorized")
            })
        },
    );
    wait_for_camera_state(&status, "finished");
    let jsonl = work.path().join("events.jsonl");
    assert!(read_jsonl(&jsonl).len() >= 2, "events made");
    assert_eq!(plate_events(&events.messages.lock().unwrap()), 0);
    std::fs::write(&rules, "topic readwrite #\n").unwrap();
    broker.signal("HUP");
    events.wait_until(
        Duration::from_secs(60),
        "every event made while refused, none missing",
        |m| {
            by_seq(m)
                .into_keys()
                .eq(1..=read_jsonl(&jsonl).len() as u64)
        },
    );
    status.wait_until(Duration::from_secs(10), "the status back to online", |m| {
        m.iter()
            .rev()
            .find(|r| r.topic == "matthan/v1/s/status")
            .is_some_and(|r| r.text().contains("online"))
    });
    let log = stopped_cleanly(&mut agent);
    assert!(log.contains("the broker refused an event"), "{log}");
    assert!(!log.contains("connection lost"), "{log}");
}

/// A broker that refuses events as too large (Mosquitto's
/// `message_size_limit`) answers with a code the MQTT library cannot
/// read, which ends the connection. Sent again at every reconnect, the
/// first such event would hold back every event behind it; instead it
/// waits in the outbox, the status says to raise the limit, no event as
/// large is sent again meanwhile, and the smaller messages go on.
#[test]
fn an_event_too_large_for_the_broker_waits_and_holds_back_no_other() {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    // Plate events are about 1.4 KB, evidence notices 1.2 KB.
    let broker = Mosquitto::start_configured("message_size_limit 1300\n");
    let notices = Subscriber::connect(broker.port, "matthan/v1/s/gate/evidence");
    let status = Subscriber::connect(broker.port, "matthan/v1/s/status");
    let mut agent = Agent::start(&config(&clip, &broker.url(), work.path()));
    status.wait_until(
        Duration::from_secs(60),
        "a degraded status saying events are too large",
        |m| {
            m.iter()
                .any(|r| r.text().contains("too large for the broker"))
        },
    );
    // Sent again after a reconnect, a notice comes twice: counted once.
    let distinct = |m: &[Received]| {
        m.iter()
            .map(Received::text)
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let before = distinct(&notices.messages.lock().unwrap());
    notices.wait_until(Duration::from_secs(90), "more evidence notices", |m| {
        distinct(m) > before + 8
    });
    let made = read_jsonl(&work.path().join("events.jsonl")).len();
    let log = stopped_cleanly(&mut agent);
    // A connection is lost only for an event smaller than every one
    // refused before it (the smallest refused sets what is held): with
    // the gate's six cars again and again, a few, where sending each
    // event too large would lose one connection per event.
    let losses = log.matches("MQTT connection lost").count();
    assert!(
        losses >= 1 && losses * 2 <= made,
        "{losses} connections lost for {made} events:\n{log}"
    );
}

/// The gate camera's agent, its broker, and the id of its first sealed package.
struct SealedPackage {
    work: tempfile::TempDir,
    broker: Mosquitto,
    cfg: String,
    agent: Agent,
    id: String,
}

fn with_a_sealed_package() -> SealedPackage {
    let work = tempfile::tempdir().unwrap();
    let clip = gate_loop(work.path());
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port, "matthan/v1/s/gate/evidence");
    let cfg = config(&clip, &broker.url(), work.path());
    let agent = Agent::start(&cfg);
    let id = first_sealed_package(&sub);
    SealedPackage {
        work,
        broker,
        cfg,
        agent,
        id,
    }
}

/// Waits for the camera's first sealed package; returns its id.
fn first_sealed_package(sub: &Subscriber) -> String {
    let notices = sub.wait_until(Duration::from_secs(60), "a sealed package", |m| {
        m.iter().any(|r| r.text().contains("\"sealed\""))
    });
    notices
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap())
        .find(|n| n["status"] == "sealed")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The IOC acknowledges package `id`, as it does after taking it.
fn acknowledge(broker: &Mosquitto, id: &str) {
    publish(
        broker.port,
        "matthan/v1/s/evidence/ack",
        &format!(r#"{{"id":"{id}"}}"#),
    );
}

/// Waits for the custody log in `work` to record the IOC's acknowledgement of `id`.
fn wait_for_acknowledged(work: &Path, id: &str, agent: &Agent, failure: &str) {
    let log = work.join("evidence").join("custody.log");
    poll(Duration::from_secs(30), failure, agent, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"acknowledged\"") && l.contains(id))
            .then_some(())
    });
}

/// Starts the agent again on `cfg` and waits for it to record the IOC's
/// acknowledgement of `id`, which the broker kept for it.
fn restart_and_wait_for_acknowledged(cfg: &str, work: &Path, id: &str, failure: &str) {
    let mut again = Agent::start(cfg);
    wait_for_acknowledged(work, id, &again, failure);
    assert!(again.process.terminate().success());
}

/// The IOC acknowledges a package while the gateway is away (a 4G outage,
/// a restart): the broker keeps the acknowledgement for the gateway's
/// session, and the agent logs it when it is back.
#[test]
fn an_acknowledgement_sent_while_the_agent_is_away_is_recorded() {
    let SealedPackage {
        work,
        broker,
        cfg,
        mut agent,
        id,
    } = with_a_sealed_package();
    assert!(agent.process.terminate().success());

    acknowledge(&broker, &id);
    restart_and_wait_for_acknowledged(
        &cfg,
        work.path(),
        &id,
        "the acknowledgement sent while the agent was away was not recorded",
    );
}

/// The IOC acknowledges a package, and the agent is killed before it could
/// record it (here the evidence folder's lock is held, as a `verify` would
/// hold it): the broker must still hold the acknowledgement, and hand it
/// over again when the agent is back.
#[test]
fn an_acknowledgement_not_yet_recorded_when_the_agent_dies_is_recorded_after() {
    let SealedPackage {
        work,
        broker,
        cfg,
        mut agent,
        id,
    } = with_a_sealed_package();
    let evidence = work.path().join("evidence");
    let lock = std::fs::File::open(&evidence).unwrap();
    lock.lock_shared().unwrap();
    acknowledge(&broker, &id);
    // Long enough for the agent to take the message and wait on the lock.
    std::thread::sleep(Duration::from_secs(3));
    agent.process.child.kill().unwrap(); // SIGKILL
    agent.process.child.wait().unwrap();
    drop(lock);

    restart_and_wait_for_acknowledged(
        &cfg,
        work.path(),
        &id,
        "the acknowledgement the agent had not recorded was lost",
    );
}

/// Messages on the acknowledgement topic that name no package to record
/// (not JSON, no id) are taken at once: left unacknowledged, twenty of them
/// (Mosquitto's in-flight limit) would hold back every acknowledgement after.
#[test]
fn acknowledgement_messages_with_nothing_to_record_do_not_hold_back_the_next() {
    let SealedPackage {
        work,
        broker,
        cfg: _,
        mut agent,
        id,
    } = with_a_sealed_package();
    for i in 0..25 {
        publish(
            broker.port,
            "matthan/v1/s/evidence/ack",
            &format!("not json {i}"),
        );
    }
    acknowledge(&broker, &id);
    wait_for_acknowledged(
        work.path(),
        &id,
        &agent,
        "the acknowledgement after 25 unusable messages was not recorded",
    );
    assert!(agent.process.terminate().success());
}
