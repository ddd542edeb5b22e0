//! `matthan run`: every camera on its own supervisor thread, one publisher
//! thread, until SIGINT or SIGTERM (or until every file source has
//! finished). The publisher's file writes (outbox, JSON lines) stay off the
//! network runtime, so a slow disk or a stalled standard output never
//! holds up the MQTT connection, the metrics or the signals.
//!
//! Shutdown order matters for "no event lost": cameras stop first, then
//! the publisher drains what they queued, then the MQTT connection waits
//! for the broker's acknowledgements and closes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::event::{Event, EventFactory, Sequencer};
use crate::evidence::promises::Promises;
use crate::evidence::{CameraEvidence, Evidence, PackageRequest};
use crate::health::metrics::Metrics;
use crate::infer::Models;
use crate::ingest::{CameraStatus, CameraSupervisor, StatusReport, init_gstreamer};
use crate::publish::jsonl::JsonLinesSink;
use crate::publish::mqtt::{MqttSink, Problem};
use crate::publish::outbox::Outbox;
use crate::publish::{Message, Outbound};
use crate::rules::{Pass, Passes, PlatePass};
use crate::shutdown::Shutdown;

pub fn run(config: Config) -> anyhow::Result<()> {
    init_gstreamer()?;
    crate::ingest::decoder::apply(config.ingest.decoder);
    let models = Arc::new(Models::load(&config.models)?);
    for m in &models.ids {
        tracing::info!(role = m.role, model = %m.name, sha256 = %m.sha256, "model loaded");
    }
    // Two workers: the MQTT connection task reads and acknowledges outbox
    // records on disk, and a slow disk stalling it must not stall the
    // metrics and the signals too.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("matthan-net")
        .build()
        .context("cannot start the network runtime")?;

    let shutdown = Shutdown::new();
    let (outbound, inbox) = Outbound::channel();
    let jsonl = config
        .outputs
        .jsonl
        .as_ref()
        .map(|o| JsonLinesSink::open(&o.path))
        .transpose()?;
    let evidence = if config.evidence.enabled {
        let notices = outbound.clone();
        let settings = crate::evidence::Settings {
            dir: config.evidence_dir(),
            site: config.site.id.clone(),
            pre: Duration::from_secs_f64(config.evidence.pre_seconds),
            post: Duration::from_secs_f64(config.evidence.post_seconds),
            max_event_delay: Duration::from_secs_f64(config.events.max_delay_seconds),
            retention: crate::evidence::store::Retention {
                max_bytes: config.evidence.max_mb * 1024 * 1024,
                max_age: Duration::from_secs_f64(config.evidence.max_age_days * 86400.0),
            },
            config_sha256: config.source_sha256.clone(),
        };
        match Evidence::start(settings, &config.key_dir(), move |n| {
            notices.send(Message::Evidence(Box::new(n)))
        }) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!("{e:#}; evidence packages are OFF, detection and events go on");
                None
            }
        }
    } else {
        None
    };
    let (mqtt, given_out) = match &config.outputs.mqtt {
        Some(m) => {
            let (outbox, problem, given_out) = open_outbox(&config)?;
            let _guard = runtime.enter();
            let acks = evidence.as_ref().map(Evidence::acknowledger);
            let sink = MqttSink::connect(m, &config.site.id, outbox, acks)?;
            sink.set_problem(Problem::OutboxFolder, problem);
            (Some(sink), given_out)
        }
        None => (None, HashMap::new()),
    };
    let metrics = Arc::new(Metrics {
        evidence: evidence.as_ref().map(|e| e.counters.clone()),
        latency: mqtt.as_ref().map(MqttSink::latency),
        ..Metrics::new(
            config.cameras.iter().map(|c| c.id.as_str()),
            outbound.dropped_counter(),
            mqtt.as_ref().map(|m| (m.outbox(), m.reconnects())),
        )
    });
    if !config.health.metrics_listen.is_empty() {
        let (listen, metrics, shutdown) = (
            config.health.metrics_listen.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        runtime.spawn(async move {
            if let Err(e) = crate::health::metrics::serve(&listen, metrics, shutdown).await {
                tracing::error!("{e:#}; metrics are off, the cameras keep running");
            }
        });
    }
    let trimming = crate::health::memory::start_trimming(shutdown.clone())
        .context("cannot start the memory trimming thread")?;
    let network = runtime.handle().clone();
    let lost = metrics.events_lost.clone();
    let promises = evidence.as_ref().map(Evidence::promises);
    let publisher = std::thread::Builder::new()
        .name("matthan-publish".into())
        .spawn(move || {
            let (mut jsonl, mut mqtt) = (jsonl, mqtt);
            publish_loop(inbox, jsonl.as_mut(), mqtt.as_mut(), promises, &lost);
            if let Some(j) = jsonl {
                j.close();
            }
            if let Some(m) = mqtt {
                network.block_on(m.close());
            }
        })
        .context("cannot start the publisher thread")?;

    // Each camera thread holds a sender; when all are gone, every camera has ended.
    let (alive_tx, mut alive_rx) = mpsc::unbounded_channel::<()>();
    let mut threads = Vec::new();
    for camera in &config.cameras {
        let given_out = given_out.get(&camera.id).copied().unwrap_or(0);
        let sequence = Sequencer::persistent(config.storage.dir.join("sequence").join(&camera.id), given_out).unwrap_or_else(|e| {
            tracing::error!(camera = %camera.id, "{e:#}; sequence numbers go on from {given_out}, the highest of the events waiting, for this run: fix storage.dir");
            Sequencer::in_memory_after(given_out)
        });
        let factory = EventFactory::new(&config.site, camera, &models.ids, sequence);
        // The frame and status callbacks both end passes, on one thread.
        let passes =
            std::cell::RefCell::new(Passes::new(config.pass_config(config.analysis_fps(camera))));
        let mut supervisor = CameraSupervisor::new(
            camera.clone(),
            config.analysis_fps(camera),
            shutdown.clone(),
        );
        let camera_evidence = evidence.as_ref().map(|e| e.camera(&camera.id));
        if let Some(e) = &camera_evidence {
            supervisor = supervisor.with_encoded_sink(e.encoded_sink());
        }
        let status_evidence = camera_evidence.clone();
        let mut last_detections: Option<crate::infer::Detections> = None;
        let (models, outbound, alive) = (models.clone(), outbound.clone(), alive_tx.clone());
        let (thresholds, detect, id) = (
            config.analysis.clone(),
            camera.detect.clone(),
            camera.id.clone(),
        );
        tracing::info!(camera = %id, source = %camera.source.display(), fps = config.analysis_fps(camera), "starting camera");
        let status_out = outbound.clone();
        let (cam_metrics, status_metrics) =
            (metrics.camera(&camera.id), metrics.camera(&camera.id));
        let status_id = id.clone();
        let thread = std::thread::Builder::new()
            .name(format!("cam-{id}"))
            .spawn(move || {
                let _alive = alive;
                let publish = |pass: Pass, decided_at: SystemTime| {
                    cam_metrics.events.fetch_add(1, Ordering::Relaxed);
                    let mut event = factory.event(&pass);
                    event.decided_at = Some(decided_at);
                    if let (Some(e), Pass::Plate(p) | Pass::UnreadablePlate(p)) = (&camera_evidence, &pass) {
                        request_evidence(e, &mut event, p);
                    }
                    log_event(&event);
                    outbound.send(Message::Event(Box::new(event)));
                };
                supervisor.run(
                    |frame| {
                        cam_metrics.missed_slots.fetch_add(frame.missed_slots, Ordering::Relaxed);
                        cam_metrics.pictures_skipped.fetch_add(frame.skipped, Ordering::Relaxed);
                        cam_metrics.pictures_dropped_behind.fetch_add(frame.behind, Ordering::Relaxed);
                        let result = match (&last_detections, frame.unchanged) {
                            // The scene has not moved: the last detections still hold.
                            (Some(d), true) => {
                                cam_metrics.frames_unchanged.fetch_add(1, Ordering::Relaxed);
                                Ok(d.clone())
                            }
                            _ => {
                                let started = Instant::now();
                                let r = models.analyze(&frame.image, &detect, &thresholds);
                                cam_metrics.analysis_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                                cam_metrics.frames_analysed.fetch_add(1, Ordering::Relaxed);
                                r
                            }
                        };
                        let analysed = match result {
                            Ok(detections) => Some(detections),
                            Err(e) => {
                                cam_metrics.analysis_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(camera = %id, frame = frame.number, "analysis failed: {e:#}");
                                None
                            }
                        };
                        // A frame whose analysis failed is one where nothing was seen,
                        // as far as the passes know: tracks age and end as the frames go
                        // by, instead of standing frozen while analysis fails and
                        // catching whatever is there when it comes back.
                        let nothing = crate::infer::Detections::default();
                        let mut passes = passes.borrow_mut();
                        passes.on_frame(&frame, analysed.as_ref().unwrap_or(&nothing)).into_iter().for_each(|p| publish(p, frame.captured_at));
                        cam_metrics.record(&passes.counters);
                        // After a failure, the motion gate took this frame as its
                        // reference: older detections no longer describe what it compares to.
                        last_detections = analysed;
                    },
                    |status| {
                        if !matches!(status, CameraStatus::Starting | CameraStatus::Streaming) {
                            // The stream is gone: the passes in view are reported now, not
                            // when (if) the camera comes back, and a vehicle standing in
                            // the same place after an outage is not taken for them.
                            let mut passes = passes.borrow_mut();
                            passes.finish().into_iter().for_each(|p| publish(p, SystemTime::now()));
                            status_metrics.record(&passes.counters);
                            if let Some(e) = &status_evidence {
                                e.stream_ended();
                            }
                        }
                        status_metrics.streaming.store(u64::from(status == CameraStatus::Streaming), Ordering::Relaxed);
                        if matches!(status, CameraStatus::Reconnecting { .. }) {
                            status_metrics.stream_failures.fetch_add(1, Ordering::Relaxed);
                        }
                        status_out.send(Message::CameraStatus(StatusReport {
                            camera: status_id.clone(),
                            status,
                            at: SystemTime::now(),
                        }))
                    },
                );
                // The camera has stopped: every open pass is reported, none is lost.
                let mut passes = passes.borrow_mut();
                passes.finish().into_iter().for_each(|p| publish(p, SystemTime::now()));
                cam_metrics.record(&passes.counters);
            })
            .context("cannot start a camera thread")?;
        threads.push(thread);
    }
    drop(alive_tx);
    drop(outbound);

    runtime.block_on(async {
        tokio::select! {
            signal = wait_for_signal() => tracing::info!("{signal} received; shutting down"),
            _ = alive_rx.recv() => tracing::info!("every camera has finished; shutting down"),
        }
    });
    // A stop that hangs (a camera pipeline that will not stop) must not
    // need SIGKILL: a second signal ends the process at once. What the
    // outbox holds is safe; passes still in memory are lost, so say so.
    runtime.spawn(async {
        let signal = wait_for_signal().await;
        tracing::warn!(
            "{signal} received again: stopping at once; stored events are kept, passes not yet stored are lost"
        );
        std::process::exit(130);
    });
    shutdown.trigger();
    for t in threads {
        let _ = t.join();
    }
    let _ = trimming.join();
    // Packages still waiting for video are sealed with what there is; their
    // notices reach the publisher before it drains.
    if let Some(e) = evidence {
        e.finish();
    }
    // The cameras' senders are gone now, so the publisher drains and ends.
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher thread panicked"))?;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the configured outbox. When its folder is unusable (read-only,
/// full, not a folder) the agent still runs: it keeps events in a
/// temporary outbox, says so loudly in the log and in its retained status,
/// and the installer can fix the folder without losing the site. The
/// temporary outbox has one name per site, so the next start, with the
/// folder fixed, moves what it still holds into the real one.
///
/// Also returns, per camera, the highest sequence number among the events
/// the temporary outbox held: storage that could not keep events could not
/// keep the camera's last number either.
fn open_outbox(config: &Config) -> anyhow::Result<(Outbox, Option<String>, HashMap<String, u64>)> {
    let wanted = config.outbox_config();
    let fallback = std::env::temp_dir().join(format!("matthan-outbox-{}", config.site.id));
    match Outbox::open(wanted.clone()) {
        Ok(mut o) => {
            let given_out = if fallback.is_dir() {
                recover_fallback(
                    &mut o,
                    crate::publish::outbox::OutboxConfig {
                        dir: fallback,
                        ..wanted
                    },
                )
            } else {
                HashMap::new()
            };
            Ok((o, None, given_out))
        }
        Err(e) => {
            let problem = format!(
                "outbox {} unusable ({e:#}); events are kept in {}, which a power cut (or, under systemd, a restart) loses: fix storage.dir and restart",
                wanted.dir.display(),
                fallback.display()
            );
            tracing::error!("{problem}");
            let mut o = Outbox::open(crate::publish::outbox::OutboxConfig {
                dir: fallback,
                ..wanted
            })?;
            let given_out = highest_seqs_waiting(&mut o).unwrap_or_default();
            Ok((o, Some(problem), given_out))
        }
    }
}

/// Records a temporary outbox is read in, not all at once: it may hold
/// hundreds of megabytes, in a /tmp that is memory already.
const BATCH: usize = 1000;

/// The highest `seq` per camera among the events an outbox holds.
fn highest_seqs_waiting(o: &mut Outbox) -> anyhow::Result<HashMap<String, u64>> {
    let mut highest = HashMap::new();
    let mut after = 0;
    loop {
        let records = o.read_pending(after, BATCH)?;
        let Some(last) = records.last() else {
            return Ok(highest);
        };
        after = last.id;
        highest_seqs(&records, &mut highest);
    }
}

/// Raises `highest` to the highest `seq` per camera among the events in
/// `records` (evidence notices and other messages carry none).
fn highest_seqs(records: &[crate::publish::outbox::Record], highest: &mut HashMap<String, u64>) {
    for r in records {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.payload) else {
            continue;
        };
        if let (Some(camera), Some(seq)) = (v["camera"]["id"].as_str(), v["seq"].as_u64()) {
            let h = highest.entry(camera.to_string()).or_insert(0);
            *h = seq.max(*h);
        }
    }
}

/// Moves the events a temporary outbox still holds (from a start when the
/// real one was unusable) into the real one, oldest first, a batch at a
/// time, then removes it. Each batch is acknowledged there once stored
/// here, so a move cut short (a full disk, a power cut) repeats at most
/// one batch at the next start, under the events' own ids.
fn recover_fallback(
    outbox: &mut Outbox,
    fallback: crate::publish::outbox::OutboxConfig,
) -> HashMap<String, u64> {
    let dir = fallback.dir.clone();
    let mut given_out = HashMap::new();
    let moved = Outbox::open(fallback).and_then(|mut old| {
        let mut moved = 0;
        loop {
            let records = old.read_pending(0, BATCH)?;
            if records.is_empty() {
                return Ok(moved);
            }
            highest_seqs(&records, &mut given_out);
            for r in &records {
                outbox.append(&r.topic, &r.payload)?;
                old.ack(r.id)?;
            }
            old.flush()?;
            moved += records.len();
        }
    });
    match moved {
        Ok(n) => {
            if n > 0 {
                tracing::warn!(
                    "moved {n} undelivered events from the temporary outbox {} into the outbox",
                    dir.display()
                );
            }
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("cannot remove {}: {e}", dir.display());
            }
        }
        Err(e) => tracing::error!(
            "the temporary outbox {} holds events that could not all be moved ({e:#}); the rest stay there for the next start",
            dir.display()
        ),
    }
    given_out
}

/// Events the outbox could not store (disk full, read-only) wait here and
/// are retried with every new message, and every [`HELD_RETRY`] while none
/// comes; beyond this many the oldest go.
const HELD_MAX: usize = 10_000;
/// How often events held in memory are offered to the outbox again while
/// no other message comes.
const HELD_RETRY: Duration = Duration::from_secs(1);

/// An outbox record waiting to be stored, and the evidence package whose
/// promise it settles once stored.
type Held = (String, Vec<u8>, Option<SystemTime>, Option<String>);

fn publish_loop(
    mut inbox: mpsc::Receiver<Message>,
    mut jsonl: Option<&mut JsonLinesSink>,
    mut mqtt: Option<&mut MqttSink>,
    mut promises: Option<Promises>,
    lost_total: &std::sync::atomic::AtomicU64,
) {
    let mut held: VecDeque<Held> = VecDeque::new();
    let mut lost = 0u64;
    loop {
        // Events held in memory (the outbox could not store them) are tried
        // again now and then, not only when another message comes: on a
        // quiet camera at night that may be hours, with the events at the
        // mercy of a power cut all along.
        let message = if held.is_empty() {
            inbox.blocking_recv()
        } else {
            match inbox.try_recv() {
                Ok(message) => Some(message),
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(HELD_RETRY);
                    if let Some(m) = mqtt.as_deref_mut() {
                        store_held(&mut held, m, &mut promises);
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        };
        let Some(message) = message else { break };
        let (topic, payload, decided_at, settles) = match message {
            Message::Event(event) => {
                // On disk before the event is: a power cut between them must
                // not leave the IOC an event whose package is never announced.
                if let (Some(p), Some(e)) = (promises.as_mut(), &event.evidence) {
                    p.before_event(&e.id, &event.camera.id);
                }
                if let Some(sink) = jsonl.as_deref_mut() {
                    sink.write(&event);
                }
                (
                    event.topic_suffix(),
                    serde_json::to_vec(&*event),
                    event.decided_at,
                    None,
                )
            }
            Message::Evidence(notice) => {
                if let Some(sink) = jsonl.as_deref_mut() {
                    sink.write_notice(&notice);
                }
                if notice.forced
                    && let Some(m) = mqtt.as_deref()
                {
                    m.set_problem(Problem::EvidenceQuota, Some(format!(
                        "evidence quota full: package {} deleted before export or acknowledgement",
                        notice.event_id
                    )));
                }
                (
                    notice.topic_suffix(),
                    serde_json::to_vec(&*notice),
                    None,
                    notice.settles.then(|| notice.event_id.clone()),
                )
            }
            Message::CameraStatus(report) => {
                if let Some(m) = mqtt.as_deref() {
                    m.publish_camera_status(&report);
                }
                continue;
            }
        };
        let Some(m) = mqtt.as_deref_mut() else {
            settle(&mut promises, &settles);
            continue;
        };
        match payload {
            Ok(payload) => held.push_back((topic, payload, decided_at, settles)),
            Err(e) => tracing::error!(topic, "cannot serialise message: {e}"),
        }
        store_held(&mut held, m, &mut promises);
        while held.len() > HELD_MAX {
            held.pop_front();
            lost += 1;
            lost_total.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                lost_total = lost,
                "outbox unwritable and memory hold full: an event was lost"
            );
        }
    }
    if let Some(m) = mqtt {
        for (topic, payload, decided_at, settles) in held.drain(..) {
            if m.publish_event(&topic, &payload, decided_at) {
                settle(&mut promises, &settles);
            } else {
                lost += 1;
                lost_total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if lost > 0 {
        tracing::error!(
            lost_total = lost,
            "events lost because the outbox could not store them"
        );
    }
}

/// Stores what the memory holds in the outbox, oldest first, until the
/// outbox refuses one.
fn store_held(held: &mut VecDeque<Held>, m: &mut MqttSink, promises: &mut Option<Promises>) {
    while let Some((topic, payload, decided_at, settles)) = held.front() {
        if !m.publish_event(topic, payload, *decided_at) {
            break;
        }
        settle(promises, settles);
        held.pop_front();
    }
}

/// Settles a package's promise once its notice is stored (or, with no
/// outbox, handed over): a stop before that leaves the promise, and the
/// next start announces the package again.
fn settle(promises: &mut Option<Promises>, package: &Option<String>) {
    if let (Some(p), Some(id)) = (promises.as_mut(), package) {
        p.notice_stored(id);
    }
}

/// Points the event at its package and asks the evidence thread to make it.
fn request_evidence(evidence: &CameraEvidence, event: &mut Event, pass: &PlatePass) {
    let Some(frame) = &pass.frame else {
        tracing::warn!(event = %event.id, "no frame kept for this pass: no evidence package");
        return;
    };
    let id = event.id.to_string();
    event.evidence = Some(evidence.reference(&id));
    let value = match serde_json::to_value(&*event) {
        Ok(v) => v,
        Err(e) => {
            event.evidence = None;
            return tracing::error!(event = %id, "cannot serialise the event for its evidence: {e}");
        }
    };
    // A refused request makes no package: the event must not point at one.
    let accepted = evidence.request(PackageRequest {
        id,
        camera: event.camera.id.clone(),
        event: value,
        frame: frame.clone(),
        frame_number: pass.best.at.frame_number,
        stream: pass.best.at.stream,
        frame_time: pass.best.at.stream_time,
        captured_at: pass.best.at.captured_at,
        clock: crate::evidence::clock::clock_state(),
        corners: pass.best.corners,
        bbox: pass.best.at.bbox,
    });
    if !accepted {
        event.evidence = None;
    }
}

fn log_event(e: &Event) {
    match (&e.plate, &e.face) {
        (Some(p), _) => tracing::info!(
            camera = %e.camera.id, seq = e.seq, id = %e.id, plate = %p.text, chars = %p.chars,
            frames = p.track.frames, confidence = format!("{:.2}", e.confidence), "{} event", e.kind.as_str()
        ),
        (_, Some(_)) => tracing::info!(
            camera = %e.camera.id, seq = e.seq, id = %e.id, confidence = format!("{:.2}", e.confidence), "face event"
        ),
        _ => {}
    }
}

async fn wait_for_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CameraRef, EvidenceRef, FrameRef, SiteRef};
    use crate::evidence::{EvidenceNotice, promises};
    use crate::publish::outbox::OutboxConfig;

    fn event(id: uuid::Uuid) -> Event {
        Event {
            schema_version: crate::event::SCHEMA_VERSION,
            id,
            kind: crate::event::EventKind::Plate,
            site: SiteRef {
                id: "s".into(),
                name: "s".into(),
            },
            camera: CameraRef {
                id: "gate".into(),
                name: "gate".into(),
                location: None,
                lanes: Vec::new(),
                direction: None,
            },
            seq: 1,
            supersedes: None,
            time: time::OffsetDateTime::now_utc(),
            frame: FrameRef {
                width: 2,
                height: 2,
                number: 1,
                stream_time_ms: None,
            },
            bbox: [0.0; 4],
            confidence: 1.0,
            plate: None,
            face: None,
            models: Vec::new(),
            evidence: Some(EvidenceRef {
                id: id.to_string(),
                uri: String::new(),
            }),
            decided_at: None,
        }
    }

    fn notice(id: uuid::Uuid) -> Message {
        Message::Evidence(Box::new(EvidenceNotice {
            schema_version: crate::event::SCHEMA_VERSION,
            kind: "evidence",
            event_id: id.to_string(),
            site: "s".into(),
            camera: "gate".into(),
            time: String::new(),
            status: "sealed",
            uri: String::new(),
            manifest_sha256: None,
            files: Vec::new(),
            clip_complete: true,
            error: None,
            forced: false,
            custody: None,
            settles: true,
        }))
    }

    fn publish(messages: Vec<Message>, mqtt: &mut MqttSink, evidence: &std::path::Path) {
        let (outbound, inbox) = Outbound::channel();
        messages.into_iter().for_each(|m| outbound.send(m));
        drop(outbound);
        let lost = std::sync::atomic::AtomicU64::new(0);
        let promises = Some(Promises::new(evidence.to_path_buf()));
        publish_loop(inbox, None, Some(mqtt), promises, &lost);
    }

    fn promised(evidence: &std::path::Path) -> Vec<String> {
        let mut ids: Vec<String> = promises::left_over(evidence)
            .into_iter()
            .map(|l| l.id)
            .collect();
        ids.sort();
        ids
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// An MQTT sink whose broker never answers (its outbox keeps all), a
    /// segment per record: once the folder is gone, it stores nothing
    /// more. Made inside a runtime.
    fn sink_without_broker(outbox_dir: &std::path::Path) -> MqttSink {
        let outbox = Outbox::open(OutboxConfig {
            segment_bytes: 1,
            ..OutboxConfig::new(outbox_dir.to_path_buf())
        })
        .unwrap();
        let config: crate::config::MqttOutput =
            toml::from_str(r#"url = "mqtt://127.0.0.1:1""#).unwrap();
        MqttSink::connect(&config, "s", outbox, None).unwrap()
    }

    #[test]
    fn a_package_is_promised_before_its_event_is_stored_and_kept_until_its_notice_is() {
        let work = tempfile::tempdir().unwrap();
        let evidence = work.path().join("evidence");
        let runtime = runtime();
        let _inside = runtime.enter();
        let outbox_dir = work.path().join("outbox");
        let mut mqtt = sink_without_broker(&outbox_dir);

        let mut ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
        ids.sort();
        let (announced, waiting, unstored) = (ids[0], ids[1], ids[2]);
        publish(
            vec![
                Message::Event(Box::new(event(announced))),
                Message::Event(Box::new(event(waiting))),
                notice(announced),
            ],
            &mut mqtt,
            &evidence,
        );
        assert_eq!(mqtt.outbox().lock().unwrap().len(), 3, "not all stored");
        // The package still being recorded stays promised; the one whose
        // notice is stored is settled.
        assert_eq!(promised(&evidence), [waiting.to_string()]);

        // A notice the outbox cannot store leaves its promise for the next start.
        std::fs::remove_dir_all(&outbox_dir).unwrap();
        publish(
            vec![Message::Event(Box::new(event(unstored))), notice(unstored)],
            &mut mqtt,
            &evidence,
        );
        assert_eq!(
            promised(&evidence),
            [waiting.to_string(), unstored.to_string()]
        );
    }

    #[test]
    fn events_held_in_memory_are_stored_once_the_outbox_can_without_waiting_for_another() {
        let work = tempfile::tempdir().unwrap();
        let runtime = runtime();
        let _inside = runtime.enter();
        let outbox_dir = work.path().join("outbox");
        let mut mqtt = sink_without_broker(&outbox_dir);
        let stored = mqtt.outbox();
        // One record already: the next needs a segment of its own.
        stored.lock().unwrap().append("t", b"earlier").unwrap();
        std::fs::remove_dir_all(&outbox_dir).unwrap();
        let (outbound, inbox) = Outbound::channel();
        let lost = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| publish_loop(inbox, None, Some(&mut mqtt), None, &lost));
            outbound.send(Message::Event(Box::new(event(uuid::Uuid::now_v7()))));
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                stored.lock().unwrap().len(),
                1,
                "the outbox's folder is gone"
            );
            // The folder is back; no other message comes.
            std::fs::create_dir_all(&outbox_dir).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while stored.lock().unwrap().len() == 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(
                stored.lock().unwrap().len(),
                2,
                "stored while the channel is quiet"
            );
            drop(outbound);
        });
        assert_eq!(lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_temporary_outbox_is_moved_a_batch_at_a_time_with_every_event() {
        let (real, temp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let temp_dir = temp.path().join("outbox");
        let mut old = Outbox::open(OutboxConfig::new(temp_dir.clone())).unwrap();
        let n = 2 * BATCH + 7;
        for seq in 1..=n {
            let payload = format!(r#"{{"camera":{{"id":"c{}"}},"seq":{seq}}}"#, seq % 2);
            old.append("t", payload.as_bytes()).unwrap();
        }
        drop(old);
        let mut o = Outbox::open(OutboxConfig::new(real.path().to_path_buf())).unwrap();
        let given_out = recover_fallback(&mut o, OutboxConfig::new(temp_dir.clone()));
        assert_eq!(o.len(), n);
        assert_eq!(given_out["c1"], n as u64);
        assert_eq!(given_out["c0"], n as u64 - 1);
        assert!(!temp_dir.exists(), "emptied and removed");
        let seqs: Vec<u64> = o
            .read_pending(0, n)
            .unwrap()
            .iter()
            .map(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            seqs,
            (1..=n as u64).collect::<Vec<_>>(),
            "in order, once each"
        );
        // The same numbers, read where they wait, a batch at a time.
        let waiting = highest_seqs_waiting(&mut o).unwrap();
        assert_eq!(waiting, given_out);
    }
}
