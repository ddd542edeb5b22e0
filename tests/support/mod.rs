//! The end-to-end harness: real Mosquitto, a real RTSP server, the real
//! `matthan` binary, each a child process on a free loopback port, killed
//! when its handle drops.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `../shared` beside the checkout: data, models and media for tests.
pub fn shared() -> PathBuf {
    let p = std::env::var_os("MATTHAN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    assert!(
        p.is_dir(),
        "test data folder {} is missing; the tests need ../shared beside the checkout (or MATTHAN_SHARED)",
        p.display()
    );
    p
}

pub fn models_dir() -> PathBuf {
    let p = repo_root().join("models/fetched");
    assert!(
        p.join("yunet_s_dynamic.onnx").is_file(),
        "models are missing in {}; run scripts/setup",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed when dropped.
pub struct Process {
    pub name: &'static str,
    pub child: Child,
}

impl Process {
    pub fn terminate(&mut self) -> ExitStatus {
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 20 s of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Mosquitto {
    pub port: u16,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_on(free_port())
    }

    /// A broker on a given port: a restarted broker comes back where the
    /// agent expects it.
    pub fn start_on(port: u16) -> Mosquitto {
        Self::start_with(port, "persistence false\n")
    }

    /// A broker that keeps its sessions and queued messages in `store`
    /// across [`Mosquitto::stop`] and a start on the same store, as a
    /// production broker restarted for maintenance does. Without it, a
    /// test subscriber loses what the old broker had acknowledged but not
    /// yet forwarded, and what the new one takes before the subscriber is
    /// back: losses of the test's broker, not of the agent.
    pub fn start_lasting_on(port: u16, store: &Path) -> Mosquitto {
        Self::start_with(
            port,
            &format!(
                "persistence true\npersistence_location {}/\n",
                store.display()
            ),
        )
    }

    /// A broker with more lines of Mosquitto configuration (an
    /// `acl_file`, a `message_size_limit`); `signal("HUP")` reads its
    /// access rules again.
    pub fn start_configured(lines: &str) -> Mosquitto {
        Self::start_with(free_port(), &format!("persistence false\n{lines}"))
    }

    /// Sends a signal to the broker (HUP: read its configuration again).
    pub fn signal(&self, name: &str) {
        signal(&self._process, name);
    }

    fn start_with(port: u16, persistence: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}"),
        )
        .unwrap();
        Mosquitto {
            port,
            _process: Self::spawn(&conf, &[port]),
            _dir: dir,
        }
    }

    /// Stops the broker as a service manager does (SIGTERM), so a lasting
    /// one writes its store first.
    pub fn stop(mut self) {
        assert!(
            self._process.terminate().success(),
            "mosquitto failed to stop"
        );
    }

    /// Runs Mosquitto on a config file of the test's own and waits for its ports.
    pub fn spawn(conf: &Path, ports: &[u16]) -> Process {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed; run scripts/setup");
        let child = Command::new(bin)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = Process {
            name: "mosquitto",
            child,
        };
        for port in ports {
            wait_for_port(*port, Duration::from_secs(10));
        }
        process
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

pub struct TestCam {
    pub port: u16,
    _process: Process,
}

impl TestCam {
    /// Serves each `(mount, file)` at rtsp://127.0.0.1:PORT/mount.
    pub fn start(mounts: &[(&str, &Path)]) -> TestCam {
        Self::start_on(free_port(), mounts)
    }

    pub fn start_on(port: u16, mounts: &[(&str, &Path)]) -> TestCam {
        Self::start_with(port, mounts, &[])
    }

    /// As [`TestCam::start_on`], with more options for the server.
    pub fn start_with(port: u16, mounts: &[(&str, &Path)], options: &[&str]) -> TestCam {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_matthan-testcam"));
        cmd.args(["--port", &port.to_string()]).args(options);
        for (mount, file) in mounts {
            cmd.arg("--mount")
                .arg(format!("/{mount}={}", file.display()));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, Duration::from_secs(10));
        TestCam {
            port,
            _process: Process {
                name: "matthan-testcam",
                child,
            },
        }
    }

    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{mount}", self.port)
    }

    /// Sends a signal to the server (STOP freezes it with its sockets open).
    pub fn signal(&self, name: &str) {
        signal(&self._process, name);
    }
}

fn signal(process: &Process, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(process.child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {} failed", process.name);
}

/// The real agent, run on a config file written for the test.
pub struct Agent {
    pub process: Process,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Agent {
    pub fn start(config: &str) -> Agent {
        Self::start_with_tmp(config, None)
    }

    /// Starts the agent with `tmp` as its temporary folder (`TMPDIR`);
    /// by default each start has its own, so that agents of tests run
    /// side by side never share a temporary outbox.
    pub fn start_with_tmp(config: &str, tmp: Option<&Path>) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.toml");
        // Tests run in parallel: metrics only where a test asks for them.
        let config = if config.contains("[health]") {
            config.to_string()
        } else {
            format!("{config}\n[health]\nmetrics_listen = \"\"\n")
        };
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_matthan"))
            .args(["run", "-c"])
            .arg(&path)
            .env("TMPDIR", tmp.unwrap_or(dir.path()))
            .stdout(std::fs::File::create(dir.path().join("stdout.jsonl")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            process: Process {
                name: "matthan run",
                child,
            },
            log,
            dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One MQTT message as the subscriber got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retained: bool,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// An MQTT client id of its own: the broker closes a client when another
/// connects with its id, and the tests of one binary run side by side.
fn client_id(role: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{role}-{}-{n}", std::process::id())
}

/// An MQTT subscriber collecting every message it receives, until dropped.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Received>>>,
    client: rumqttc::Client,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.client.disconnect();
    }
}

impl Subscriber {
    pub fn connect(port: u16, filter: &str) -> Subscriber {
        Self::connect_as(
            rumqttc::MqttOptions::new(client_id("test"), "127.0.0.1", port),
            filter,
        )
    }

    /// A subscriber with a session the broker keeps while it is away (and,
    /// on a lasting broker, across restarts): what the IOC's consumer is.
    pub fn connect_lasting(port: u16, filter: &str) -> Subscriber {
        let mut opts = rumqttc::MqttOptions::new(client_id("ioc-consumer"), "127.0.0.1", port);
        opts.set_clean_session(false);
        Self::connect_as(opts, filter)
    }

    fn connect_as(mut opts: rumqttc::MqttOptions, filter: &str) -> Subscriber {
        opts.set_keep_alive(Duration::from_secs(30));
        // The IOC's batch acknowledgements are larger than rumqttc's default limit.
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = rumqttc::Client::new(opts, 100);
        let filter = filter.to_string();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = client.clone();
        std::thread::spawn(move || {
            let client = handle;
            for notification in connection.iter() {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match notification {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        // Subscribe on every connection: a restarted broker forgets subscriptions.
                        let _ = client.try_subscribe(&filter, rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retained: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscription was not acknowledged");
        Subscriber {
            messages,
            client,
            stop,
        }
    }

    /// Waits until `done` holds for the messages so far; returns them.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = self.messages.lock().unwrap().clone();
            if done(&snapshot) {
                return snapshot;
            }
            if Instant::now() > deadline {
                let topics: Vec<_> = snapshot.iter().map(|m| m.topic.clone()).collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; received {} messages on {topics:?}",
                    snapshot.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Publishes one message at QoS 1 and waits for the broker's PUBACK, as
/// the IOC would.
pub fn publish(port: u16, topic: &str, payload: &str) {
    let mut opts = rumqttc::MqttOptions::new(client_id("ioc"), "127.0.0.1", port);
    // Room for an IOC's batch acknowledgements.
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = rumqttc::Client::new(opts, 10);
    client
        .publish(
            topic,
            rumqttc::QoS::AtLeastOnce,
            false,
            payload.as_bytes().to_vec(),
        )
        .unwrap();
    for notification in connection.iter() {
        match notification.expect("publishing to the test broker") {
            rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => break,
            _ => continue,
        }
    }
    let _ = client.disconnect();
}

/// Makes an H.264 MP4 clip at test time from still frames, each shown for
/// `seconds_each` at 10 fps, with GStreamer's own tools. Frames must share
/// one size.
pub fn clip_from_images(images: &[PathBuf], seconds_each: u32, out: &Path) {
    const FPS: u32 = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for img in images {
        for _ in 0..seconds_each * FPS {
            std::fs::copy(img, dir.path().join(format!("{n:05}.jpg"))).unwrap();
            n += 1;
        }
    }
    // x264 needs even dimensions: pad an odd height with one black row.
    let height = image::image_dimensions(&images[0]).unwrap().1;
    let pad_bottom = height % 2;
    let pipeline = format!(
        "multifilesrc location={{0}}/%05d.jpg index=0 stop-index={} caps=image/jpeg,framerate={FPS}/1 ! jpegdec ! videoconvert ! \
         videobox bottom=-{pad_bottom} ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={FPS} ! \
         h264parse ! mp4mux ! filesink location={{1}}",
        n - 1,
    );
    gst_launch(&pipeline, &[dir.path(), out]);
}

/// Runs a `gst-launch-1.0` pipeline to its end; `{0}`, `{1}`… in it stand
/// for `paths`, each kept in one argument so that a space in a path does
/// not split it (gst-launch quotes each argument).
pub fn gst_launch(pipeline: &str, paths: &[&Path]) {
    let args: Vec<String> = pipeline
        .split_whitespace()
        .map(|token| {
            paths
                .iter()
                .enumerate()
                .fold(token.to_string(), |t, (i, p)| {
                    t.replace(&format!("{{{i}}}"), &p.display().to_string())
                })
        })
        .collect();
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(&args)
        .status()
        .expect("gst-launch-1.0 is not installed; run scripts/setup");
    assert!(status.success(), "gst-launch-1.0 failed: {args:?}");
}

pub fn event_validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../agent/schema/event.v1.schema.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// Checks every event against the schema and returns them parsed.
pub fn parse_events(messages: &[Received]) -> Vec<(String, serde_json::Value)> {
    let validator = event_validator();
    messages
        .iter()
        .filter(|m| m.topic.contains("/event/"))
        .map(|Received { topic, payload, .. }| {
            let v: serde_json::Value = serde_json::from_slice(payload)
                .unwrap_or_else(|e| panic!("event on {topic} is not JSON: {e}"));
            let errors: Vec<String> = validator
                .iter_errors(&v)
                .map(|e| format!("{e} at {}", e.instance_path))
                .collect();
            assert!(
                errors.is_empty(),
                "event on {topic} breaks the schema: {errors:?}\n{v}"
            );
            (topic.clone(), v)
        })
        .collect()
}

/// Per camera, the sequence numbers must be 1, 2, 3, … in arrival order.
pub fn assert_contiguous_sequences(events: &[(String, serde_json::Value)]) {
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for (_, e) in events {
        let camera = e["camera"]["id"].as_str().unwrap().to_string();
        let seq = e["seq"].as_u64().unwrap();
        let prev = last.insert(camera.clone(), seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "camera {camera}: seq {seq} after {prev}");
    }
}

/// The events an agent wrote to a JSON-lines file (none if it wrote none).
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    read_jsonl_all(path)
        .into_iter()
        .filter(|v| v["kind"] != "evidence")
        .collect()
}

/// The evidence notices in a JSON-lines file.
pub fn read_notices(path: &Path) -> Vec<serde_json::Value> {
    read_jsonl_all(path)
        .into_iter()
        .filter(|v| v["kind"] == "evidence")
        .collect()
}

fn read_jsonl_all(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `matthan detect --json` on images; for each image, the plates' chars.
pub fn detect_plates(images: &[PathBuf]) -> Vec<Vec<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_matthan"))
        .args([
            "detect",
            "--models",
            models_dir().to_str().unwrap(),
            "--json",
        ])
        .args(images)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["plates"].as_array().map_or(Vec::new(), |ps| {
                ps.iter()
                    .map(|p| p["chars"].as_str().unwrap().to_string())
                    .collect()
            })
        })
        .collect()
}

/// GET http://127.0.0.1:port/path, the body as text.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Runs the `matthan` binary to its end.
/// Runs `matthan` to its end, which must come within 5 minutes: a hang
/// fails the test (exit status 124) instead of stalling the run.
pub fn matthan(args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .args(["--kill-after=10", "300", env!("CARGO_BIN_EXE_matthan")])
        .args(args)
        .output()
        .unwrap()
}

/// `matthan evidence verify PATH`: whether it passed, and what it printed.
pub fn verify_evidence(path: &Path) -> (bool, String) {
    let out = matthan(&["evidence", "verify", path.to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub fn write_file(path: &Path, text: &str) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// Asks `found` every 200 ms until it gives something; after `timeout`,
/// fails with `what` and the agent's log.
pub fn poll<T>(
    timeout: Duration,
    what: &str,
    agent: &Agent,
    mut found: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = found() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {}", agent.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One sample's value on a Prometheus page (`name` with its labels).
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
