//! N cameras on this machine, as deployed: an RTSP server (matthan-testcam)
//! serving the clip to each camera at real time, a real Mosquitto, and the
//! real agent with its normal configuration, measured from outside: its
//! CPU time and peak memory from /proc, its analysed frames, missed
//! analysis slots and frame-to-event latency from its metrics endpoint.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Setup {
    pub source: PathBuf,
    pub models_dir: PathBuf,
    pub streams: usize,
    pub seconds: f64,
    pub analysis_fps: f64,
    pub motion_gate: bool,
    /// Seconds of the clip over which the cameras' starting points are
    /// spread evenly (0: every camera starts at the start, all in step).
    pub spread: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub events: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamsRun {
    pub streams: usize,
    pub motion_gate: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub spread_s: f64,
    pub seconds: f64,
    /// Analysed frames per second, all cameras together.
    pub analysed_fps_target: f64,
    /// Frames handled per second: analysed, or found unchanged by the
    /// motion gate (their detections reused).
    pub analysed_fps_achieved: f64,
    pub analysis_frames_dropped: u64,
    pub frames_unchanged: u64,
    /// Pictures the decoders never decoded: not due, and no other picture
    /// refers to them.
    pub pictures_skipped: u64,
    /// Pictures dropped because decoding fell behind real time.
    pub pictures_dropped_behind: u64,
    pub frame_to_event_ms: Latency,
    pub cpu_cores_used: f64,
    /// Megabytes of 10^6 bytes, as the memory target counts them.
    pub rss_mb_peak: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl StreamsRun {
    /// The bar: the target rate held, and events out within 300
    /// ms. A run that published no event has shown no latency: it does
    /// not hold.
    pub fn holds(&self) -> bool {
        self.analysed_fps_achieved >= 0.98 * self.analysed_fps_target
            && self.frame_to_event_ms.events > 0
            && self.frame_to_event_ms.p99.is_some_and(|p| p <= 300.0)
    }
}

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The `matthan` binaries sit together.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name(name);
    if !p.is_file() {
        bail!(
            "{} is missing beside {}; build it with `cargo build --release`",
            name,
            exe.display()
        );
    }
    Ok(p)
}

pub fn run(setup: &Setup) -> anyhow::Result<StreamsRun> {
    let work = tempfile_dir()?;
    let broker_port = free_port()?;
    std::fs::write(
        work.join("mosquitto.conf"),
        format!("listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )?;
    let mosquitto = ["mosquitto", "/usr/sbin/mosquitto"]
        .iter()
        .find_map(|m| {
            Command::new(m)
                .arg("-c")
                .arg(work.join("mosquitto.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        })
        .ok_or_else(|| anyhow!("cannot start mosquitto; run scripts/setup"))?;
    let _broker = Reaped(mosquitto);
    wait_for_port(broker_port, "mosquitto")?;

    let cam_port = free_port()?;
    // In step, every camera shares one mount; spread, each has its own,
    // starting its share of `spread` seconds further into the clip.
    let mount = |i: usize| {
        if setup.spread > 0.0 {
            format!("/bench{i}")
        } else {
            "/bench".to_string()
        }
    };
    let mut testcam = Command::new(sibling("matthan-testcam")?);
    testcam.args(["--port", &cam_port.to_string()]);
    let mounts = if setup.spread > 0.0 { setup.streams } else { 1 };
    for i in 0..mounts {
        testcam
            .arg("--mount")
            .arg(format!("{}={}", mount(i), setup.source.display()));
        if setup.spread > 0.0 {
            let start = setup.spread * i as f64 / setup.streams as f64;
            testcam.arg("--start").arg(format!("{}={start}", mount(i)));
        }
    }
    let testcam = testcam
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start matthan-testcam")?;
    let _cam = Reaped(testcam);
    wait_for_port(cam_port, "matthan-testcam")?;

    let metrics_port = free_port()?;
    let mut config = format!(
        "[site]\nid = \"bench\"\n[analysis]\nfps = {fps}\n[models]\ndir = \"{models}\"\n\
         [storage]\ndir = \"{state}\"\n[health]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
         [outputs.mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\n",
        fps = setup.analysis_fps,
        models = std::path::absolute(&setup.models_dir)?.display(),
        state = work.join("state").display(),
    );
    for i in 0..setup.streams {
        config.push_str(&format!(
            "[[camera]]\nid = \"cam-{i}\"\nsource = \"rtsp://127.0.0.1:{cam_port}{}\"\nrtsp_transport = \"tcp\"\nmotion_gate = {}\n",
            mount(i),
            setup.motion_gate
        ));
    }
    std::fs::write(work.join("site.toml"), config)?;
    let log = std::fs::File::create(work.join("agent.log"))?;
    let agent = Command::new(std::env::current_exe()?)
        .args(["run", "-c"])
        .arg(work.join("site.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start the agent")?;
    let mut agent = Reaped(agent);
    let pid = agent.0.id();

    // Every camera streaming, then a few seconds for the first analyses.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = agent.0.try_wait() {
            bail!(
                "the agent exited ({status}); its log: {}",
                std::fs::read_to_string(work.join("agent.log")).unwrap_or_default()
            );
        }
        let m = metrics(metrics_port).unwrap_or_default();
        if sum(&m, "matthan_camera_streaming{") as usize == setup.streams {
            break;
        }
        if Instant::now() > deadline {
            bail!("not every camera was streaming after 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));

    let before = metrics(metrics_port)?;
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(setup.seconds));
    let after = metrics(metrics_port)?;
    let cpu_after = cpu_seconds(pid)?;
    let wall = started.elapsed().as_secs_f64();
    let rss_mb_peak = rss_peak_mb(pid)?;

    let delta = |name: &str| sum(&after, name) - sum(&before, name);
    let handled =
        delta("matthan_frames_analysed_total{") + delta("matthan_frames_unchanged_total{");
    // Over the window only: the agent's summary quantiles would mix in
    // the events of the start-up.
    let window = window_histogram(&before, &after, crate::publish::latency::HISTOGRAM);
    let quantile = |q: f64| {
        crate::publish::latency::histogram_quantile(&window, q)
            .map(|s| super::round_to(s * 1000.0, 1))
    };
    let run = StreamsRun {
        streams: setup.streams,
        motion_gate: setup.motion_gate,
        spread_s: setup.spread,
        seconds: super::round_to(wall, 1),
        analysed_fps_target: setup.streams as f64 * setup.analysis_fps,
        analysed_fps_achieved: super::round_to(handled / wall, 2),
        analysis_frames_dropped: delta("matthan_analysis_slots_missed_total{") as u64,
        frames_unchanged: delta("matthan_frames_unchanged_total{") as u64,
        pictures_skipped: delta("matthan_pictures_skipped_total{") as u64,
        pictures_dropped_behind: delta("matthan_pictures_dropped_behind_total{") as u64,
        frame_to_event_ms: Latency {
            p50: quantile(0.5),
            p99: quantile(0.99),
            events: delta("matthan_frame_to_event_seconds_count") as u64,
        },
        cpu_cores_used: super::round_to((cpu_after - cpu_before) / wall, 2),
        rss_mb_peak: super::round_to(rss_mb_peak, 1),
    };
    // SIGTERM, as systemd would stop it.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = agent.0.wait();
    let _ = std::fs::remove_dir_all(&work);
    Ok(run)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("matthan-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The metrics page, by a plain HTTP/1.0 GET.
fn metrics(port: u16) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Sum of every series whose line starts with `prefix`.
fn sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The cumulative buckets (`le`, count) of histogram `name`.
fn histogram(metrics: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|l| {
            let (le, count) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect()
}

/// Histogram `name` over the window between two readings of the metrics.
fn window_histogram(before: &str, after: &str, name: &str) -> Vec<(f64, u64)> {
    let before = histogram(before, name);
    histogram(after, name)
        .into_iter()
        .map(|(le, n)| {
            let earlier = before
                .iter()
                .find(|&&(b, _)| b == le)
                .map_or(0, |&(_, c)| c);
            (le, n.saturating_sub(earlier))
        })
        .collect()
}

/// User plus system CPU time of a process, seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Peak resident memory of a process (VmHWM), MB (10^6 bytes).
fn rss_peak_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(kb * 1024.0 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(metrics: &str, name: &str) -> Option<f64> {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn metrics_are_summed_and_read_by_name() {
        let m = "# HELP x\nmatthan_frames_analysed_total{camera=\"a\"} 10\nmatthan_frames_analysed_total{camera=\"b\"} 5\n\
                 matthan_frame_to_event_seconds{quantile=\"0.99\"} 0.25\nmatthan_frame_to_event_seconds_count 7\n";
        assert_eq!(sum(m, "matthan_frames_analysed_total{"), 15.0);
        assert_eq!(
            value(m, "matthan_frame_to_event_seconds{quantile=\"0.99\"}"),
            Some(0.25)
        );
        assert_eq!(value(m, "matthan_frame_to_event_seconds_count"), Some(7.0));
        assert_eq!(value(m, "matthan_frame_to_event_seconds"), None);
    }

    #[test]
    fn latency_is_taken_over_the_window_from_the_agents_histogram() {
        use crate::publish::latency::Latency;
        use std::time::SystemTime;
        let latency = std::sync::Arc::new(Latency::default());
        let page = || {
            let metrics = crate::health::metrics::Metrics {
                latency: Some(latency.clone()),
                ..Default::default()
            };
            metrics.render()
        };
        let ack = |record: u64, ms: u64| {
            latency.stored(record, SystemTime::now() - Duration::from_millis(ms));
            latency.acknowledged(record);
        };
        for i in 0..10 {
            ack(i, 900); // the start-up, before the window
        }
        let before = page();
        for i in 10..60 {
            ack(i, 120);
        }
        let after = page();
        let window = window_histogram(&before, &after, crate::publish::latency::HISTOGRAM);
        assert_eq!(window.last().map(|b| b.1), Some(50));
        let p99 = crate::publish::latency::histogram_quantile(&window, 0.99).unwrap();
        assert!((0.11..=0.13).contains(&p99), "{p99}");
        // The summary's p99 holds the start-up.
        let summary = value(&after, "matthan_frame_to_event_seconds{quantile=\"0.99\"}");
        assert!(summary.unwrap() >= 0.9, "{summary:?}");
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(rss_peak_mb(pid).unwrap() > 1.0);
    }
}
