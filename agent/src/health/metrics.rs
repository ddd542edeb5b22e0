//! Prometheus metrics on a loopback HTTP port (`GET /metrics`), so the
//! gateway's own monitoring can scrape them without exposing anything to
//! the network. Counters are plain atomics updated by the camera threads;
//! the exposition is rendered on request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::publish::outbox::Outbox;
use crate::shutdown::Shutdown;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

#[derive(Default)]
pub struct CameraMetrics {
    pub frames_analysed: AtomicU64,
    pub analysis_micros: AtomicU64,
    pub analysis_errors: AtomicU64,
    pub stream_failures: AtomicU64,
    pub events: AtomicU64,
    pub plate_passes: AtomicU64,
    pub unreadable_plates: AtomicU64,
    pub dismissed_plate_tracks: AtomicU64,
    pub duplicates_suppressed: AtomicU64,
    pub corrected_passes: AtomicU64,
    pub face_passes: AtomicU64,
    /// 1 while streaming, 0 otherwise.
    pub streaming: AtomicU64,
    /// Analysis slots that passed without an analysed frame (behind).
    pub missed_slots: AtomicU64,
    /// Frames the motion gate found unchanged (not analysed).
    pub frames_unchanged: AtomicU64,
    /// Pictures never decoded: not due, and no other picture needs them.
    pub pictures_skipped: AtomicU64,
    /// Pictures dropped because decoding fell behind real time.
    pub pictures_dropped_behind: AtomicU64,
}

impl CameraMetrics {
    pub fn record(&self, c: &crate::rules::PassCounters) {
        self.plate_passes.store(c.plate_passes, Ordering::Relaxed);
        self.unreadable_plates
            .store(c.unreadable_plates, Ordering::Relaxed);
        self.dismissed_plate_tracks
            .store(c.dismissed_plate_tracks, Ordering::Relaxed);
        self.duplicates_suppressed
            .store(c.duplicates_suppressed, Ordering::Relaxed);
        self.corrected_passes
            .store(c.corrected_passes, Ordering::Relaxed);
        self.face_passes.store(c.face_passes, Ordering::Relaxed);
    }
}

/// Everything the endpoint reports: per-camera counters, and the
/// publisher's own counters shared with it at start-up.
#[derive(Default)]
pub struct Metrics {
    pub cameras: BTreeMap<String, Arc<CameraMetrics>>,
    pub queue_dropped: Arc<AtomicU64>,
    /// Events neither the outbox nor the memory hold behind it could keep.
    pub events_lost: Arc<AtomicU64>,
    /// Present when MQTT is configured.
    pub outbox: Option<Arc<Mutex<Outbox>>>,
    pub mqtt_reconnects: Option<Arc<AtomicU64>>,
    /// Present when evidence packages are on.
    pub evidence: Option<Arc<crate::evidence::EvidenceCounters>>,
    /// Present when MQTT is configured.
    pub latency: Option<Arc<crate::publish::latency::Latency>>,
}

/// Name, type, help and field of one per-camera series.
type CameraSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&CameraMetrics) -> &AtomicU64,
);

impl Metrics {
    pub fn new<'a>(
        camera_ids: impl IntoIterator<Item = &'a str>,
        queue_dropped: Arc<AtomicU64>,
        mqtt: Option<(Arc<Mutex<Outbox>>, Arc<AtomicU64>)>,
    ) -> Self {
        let (outbox, mqtt_reconnects) = mqtt.unzip();
        Self {
            cameras: camera_ids
                .into_iter()
                .map(|id| (id.to_string(), Arc::default()))
                .collect(),
            queue_dropped,
            events_lost: Arc::default(),
            outbox,
            mqtt_reconnects,
            evidence: None,
            latency: None,
        }
    }

    pub fn camera(&self, id: &str) -> Arc<CameraMetrics> {
        self.cameras.get(id).cloned().unwrap_or_default()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let per_camera: [CameraSeries; 16] = [
            (
                "matthan_frames_analysed_total",
                "counter",
                "Frames analysed",
                |c| &c.frames_analysed,
            ),
            (
                "matthan_analysis_seconds_total",
                "counter",
                "Time spent analysing frames (rate / frames rate = mean per frame)",
                |c| &c.analysis_micros,
            ),
            (
                "matthan_analysis_errors_total",
                "counter",
                "Frames whose analysis failed",
                |c| &c.analysis_errors,
            ),
            (
                "matthan_stream_failures_total",
                "counter",
                "Camera stream failures (each followed by a reconnect)",
                |c| &c.stream_failures,
            ),
            ("matthan_events_total", "counter", "Events produced", |c| {
                &c.events
            }),
            (
                "matthan_plate_passes_total",
                "counter",
                "Plate passes reported",
                |c| &c.plate_passes,
            ),
            (
                "matthan_unreadable_plates_total",
                "counter",
                "Plate tracks that never read as a valid plate",
                |c| &c.unreadable_plates,
            ),
            (
                "matthan_dismissed_plate_tracks_total",
                "counter",
                "Unreadable plate tracks the detector was never sure were plates (not reported)",
                |c| &c.dismissed_plate_tracks,
            ),
            (
                "matthan_duplicate_plates_total",
                "counter",
                "Plate passes suppressed by the dedup window",
                |c| &c.duplicates_suppressed,
            ),
            (
                "matthan_corrected_plate_passes_total",
                "counter",
                "Plate passes reported again because the rest of the pass read the plate otherwise",
                |c| &c.corrected_passes,
            ),
            (
                "matthan_face_passes_total",
                "counter",
                "Face passes reported",
                |c| &c.face_passes,
            ),
            (
                "matthan_camera_streaming",
                "gauge",
                "1 while the camera is streaming",
                |c| &c.streaming,
            ),
            (
                "matthan_analysis_slots_missed_total",
                "counter",
                "Frames due for analysis that were not analysed because the analysis was behind",
                |c| &c.missed_slots,
            ),
            (
                "matthan_frames_unchanged_total",
                "counter",
                "Frames due for analysis that the motion gate found unchanged (detections reused)",
                |c| &c.frames_unchanged,
            ),
            (
                "matthan_pictures_skipped_total",
                "counter",
                "Pictures left undecoded: not due for analysis, and no other picture refers to them",
                |c| &c.pictures_skipped,
            ),
            (
                "matthan_pictures_dropped_behind_total",
                "counter",
                "Pictures dropped undecoded because decoding fell behind real time (too much video for this gateway)",
                |c| &c.pictures_dropped_behind,
            ),
        ];
        for (name, kind, help, get) in per_camera {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (id, c) in &self.cameras {
                let v = get(c).load(Ordering::Relaxed);
                if name == "matthan_analysis_seconds_total" {
                    let _ = writeln!(out, "{name}{{camera=\"{id}\"}} {}", v as f64 / 1e6);
                } else {
                    let _ = writeln!(out, "{name}{{camera=\"{id}\"}} {v}");
                }
            }
        }
        series(
            &mut out,
            "matthan_queue_dropped_total",
            "counter",
            "Messages (events, evidence notices, camera states) dropped because the publisher queue was full",
            self.queue_dropped.load(Ordering::Relaxed),
        );
        series(
            &mut out,
            "matthan_events_lost_total",
            "counter",
            "Events lost because the outbox could not store them and the memory hold behind it was full",
            self.events_lost.load(Ordering::Relaxed),
        );
        if let Some(e) = &self.evidence {
            for (name, help, v) in [
                (
                    "matthan_evidence_sealed_total",
                    "Evidence packages sealed",
                    &e.sealed,
                ),
                (
                    "matthan_evidence_failed_total",
                    "Evidence packages that could not be written (disk full, unwritable folder)",
                    &e.failed,
                ),
                (
                    "matthan_evidence_refused_total",
                    "Evidence requests refused because the evidence queue was full",
                    &e.refused,
                ),
                (
                    "matthan_evidence_deleted_total",
                    "Evidence packages deleted by retention",
                    &e.deleted,
                ),
                (
                    "matthan_evidence_forced_deletions_total",
                    "Evidence packages deleted by the disk quota before any export or acknowledgement",
                    &e.forced_deletions,
                ),
                (
                    "matthan_evidence_deletion_failures_total",
                    "Evidence packages logged deleted whose folder could not be removed (retried at each retention pass)",
                    &e.deletion_failures,
                ),
            ] {
                series(&mut out, name, "counter", help, v.load(Ordering::Relaxed));
            }
        }
        if let Some(l) = &self.latency {
            let name = "matthan_frame_to_event_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} From the arrival of the frame that decided an event to the broker's acknowledgement (quantiles of the last 4096 events; count and sum since start)\n# TYPE {name} summary"
            );
            const QUANTILES: [f64; 2] = [0.5, 0.99];
            let summary = l.summary(QUANTILES);
            for (q, v) in QUANTILES.iter().zip(summary.quantiles.iter().flatten()) {
                let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {v:.4}");
            }
            let _ = writeln!(out, "{name}_sum {:.4}", summary.sum);
            let _ = writeln!(out, "{name}_count {}", summary.count);
            // The same as a histogram, which a scraper (and the benchmark)
            // can take over any window, where the summary's quantiles mix
            // in the last 4096 events whenever they came.
            let name = crate::publish::latency::HISTOGRAM;
            let _ = writeln!(
                out,
                "# HELP {name} From the arrival of the frame that decided an event to the broker's acknowledgement, since start\n# TYPE {name} histogram"
            );
            let (buckets, sum) = l.histogram();
            for &(le, count) in &buckets {
                if le.is_infinite() {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
                } else {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
                }
            }
            let count = buckets.last().map_or(0, |&(_, n)| n);
            let _ = writeln!(out, "{name}_sum {sum:.4}");
            let _ = writeln!(out, "{name}_count {count}");
        }
        if let Some(r) = &self.mqtt_reconnects {
            series(
                &mut out,
                "matthan_mqtt_connection_losses_total",
                "counter",
                "MQTT connections lost or refused (each followed by a reconnect)",
                r.load(Ordering::Relaxed),
            );
        }
        if let Some(outbox) = &self.outbox
            && let Ok(o) = outbox.lock()
        {
            series(
                &mut out,
                "matthan_outbox_pending",
                "gauge",
                "Events stored, not yet acknowledged by the broker",
                o.len(),
            );
            series(
                &mut out,
                "matthan_outbox_pending_bytes",
                "gauge",
                "Bytes of pending events",
                o.pending_bytes(),
            );
            let age = o.oldest_age().map_or(0.0, |d| d.as_secs_f64());
            series(
                &mut out,
                "matthan_outbox_oldest_pending_seconds",
                "gauge",
                "Age of the oldest unacknowledged event",
                age,
            );
            series(
                &mut out,
                "matthan_outbox_acknowledged_total",
                "counter",
                "Events acknowledged by the broker",
                o.stats.acknowledged,
            );
            series(
                &mut out,
                "matthan_outbox_dropped_total",
                "counter",
                "Events dropped by the outbox bounds",
                o.stats.dropped_for_bounds,
            );
            series(
                &mut out,
                "matthan_outbox_corrupt_total",
                "counter",
                "Events dropped because their stored record failed its checksum when read back",
                o.stats.dropped_corrupt,
            );
            series(
                &mut out,
                "matthan_outbox_unreadable_segments_total",
                "counter",
                "Outbox segment files that could not be read at start-up (set aside as damaged-seg-*; their events lost)",
                o.stats.unreadable_segments,
            );
        }
        out
    }
}

/// One unlabelled series with its help and type lines.
fn series(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Requests answered at once; more wait for a place (each holds one for
/// at most [`REQUEST_WAIT`]).
const CONNECTIONS: usize = 16;
/// How long a client may take to send its request line and headers.
const REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The most a request's head may hold: a scraper's is a few hundred bytes.
const REQUEST_MAX: usize = 8 * 1024;

/// Serves `GET /metrics` until shutdown.
pub async fn serve(listen: &str, metrics: Arc<Metrics>, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("health.metrics_listen: cannot listen on {listen}"))?;
    tracing::info!(listen = %listen, "metrics at http://{listen}/metrics");
    let places = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    let mut failing = false;
    loop {
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place.expect("never closed"),
            _ = shutdown.wait() => return Ok(()),
        };
        let (mut socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => { failing = false; a }
                Err(e) => {
                    // Out of file descriptors, say: retrying at once would
                    // spin and flood the log.
                    if !failing {
                        tracing::warn!("metrics: accept failed: {e}; retrying every second");
                        failing = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return Ok(()),
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _place = place;
            let head = read_head(&mut socket, tokio::time::Instant::now() + REQUEST_WAIT).await;
            let path = head.split(' ').nth(1).unwrap_or_default();
            let (status, body) = if head.starts_with("GET ") && path == "/metrics" {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "try /metrics\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            // A client that never reads gives its place back too.
            let _ = tokio::time::timeout(REQUEST_WAIT, async {
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            })
            .await;
        });
    }
}

/// The request's head, up to the blank line that ends it (CRLF or bare
/// LF), however many reads it comes in; what there is when the client
/// stops, the deadline passes or the head grows past [`REQUEST_MAX`].
async fn read_head(socket: &mut tokio::net::TcpStream, deadline: tokio::time::Instant) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let ended =
        |h: &[u8]| h.windows(4).any(|w| w == b"\r\n\r\n") || h.windows(2).any(|w| w == b"\n\n");
    while !ended(&head) && head.len() < REQUEST_MAX {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `parts` one write at a time; the response's status line.
    async fn ask(port: u16, parts: &[&str]) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        for p in parts {
            s.write_all(p.as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let mut response = String::new();
        s.read_to_string(&mut response).await.unwrap();
        response.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn a_request_in_pieces_is_answered_and_only_metrics_is_served() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = Arc::new(Metrics::new(["gate"], Arc::default(), None));
        let shutdown = Shutdown::new();
        let shutdown_for_server = shutdown.clone();
        let listen = format!("127.0.0.1:{port}");
        let server =
            tokio::spawn(async move { serve(&listen, metrics, shutdown_for_server).await });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(ask(port, &[request]).await, "HTTP/1.1 200 OK");
        let (a, b) = request.split_at(7);
        assert_eq!(ask(port, &[a, b]).await, "HTTP/1.1 200 OK");
        let other = "GET /metricsX HTTP/1.1\r\n\r\n";
        assert_eq!(ask(port, &[other]).await, "HTTP/1.1 404 Not Found");
        let bare_lf = "GET /metrics HTTP/1.0\n\n";
        assert_eq!(ask(port, &[bare_lf]).await, "HTTP/1.1 200 OK");
        shutdown.trigger();
        server.await.unwrap().unwrap();
    }
}
