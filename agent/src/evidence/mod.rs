//! Evidence: for every plate event, a package an enforcement officer can
//! rely on: the camera's original video around the frame (not
//! re-encoded), that frame, the plate and vehicle crops, and a manifest
//! signed with the gateway's key; a hash-chained custody log of every
//! package created, exported, acknowledged or deleted; retention by age
//! and quota.
//!
//! ```text
//! camera (GStreamer thread) ──encoded units──► Ring (per camera)
//! camera thread ──PackageRequest──► evidence thread ── waits for the post-roll,
//!        cuts the span, writes and signs the package, logs it ──► EvidenceNotice ──► publisher
//! ```
//! The event is published at once with the package's id and location; the
//! notice follows when the package is sealed, with the manifest's sha256.
//! The publisher records the package's promise (`promises`) before it
//! stores the event, and settles it once it has stored the notice, so a
//! stop anywhere in between leaves the next start something to announce.
//! Nothing here runs on a camera thread except handing over a request, so
//! a slow or full disk never slows detection.

pub mod clip;
pub mod clock;
pub mod crops;
pub mod custody;
pub mod export;
pub mod keys;
pub mod package;
pub mod promises;
pub mod ring;
pub mod store;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use serde::Serialize;

use crate::event::EvidenceRef;
use crate::ingest::EncodedSink;
use custody::Action;
use keys::GatewayKey;
pub use package::PackageRequest;
use package::{FileEntry, Sealed};
use ring::{Ring, Span};

/// Requests waiting for the evidence thread; beyond this the disk is far
/// too slow and new requests are refused, counted and logged.
const QUEUE: usize = 256;
const POLL: Duration = Duration::from_millis(200);
/// How long past the post-roll a package waits for video that is late.
const LATE_VIDEO: Duration = Duration::from_secs(10);
/// Retention runs after packages are sealed, at most this often, and at
/// least this often when idle.
const RETENTION_EVERY: Duration = Duration::from_secs(10);
/// Seconds of video kept beyond pre-roll, post-roll and the longest wait
/// for an event, for decoder latency and queues.
const RING_MARGIN: Duration = Duration::from_secs(5);
/// Byte cap of one camera's buffer.
const RING_MAX_BYTES: usize = 64 * 1024 * 1024;

pub struct Settings {
    pub dir: PathBuf,
    pub site: String,
    pub pre: Duration,
    pub post: Duration,
    /// The longest a pass waits before its event (`events.max_delay_seconds`).
    pub max_event_delay: Duration,
    pub retention: store::Retention,
    pub config_sha256: String,
}

/// What the IOC is told when a package is sealed (or could not be).
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceNotice {
    pub schema_version: u32,
    pub kind: &'static str,
    pub event_id: String,
    pub site: String,
    pub camera: String,
    pub time: String,
    /// `sealed`, `failed`, or `deleted` (by retention).
    pub status: &'static str,
    pub uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    pub clip_complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Deleted by retention although never exported or acknowledged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// The package's `created` line in the custody log: kept by the IOC,
    /// it shows later whether the gateway's log was cut or replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custody: Option<CustodyAnchor>,
    /// Whether the package's promise is settled once this notice is
    /// stored. Not for a package sealed but not yet in the custody log
    /// (the next start logs it, from the promise), nor for deletions.
    #[serde(skip)]
    pub settles: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CustodyAnchor {
    pub seq: u64,
    pub line_sha256: String,
}

impl From<&custody::Entry> for CustodyAnchor {
    fn from(e: &custody::Entry) -> Self {
        Self {
            seq: e.seq,
            line_sha256: e.line_sha256(),
        }
    }
}

impl EvidenceNotice {
    fn new(settings: &Settings, event_id: &str, camera: &str, status: &'static str) -> Self {
        Self {
            schema_version: crate::event::SCHEMA_VERSION,
            kind: "evidence",
            event_id: event_id.to_string(),
            site: settings.site.clone(),
            camera: camera.to_string(),
            time: crate::event::rfc3339(SystemTime::now()),
            status,
            uri: package_uri(&settings.dir, event_id),
            manifest_sha256: None,
            files: Vec::new(),
            clip_complete: false,
            error: None,
            forced: false,
            custody: None,
            settles: false,
        }
    }

    pub fn topic_suffix(&self) -> String {
        format!("{}/evidence", self.camera)
    }
}

/// Takes the package ids of one acknowledgement message from the IOC, with
/// the [`Receipt`] that tells the broker the message was taken once each id
/// is recorded. Hands them back when the evidence queue is full, to be
/// offered again.
pub type Acknowledger =
    Arc<dyn Fn(Vec<String>, Receipt) -> Option<(Vec<String>, Receipt)> + Send + Sync>;

/// Runs its action (acknowledging an MQTT message to the broker) when its
/// last clone is dropped, once every package id it covers is recorded in the
/// custody log, or needed no record (unknown, already released, failed).
/// An id that cannot be recorded yet keeps a clone, and is tried again;
/// spoilt (the agent stopping first), the action never runs, and the broker
/// hands the message over again at the next connection. Until the action
/// runs, a crash or a power cut loses nothing the IOC sent.
#[derive(Clone)]
pub struct Receipt(Arc<ReceiptState>);

struct ReceiptState {
    spoilt: std::sync::atomic::AtomicBool,
    on_recorded: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Receipt {
    pub fn new(on_recorded: impl FnOnce() + Send + 'static) -> Self {
        Self(Arc::new(ReceiptState {
            spoilt: Default::default(),
            on_recorded: Mutex::new(Some(Box::new(on_recorded))),
        }))
    }

    /// One of the ids was not recorded: the action never runs.
    pub fn spoil(&self) {
        self.0.spoilt.store(true, Ordering::Relaxed);
    }
}

impl Drop for ReceiptState {
    fn drop(&mut self) {
        // A panic unwinding the evidence thread drops receipts it never recorded.
        if !self.spoilt.load(Ordering::Relaxed)
            && !std::thread::panicking()
            && let Some(action) = self.on_recorded.get_mut().ok().and_then(Option::take)
        {
            action();
        }
    }
}

/// Counters for metrics and status.
#[derive(Default)]
pub struct EvidenceCounters {
    pub sealed: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    pub deleted: AtomicU64,
    pub forced_deletions: AtomicU64,
    /// Packages logged deleted whose folder could not be removed.
    pub deletion_failures: AtomicU64,
}

enum Command {
    /// A package, with the video its camera's buffer held for it when it
    /// was asked for (see [`CameraEvidence::request`]).
    Package(Box<(PackageRequest, Span)>),
    /// One message's ids: a batch of hundreds takes one place in the
    /// queue, not hundreds (and the cameras' packages keep theirs).
    Acknowledge(Vec<String>, Receipt),
    /// Seal what is pending and end (senders may outlive the agent's run:
    /// the MQTT connection holds one for acknowledgements).
    Stop,
}

/// The evidence thread and the per-camera buffers it cuts from.
pub struct Evidence {
    tx: Option<SyncSender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
    rings: Arc<Mutex<HashMap<String, Arc<Mutex<Ring>>>>>,
    ring_keep: Duration,
    /// Pre- and post-roll of every clip.
    roll: (Duration, Duration),
    dir: PathBuf,
    pub counters: Arc<EvidenceCounters>,
}

/// One camera's side: where its encoded video goes, and where its
/// requests go.
#[derive(Clone)]
pub struct CameraEvidence {
    ring: Arc<Mutex<Ring>>,
    roll: (Duration, Duration),
    tx: SyncSender<Command>,
    dir: PathBuf,
    counters: Arc<EvidenceCounters>,
}

impl Evidence {
    /// Loads (or makes) the gateway key, clears half-written packages and
    /// starts the evidence thread. `on_notice` is called from that thread.
    pub fn start(
        settings: Settings,
        key_dir: &std::path::Path,
        on_notice: impl Fn(EvidenceNotice) + Send + 'static,
    ) -> anyhow::Result<Self> {
        let key = GatewayKey::load_or_create(key_dir)?;
        keys::check_private(key_dir)?;
        std::fs::create_dir_all(&settings.dir).with_context(|| {
            format!(
                "cannot create the evidence folder {}; fix evidence.dir or storage.dir",
                settings.dir.display()
            )
        })?;
        check_store_key(&settings.dir, &key, key_dir)?;
        store::remove_partials(&settings.dir);
        match custody::mend_head(&settings.dir, &key) {
            Ok(true) => tracing::warn!(
                "{} was one entry behind the custody log (a stop between the two writes); brought up to date",
                custody::HEAD_FILE
            ),
            Ok(false) => {}
            Err(e) => tracing::error!("cannot check the custody log's head: {e:#}"),
        }
        let left_over = promises::left_over(&settings.dir);
        tracing::info!(dir = %settings.dir.display(), key = %key.fingerprint(), "evidence packages on");

        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let rings: Arc<Mutex<HashMap<String, Arc<Mutex<Ring>>>>> = Arc::default();
        let counters = Arc::new(EvidenceCounters::default());
        let ring_keep = settings.pre + settings.post + settings.max_event_delay + RING_MARGIN;
        let roll = (settings.pre, settings.post);
        let dir = settings.dir.clone();
        let index = store::Index::for_gateway(key.public());
        let worker = Worker {
            settings,
            key,
            rings: rings.clone(),
            counters: counters.clone(),
            on_notice: Box::new(on_notice),
            pending: Vec::new(),
            index,
            early_acks: HashMap::new(),
            unrecorded: Vec::new(),
            left_over,
            stuck_reported: HashSet::new(),
        };
        let thread = std::thread::Builder::new()
            .name("evidence".into())
            .spawn(move || worker.run(rx))
            .context("cannot start the evidence thread")?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            rings,
            ring_keep,
            roll,
            dir,
            counters,
        })
    }

    pub fn camera(&self, id: &str) -> CameraEvidence {
        let ring = Arc::new(Mutex::new(Ring::new(self.ring_keep, RING_MAX_BYTES)));
        self.rings
            .lock()
            .expect("rings lock")
            .insert(id.to_string(), ring.clone());
        CameraEvidence {
            ring,
            roll: self.roll,
            tx: self.tx.clone().expect("running"),
            dir: self.dir.clone(),
            counters: self.counters.clone(),
        }
    }

    /// The publisher's side of the promises: it records each package's
    /// before storing the event that names it, and settles it once the
    /// package's notice is stored.
    pub fn promises(&self) -> promises::Promises {
        promises::Promises::new(self.dir.clone())
    }

    /// What records the IOC's acknowledgements of packages: called by the
    /// MQTT connection with each acknowledged package id.
    pub fn acknowledger(&self) -> Acknowledger {
        let tx = self.tx.clone().expect("running");
        Arc::new(move |ids: Vec<String>, receipt: Receipt| {
            let count = ids.len();
            match tx.try_send(Command::Acknowledge(ids, receipt)) {
                Ok(()) => None,
                Err(TrySendError::Full(Command::Acknowledge(ids, receipt))) => {
                    tracing::debug!(
                        packages = count,
                        "evidence queue full: acknowledgement offered again shortly"
                    );
                    Some((ids, receipt))
                }
                // The agent is stopping: the broker keeps the message.
                Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) => {
                    if let Command::Acknowledge(_, receipt) = c {
                        receipt.spoil();
                    }
                    None
                }
            }
        })
    }

    /// Seals what is pending with the video there is, and stops. Call
    /// after the cameras have stopped.
    pub fn finish(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Command::Stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl CameraEvidence {
    pub fn encoded_sink(&self) -> EncodedSink {
        let ring = self.ring.clone();
        Arc::new(move |unit| {
            if let Ok(mut r) = ring.lock() {
                r.push(unit);
            }
        })
    }

    /// The camera's stream ended or failed: no more video will come for
    /// the packages waiting on it.
    pub fn stream_ended(&self) {
        if let Ok(mut r) = self.ring.lock() {
            r.finished = true;
        }
    }

    pub fn reference(&self, id: &str) -> EvidenceRef {
        EvidenceRef {
            id: id.to_string(),
            uri: package_uri(&self.dir, id),
        }
    }

    /// Hands a request to the evidence thread without waiting; false when
    /// it was refused (counted and logged): no package will be made.
    pub fn request(&self, req: PackageRequest) -> bool {
        let id = req.id.clone();
        // The clip's start is taken now, from what the buffer holds: the
        // evidence thread may come to the request only after sealing other
        // packages or a retention sweep, when the video before the frame
        // may have left the buffer. (Only shared handles: nothing copied.)
        let span = clip_window(req.frame_time, self.roll)
            .zip(self.ring.lock().ok())
            .filter(|(_, ring)| ring.stream() == req.stream)
            .map(|((from, to), ring)| ring.cut(from, to))
            .unwrap_or_default();
        let Err(e) = self.tx.try_send(Command::Package(Box::new((req, span)))) else {
            return true;
        };
        let n = self.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let why = match e {
            TrySendError::Full(_) => "the evidence queue is full (disk too slow?)",
            TrySendError::Disconnected(_) => "the evidence thread has stopped",
        };
        tracing::error!(event = %id, refused_total = n, "no evidence package for this event: {why}");
        false
    }
}

/// The public key travels with the packages, so a copied folder can be
/// verified. A different key there means the signing key was lost or
/// replaced: the packages already signed would no longer verify against
/// this gateway, so that is for a person to sort out. A missing, empty
/// or damaged copy is only a write a power cut interrupted (older agents
/// wrote it unsynced): written again.
fn check_store_key(
    dir: &std::path::Path,
    key: &GatewayKey,
    key_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let path = dir.join(verify::STORE_KEY_FILE);
    // Only a file missing or left empty is written again: one that cannot
    // be read (a failing card, its rights) may hold another key.
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read {}: fix its rights or the disk before starting",
                    path.display()
                )
            });
        }
    };
    match keys::parse_public(&text) {
        Ok(stored) if stored == key.public() => return Ok(()),
        Ok(_) => anyhow::bail!(
            "{} holds another public key than {} ({}): the gateway's signing key was replaced or lost. \
             Restore the key from backup, or move the old packages elsewhere (with their key) before starting",
            path.display(),
            key_dir.join(keys::PRIVATE_FILE).display(),
            key.fingerprint()
        ),
        Err(_) if text.trim().is_empty() => {}
        Err(e) => tracing::warn!(
            file = %path.display(),
            "damaged ({e}), as a power cut during its write leaves it; written again from the gateway's key"
        ),
    }
    crate::durable::replace_synced(&path, (key.public_hex() + "\n").as_bytes())
        .with_context(|| format!("cannot write into {}", dir.display()))
}

/// How far apart in wall-clock time the frame and the video at its stream
/// time may have reached the agent. Further apart, the timestamps jumped in
/// between (a camera that reset its clock within one connection), and the
/// video at the frame's time is other video: sealing it as the footage
/// around the frame would be false evidence.
const SAME_TIMELINE: Duration = Duration::from_secs(10);
const OTHER_TIMELINE: &str =
    "the camera's timestamps jumped between the frame and its clip: no clip";

fn other_timeline(span: &Span, req: &PackageRequest) -> bool {
    let Some(frame_time) = req.frame_time else {
        return false;
    };
    let unit = span
        .units
        .iter()
        .find(|u| u.time().is_some_and(|t| t >= frame_time))
        .or(span.units.last());
    unit.is_some_and(|u| {
        let apart = u
            .arrived
            .duration_since(req.captured_at)
            .unwrap_or_else(|e| e.duration());
        apart > SAME_TIMELINE
    })
}

/// The stream time span of a package's clip: `pre` before its frame to
/// `post` after; None when the stream gives no timestamps.
fn clip_window(
    frame_time: Option<Duration>,
    (pre, post): (Duration, Duration),
) -> Option<(Duration, Duration)> {
    frame_time.map(|t| (t.saturating_sub(pre), t + post))
}

/// Why the video cut for a package cannot stand as the footage around its
/// frame, if it cannot.
fn not_the_frames_video(span: &Span, req: &PackageRequest) -> Option<&'static str> {
    if other_timeline(span, req) {
        Some(OTHER_TIMELINE)
    } else if starts_after_the_frame(span, req) {
        Some(FRAME_LEFT_THE_BUFFER)
    } else {
        None
    }
}

const FRAME_LEFT_THE_BUFFER: &str =
    "the video of the frame had left the camera's buffer before the package was made: no clip";

/// Whether the span's video begins after the frame: the keyframe before it
/// had left the buffer, and a clip from the next one would not show it (or
/// the buffer's oldest video is past the clip's end, and the span closed
/// with nothing in it).
fn starts_after_the_frame(span: &Span, req: &PackageRequest) -> bool {
    let first = span.units.iter().filter_map(|u| u.time()).min();
    match (first, req.frame_time) {
        (Some(first), Some(frame)) => first > frame,
        (None, Some(_)) => span.closed,
        _ => false,
    }
}

/// Where a package lives on the gateway, as the IOC is told.
fn package_uri(dir: &std::path::Path, id: &str) -> String {
    let path = std::path::absolute(dir.join(id)).unwrap_or_else(|_| dir.join(id));
    format!("file://{}", path.display())
}

struct Pending {
    req: PackageRequest,
    span: Span,
    /// Why the package gets no clip at all, decided before it is due.
    no_clip: Option<&'static str>,
    window: Option<(Duration, Duration)>,
    deadline: Instant,
}

struct Worker {
    settings: Settings,
    key: GatewayKey,
    rings: Arc<Mutex<HashMap<String, Arc<Mutex<Ring>>>>>,
    counters: Arc<EvidenceCounters>,
    on_notice: Box<dyn Fn(EvidenceNotice) + Send>,
    pending: Vec<Pending>,
    /// The folder as retention last saw it.
    index: store::Index,
    /// Packages the IOC acknowledged while they were still being recorded
    /// (the IOC has the event at once, the package seconds later), with the
    /// receipts that wait for them to be logged.
    early_acks: HashMap<String, Vec<Receipt>>,
    /// Acknowledgements that could not be logged yet (the custody log or
    /// the folder unwritable), tried again at each look of retention.
    unrecorded: Vec<(String, Receipt)>,
    /// Packages a previous run promised and never announced.
    left_over: Vec<promises::LeftOver>,
    /// Logged deleted, folder still here, already logged as stuck in this run.
    stuck_reported: HashSet<String>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Command>) {
        self.announce_left_over();
        let mut open = true;
        let mut last_retention: Option<Instant> = None;
        while open || !self.pending.is_empty() {
            match rx.recv_timeout(POLL) {
                Ok(Command::Package(request)) => {
                    let (req, span) = *request;
                    self.accept(req, span);
                }
                Ok(Command::Acknowledge(ids, receipt)) => self.acknowledge_all(ids, &receipt),
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => open = false,
                Err(RecvTimeoutError::Timeout) => {}
            }
            for mut p in std::mem::take(&mut self.pending) {
                match self.ready(&mut p, !open) {
                    Some(short) => self.seal(p, short),
                    None => self.pending.push(p),
                }
            }
            if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
                for (id, receipt) in std::mem::take(&mut self.unrecorded) {
                    self.acknowledge_all(vec![id], &receipt);
                }
                self.retention();
                last_retention = Some(Instant::now());
            }
        }
        self.retention();
        // What was not recorded stays with the broker for the next start.
        while let Ok(command) = rx.try_recv() {
            if let Command::Acknowledge(_, receipt) = command {
                receipt.spoil();
            }
        }
        let early = self.early_acks.drain().flat_map(|(_, r)| r);
        for receipt in early.chain(self.unrecorded.drain(..).map(|(_, r)| r)) {
            receipt.spoil();
        }
    }

    fn ring(&self, camera: &str) -> Option<Arc<Mutex<Ring>>> {
        self.rings.lock().ok()?.get(camera).cloned()
    }

    /// Tells the IOC what became of the packages a previous run promised
    /// (its events named them) but stopped before announcing.
    fn announce_left_over(&mut self) {
        for left in std::mem::take(&mut self.left_over) {
            let mut notice = EvidenceNotice::new(&self.settings, &left.id, &left.camera, "failed");
            notice.settles = true;
            match left.sealed {
                Some(sealed) => {
                    tracing::warn!(event = %left.id, "announcing a package sealed before the agent stopped");
                    // The notice's anchor is the package's entry; without
                    // one, verify would take the package for planted, so
                    // the promise stays for the next start to log it.
                    match self.created_entry(&left.id, &sealed.manifest_sha256) {
                        Ok(entry) => notice.custody = Some((&entry).into()),
                        Err(e) => {
                            tracing::error!(package = %left.id, "cannot log a package sealed before a stop: {e:#}; it is announced again at the next start");
                            notice.settles = false;
                            notice.error = Some(format!(
                                "sealed, but its custody log entry could not be written yet ({e:#})"
                            ));
                        }
                    }
                    notice.status = "sealed";
                    notice.manifest_sha256 = Some(sealed.manifest_sha256);
                    notice.files = sealed.files;
                    notice.clip_complete = sealed.clip_complete;
                }
                None => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let why = if left.taken {
                        "the agent stopped (crash or power cut) before the package was sealed"
                    } else {
                        "the agent stopped (crash or power cut) before the evidence thread took the package's request: no video was kept for it"
                    };
                    tracing::error!(event = %left.id, camera = %left.camera, "evidence package lost: {why}");
                    notice.error = Some(why.into());
                }
            }
            (self.on_notice)(notice);
        }
    }

    /// The package's `created` entry in the custody log: the one this
    /// gateway signed there, or one appended now (the stop came between
    /// sealing and logging).
    fn created_entry(&self, id: &str, manifest_sha256: &str) -> anyhow::Result<custody::Entry> {
        let dir = &self.settings.dir;
        let public = self.key.public();
        let found = custody::entries(dir)?
            .into_iter()
            .find(|e| e.action == Action::Created && e.package == id && e.signed_by(&public));
        match found {
            Some(entry) => Ok(entry),
            None => custody::append(
                dir,
                &self.key,
                Action::Created,
                id,
                Some(manifest_sha256),
                "plate event; logged at the next start (the agent stopped between sealing and logging)",
            ),
        }
    }

    /// `span`: the video cut when the package was asked for; empty when
    /// none was there yet, and cut here then.
    fn accept(&mut self, req: PackageRequest, span: Span) {
        // The publisher may have recorded the promise already (before it
        // stored the event) or may not have got to it yet: either way it is
        // recorded now, and marked taken.
        let dir = &self.settings.dir;
        if let Err(e) = promises::record(dir, &req.id, &req.camera)
            .and_then(|()| promises::mark_taken(dir, &req.id))
        {
            tracing::warn!(event = %req.id, "cannot record the package as pending, so a crash before it is sealed would go unreported: {e:#}");
        }
        let window = clip_window(req.frame_time, (self.settings.pre, self.settings.post));
        // An empty span (no video yet when asked for) is cut by `ready`.
        let no_clip = not_the_frames_video(&span, &req);
        self.pending.push(Pending {
            span: if no_clip.is_some() {
                Span::default()
            } else {
                span
            },
            no_clip,
            req,
            window,
            deadline: Instant::now() + self.settings.post + LATE_VIDEO,
        });
    }

    /// Collects video that arrived since; `Some(note)` when the package
    /// should be sealed now (`note` says why the clip may be short).
    fn ready(&self, p: &mut Pending, closing: bool) -> Option<Option<String>> {
        if let Some(why) = p.no_clip {
            return Some(Some(why.into()));
        }
        let Some((from, to)) = p.window else {
            return Some(Some(
                "the stream gives no timestamps: no clip can be cut".into(),
            ));
        };
        let Some(ring) = self.ring(&p.req.camera) else {
            return Some(Some("no video buffer for this camera".into()));
        };
        let Ok(ring) = ring.lock() else {
            return Some(Some("the camera's video buffer failed".into()));
        };
        if ring.stream() != p.req.stream && p.span.units.is_empty() {
            return Some(Some(
                "the camera's stream restarted before the clip could be cut".into(),
            ));
        }
        if p.span.units.is_empty() {
            p.span = ring.cut(from, to);
            if let Some(why) = not_the_frames_video(&p.span, &p.req) {
                p.span = Span::default();
                return Some(Some(why.into()));
            }
        } else {
            ring.extend(&mut p.span, to);
        }
        if p.span.closed {
            Some(p.span.short.map(str::to_string))
        } else if ring.finished {
            Some(Some("the stream ended before the end of the clip".into()))
        } else if closing {
            Some(Some("the agent stopped before the end of the clip".into()))
        } else if Instant::now() >= p.deadline {
            Some(Some(match ring.waiting() {
                Some(why) if p.span.units.is_empty() => why.into(),
                _ => format!(
                    "the video after the frame did not arrive within {} s",
                    (self.settings.post + LATE_VIDEO).as_secs()
                ),
            }))
        } else {
            None
        }
    }

    fn seal(&mut self, p: Pending, short: Option<String>) {
        let cx = package::Context {
            key: &self.key,
            config_sha256: &self.settings.config_sha256,
            pre: self.settings.pre,
            post: self.settings.post,
        };
        // Held from before the package appears until its line is written:
        // `verify` must not find a package the log does not know yet.
        let lock = custody::StoreLock::exclusive(&self.settings.dir);
        let result = package::write_package(&self.settings.dir, &cx, &p.req, &p.span, short);
        // A package on disk is sealed, whether or not its custody entry
        // could be written; an entry that could not is written at the next
        // start, from the promise kept for it.
        let logged = result.as_ref().ok().map(|sealed| match &lock {
            Ok(lock) => lock.append(
                &self.key,
                Action::Created,
                &sealed.id,
                Some(&sealed.manifest_sha256),
                "plate event",
            ),
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        });
        drop(lock);
        let sealed = result.is_ok();
        let mut notice = EvidenceNotice::new(&self.settings, &p.req.id, &p.req.camera, "sealed");
        let unlogged = match &logged {
            Some(Ok(entry)) => {
                notice.custody = Some(entry.into());
                None
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        if let Some(e) = unlogged {
            tracing::error!(event = %p.req.id, "evidence sealed, but not yet in the custody log: {e:#}; it is logged at the next start");
            notice.error = Some(format!(
                "sealed, but its custody log entry could not be written yet ({e:#})"
            ));
        }
        match result {
            Ok(Sealed {
                manifest_sha256,
                files,
                clip_complete,
                dir,
                ..
            }) => {
                self.counters.sealed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(event = %p.req.id, camera = %p.req.camera, dir = %dir.display(), clip_complete, "evidence sealed");
                notice.manifest_sha256 = Some(manifest_sha256);
                notice.files = files;
                notice.clip_complete = clip_complete;
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(event = %p.req.id, camera = %p.req.camera, "evidence package failed: {e:#}; detection goes on");
                notice.status = "failed";
                notice.error = Some(format!("{e:#}"));
            }
        }
        // Settled by the publisher once the notice is stored: a stop before
        // that leaves the promise, and the next start announces it again.
        notice.settles = unlogged.is_none();
        (self.on_notice)(notice);
        if let Some(receipts) = self.early_acks.remove(&p.req.id) {
            if sealed {
                // One entry however many messages named it; the others wait
                // with the first if it could not be logged.
                if !self.acknowledge(&p.req.id, &receipts[0]) {
                    for receipt in &receipts[1..] {
                        self.unrecorded.push((p.req.id.clone(), receipt.clone()));
                    }
                }
            } else {
                tracing::warn!(package = %p.req.id, "the IOC acknowledged a package that then failed; nothing to log");
            }
        }
    }

    /// Logs each package of one message once: an id repeated in it, or
    /// already acknowledged or exported, adds no entry to the custody log.
    fn acknowledge_all(&mut self, ids: Vec<String>, receipt: &Receipt) {
        if let Err(e) = self.index.refresh(&self.settings.dir) {
            // Which packages are released is not known: tried again later.
            tracing::warn!(
                "cannot read the evidence folder: {e:#}; acknowledgements tried again shortly"
            );
            self.unrecorded
                .extend(ids.into_iter().map(|id| (id, receipt.clone())));
            return;
        }
        let mut seen = HashSet::new();
        for id in ids {
            if self.index.released().contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            self.acknowledge(&id, receipt);
        }
    }

    /// Logs one acknowledged package; returns false when it must be tried
    /// again (kept with its receipt in `unrecorded`).
    fn acknowledge(&mut self, id: &str, receipt: &Receipt) -> bool {
        if self.pending.iter().any(|p| p.req.id == id) {
            tracing::info!(package = %id, "the IOC acknowledged a package still being recorded; logged once it is sealed");
            self.early_acks
                .entry(id.to_string())
                .or_default()
                .push(receipt.clone());
            return true;
        }
        let logged = match std::fs::metadata(self.settings.dir.join(id).join(package::MANIFEST)) {
            Ok(m) if m.is_file() => custody::append(
                &self.settings.dir,
                &self.key,
                Action::Acknowledged,
                id,
                None,
                "acknowledged by the IOC over MQTT",
            )
            .map(|_| ()),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => {
                tracing::warn!(package = %id, "the IOC acknowledged a package this gateway does not hold; ignored");
                return true;
            }
        };
        if let Err(e) = logged {
            tracing::error!(package = %id, "cannot log the acknowledgement: {e:#}; tried again shortly");
            self.unrecorded.push((id.to_string(), receipt.clone()));
            return false;
        }
        true
    }

    fn retention(&mut self) {
        let dir = self.settings.dir.clone();
        if let Err(e) = self.index.refresh(&dir) {
            return tracing::error!("evidence retention failed: {e:#}");
        }
        // Each deletion's entry and its folder's going are one change to
        // `verify`, which holds the lock shared while it reads.
        let lock = match custody::StoreLock::exclusive(&dir) {
            Ok(lock) => lock,
            Err(e) => return tracing::error!("evidence retention failed: {e:#}"),
        };
        let stuck: Vec<store::Deletion> = self.index.stuck().values().cloned().collect();
        for d in &stuck {
            self.remove(d);
        }
        // A stuck package removed now frees its bytes: counted still, it
        // would make one more package go than the quota needs.
        if !stuck.is_empty()
            && let Err(e) = self.index.refresh(&dir)
        {
            return tracing::error!("evidence retention failed: {e:#}");
        }
        let plan = store::plan(
            &self.index.packages(),
            self.index.released(),
            self.index.stuck(),
            self.settings.retention,
            SystemTime::now(),
        );
        for d in plan {
            // Nothing goes unlogged: with the log unwritable, retention waits.
            if let Err(e) = store::log_deletion(&lock, &self.key, &d) {
                return tracing::error!("evidence retention failed: {e:#}");
            }
            self.remove(&d);
        }
    }

    /// Removes a package logged deleted, and tells the IOC once it is gone.
    /// One that will not go (a folder made immutable, a disk error) is
    /// reported once and tried again at each look, without another entry
    /// in the log; the next candidates go on meanwhile.
    fn remove(&mut self, d: &store::Deletion) {
        let dir = &self.settings.dir;
        // Read before it goes: the IOC is told which camera's package it was.
        let camera = camera_of(dir, &d.id);
        if let Err(e) = store::remove(dir, d) {
            if self.stuck_reported.insert(d.id.clone()) {
                let n = self
                    .counters
                    .deletion_failures
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                tracing::error!(package = %d.id, failures_total = n, "evidence logged deleted but not removed: {e:#}; retried at each retention pass while other packages go on being deleted; remove the folder by hand if this lasts");
            }
            return;
        }
        if self.stuck_reported.remove(&d.id) {
            tracing::info!(package = %d.id, "evidence folder removed at last");
        }
        self.counters.deleted.fetch_add(1, Ordering::Relaxed);
        if d.forced {
            self.counters
                .forced_deletions
                .fetch_add(1, Ordering::Relaxed);
        }
        (self.on_notice)(EvidenceNotice {
            error: Some(d.reason.clone()),
            forced: d.forced,
            ..EvidenceNotice::new(&self.settings, &d.id, &camera, "deleted")
        });
    }
}

/// The camera a package came from, from its manifest.
fn camera_of(dir: &std::path::Path, id: &str) -> String {
    std::fs::read(dir.join(id).join(package::MANIFEST))
        .ok()
        .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m).ok())
        .and_then(|m| m["camera"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::EncodedUnit;

    #[test]
    fn a_receipt_acts_once_every_id_is_recorded_and_never_if_one_was_not() {
        let acted = Arc::new(AtomicU64::new(0));
        let receipt = |acted: &Arc<AtomicU64>| {
            let acted = acted.clone();
            Receipt::new(move || {
                acted.fetch_add(1, Ordering::Relaxed);
            })
        };
        let r = receipt(&acted);
        let waiting_for_a_seal = r.clone();
        drop(r);
        assert_eq!(acted.load(Ordering::Relaxed), 0, "one id still waits");
        drop(waiting_for_a_seal);
        assert_eq!(acted.load(Ordering::Relaxed), 1);
        let r = receipt(&acted);
        r.clone().spoil();
        drop(r);
        assert_eq!(acted.load(Ordering::Relaxed), 1, "spoilt: never");
    }

    fn request(frame_time_ms: u64, captured_at: SystemTime) -> PackageRequest {
        PackageRequest {
            id: "e".into(),
            camera: "c".into(),
            event: serde_json::Value::Null,
            frame: Arc::new(crate::frame::I420Image::new(2, 2, vec![0; 6])),
            frame_number: 1,
            stream: 1,
            frame_time: Some(Duration::from_millis(frame_time_ms)),
            captured_at,
            clock: clock::clock_state(),
            corners: [[0.0; 2]; 4],
            bbox: [0.0; 4],
        }
    }

    /// A worker on `root/evidence`, its notices kept in the list returned.
    fn worker(
        root: &std::path::Path,
        retention: store::Retention,
    ) -> (Worker, Arc<Mutex<Vec<EvidenceNotice>>>) {
        let key = GatewayKey::load_or_create(&root.join("keys")).unwrap();
        let dir = root.join("evidence");
        std::fs::create_dir_all(&dir).unwrap();
        let notices: Arc<Mutex<Vec<EvidenceNotice>>> = Arc::default();
        let sent = notices.clone();
        let worker = Worker {
            settings: Settings {
                dir: dir.clone(),
                site: "s".into(),
                pre: Duration::from_secs(1),
                post: Duration::from_secs(1),
                max_event_delay: Duration::from_secs(1),
                retention,
                config_sha256: "c".into(),
            },
            index: store::Index::for_gateway(key.public()),
            key,
            rings: Arc::default(),
            counters: Arc::default(),
            on_notice: Box::new(move |n| sent.lock().unwrap().push(n)),
            pending: Vec::new(),
            early_acks: HashMap::new(),
            unrecorded: Vec::new(),
            left_over: promises::left_over(&dir),
            stuck_reported: HashSet::new(),
        };
        (worker, notices)
    }

    const KEEP_ALL: store::Retention = store::Retention {
        max_bytes: u64::MAX,
        max_age: Duration::MAX,
    };

    /// Writes the package of `request(..)` under the id `id`.
    fn sealed_package(w: &Worker, id: &str) -> package::Sealed {
        let cx = package::Context {
            key: &w.key,
            config_sha256: "c",
            pre: Duration::from_secs(1),
            post: Duration::from_secs(1),
        };
        let req = PackageRequest {
            id: id.into(),
            ..request(2000, SystemTime::now())
        };
        package::write_package(&w.settings.dir, &cx, &req, &Span::default(), None).unwrap()
    }

    #[test]
    fn an_empty_store_key_left_by_a_power_cut_does_not_stop_the_start() {
        let root = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(&root.path().join("keys")).unwrap();
        let path = root.path().join(verify::STORE_KEY_FILE);
        for left in ["", "\n", "12ab"] {
            std::fs::write(&path, left).unwrap();
            check_store_key(root.path(), &key, &root.path().join("keys"))
                .unwrap_or_else(|e| panic!("{left:?}: {e:#}"));
            let written = std::fs::read_to_string(&path).unwrap();
            assert_eq!(written.trim(), key.public_hex());
        }
        // Another key's copy is still for a person to sort out.
        let other = GatewayKey::load_or_create(&root.path().join("other")).unwrap();
        std::fs::write(&path, other.public_hex() + "\n").unwrap();
        let err = check_store_key(root.path(), &key, &root.path().join("keys"))
            .expect_err("another key was taken");
        assert!(err.to_string().contains("replaced or lost"), "{err:#}");
    }

    #[test]
    fn a_sealed_package_keeps_its_promise_until_its_notice_is_stored() {
        let root = tempfile::tempdir().unwrap();
        let (mut w, notices) = worker(root.path(), KEEP_ALL);
        // No timestamps: no clip to wait for, sealed at the first look.
        w.accept(
            PackageRequest {
                frame_time: None,
                ..request(2000, SystemTime::now())
            },
            Span::default(),
        );
        let mut p = w.pending.pop().unwrap();
        let short = w.ready(&mut p, false).unwrap();
        w.seal(p, short);
        let notices = notices.lock().unwrap();
        assert_eq!(notices[0].status, "sealed");
        assert!(notices[0].settles);
        assert!(notices[0].custody.is_some());
        // The notice is only handed over: the publisher settles it once
        // stored, and a stop before that announces it again.
        let left = promises::left_over(&w.settings.dir);
        assert_eq!(
            left.len(),
            1,
            "the promise went before the notice was stored"
        );
        assert!(left[0].taken && left[0].sealed.is_some());
    }

    #[test]
    fn a_package_sealed_before_a_stop_is_settled_only_with_its_custody_entry() {
        let root = tempfile::tempdir().unwrap();
        let (mut w, notices) = worker(root.path(), KEEP_ALL);
        let dir = w.settings.dir.clone();
        // "logged": sealed and logged before the stop; "unlogged": sealed only.
        let logged = sealed_package(&w, "logged");
        let entry = custody::append(
            &dir,
            &w.key,
            Action::Created,
            "logged",
            Some(&logged.manifest_sha256),
            "plate event",
        )
        .unwrap();
        sealed_package(&w, "unlogged");
        for id in ["logged", "unlogged"] {
            promises::record(&dir, id, "c").unwrap();
        }
        w.left_over = promises::left_over(&dir);
        w.announce_left_over();
        let sent = std::mem::take(&mut *notices.lock().unwrap());
        let notice = |id: &str| sent.iter().find(|n| n.event_id == id).unwrap();
        for id in ["logged", "unlogged"] {
            assert_eq!(notice(id).status, "sealed");
            assert!(notice(id).settles, "{id}");
        }
        let anchor = notice("logged")
            .custody
            .as_ref()
            .expect("no custody anchor");
        assert_eq!(
            (anchor.seq, &anchor.line_sha256),
            (entry.seq, &entry.line_sha256())
        );
        assert_eq!(notice("unlogged").custody.as_ref().unwrap().seq, 2);

        // A log that cannot take the entry: announced, but the promise stays.
        let (mut w, notices) = worker(&root.path().join("other"), KEEP_ALL);
        let dir = w.settings.dir.clone();
        sealed_package(&w, "stuck");
        promises::record(&dir, "stuck", "c").unwrap();
        std::fs::create_dir(dir.join(custody::LOG_FILE)).unwrap();
        w.left_over = promises::left_over(&dir);
        w.announce_left_over();
        let sent = notices.lock().unwrap();
        assert_eq!(sent[0].status, "sealed");
        assert!(sent[0].custody.is_none());
        assert!(!sent[0].settles, "settled without a custody entry");
        assert!(sent[0].error.as_ref().unwrap().contains("custody"));
    }

    #[test]
    fn a_promise_whose_request_never_reached_the_evidence_thread_is_announced_failed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("evidence");
        promises::record(&dir, "unseen", "c").unwrap();
        promises::record(&dir, "taken", "c").unwrap();
        promises::mark_taken(&dir, "taken").unwrap();
        let (mut w, notices) = worker(root.path(), KEEP_ALL);
        w.announce_left_over();
        let sent = notices.lock().unwrap();
        let error = |id: &str| {
            let n = sent.iter().find(|n| n.event_id == id).unwrap();
            assert_eq!(n.status, "failed");
            assert!(n.settles);
            n.error.clone().unwrap()
        };
        assert!(error("unseen").contains("before the evidence thread took"));
        assert!(error("taken").contains("before the package was sealed"));
    }

    /// Makes a package folder impossible to remove until dropped: its
    /// manifest immutable (root ignores permissions; this needs
    /// CAP_LINUX_IMMUTABLE and a filesystem with the flag), else the folder
    /// read-only (enough for other users). None where neither holds.
    struct Pin(PathBuf);

    impl Pin {
        fn new(dir: &std::path::Path) -> Option<Self> {
            use std::os::unix::fs::PermissionsExt;
            let manifest = dir.join(package::MANIFEST);
            let immutable = std::process::Command::new("chattr")
                .arg("+i")
                .arg(&manifest)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !immutable {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).ok()?;
            }
            let pin = Pin(dir.to_path_buf());
            // A new name for the manifest cannot be made where it cannot be removed.
            let probe = dir.join(".probe");
            if std::fs::hard_link(&manifest, &probe).is_ok() {
                let _ = std::fs::remove_file(probe);
                return None;
            }
            Some(pin)
        }
    }

    impl Drop for Pin {
        fn drop(&mut self) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(self.0.join(package::MANIFEST))
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
        }
    }

    #[test]
    fn a_package_logged_deleted_before_a_stop_frees_its_room_when_it_goes() {
        let root = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            "01900000-0000-7000-8000-00000000000a",
            "01900000-0000-7000-8000-00000000000b",
            "01900000-0000-7000-8000-00000000000c",
        );
        let dir = root.path().join("evidence");
        std::fs::create_dir_all(&dir).unwrap();
        for id in [a, b, c] {
            std::fs::create_dir(dir.join(id)).unwrap();
            std::fs::write(dir.join(id).join(package::MANIFEST), [b'x'; 1000]).unwrap();
        }
        let size = |id: &str| {
            store::Index::read(&dir)
                .unwrap()
                .packages()
                .iter()
                .find(|p| p.id == id)
                .unwrap()
                .bytes
        };
        // Room for two: the oldest goes, and the agent stops after logging
        // its deletion, before its folder is gone.
        let two = store::Retention {
            max_bytes: size(b) + size(c),
            max_age: Duration::MAX,
        };
        let (mut w, _notices) = worker(root.path(), two);
        let oldest = store::Deletion {
            id: a.into(),
            reason: "quota".into(),
            forced: true,
        };
        store::log_deletion(
            &custody::StoreLock::exclusive(&dir).unwrap(),
            &w.key,
            &oldest,
        )
        .unwrap();
        w.retention();
        assert!(!dir.join(a).exists());
        assert!(
            dir.join(b).exists() && dir.join(c).exists(),
            "a package went for room the stuck one freed"
        );
    }

    #[test]
    fn a_package_that_will_not_go_is_logged_once_and_the_next_one_goes() {
        let root = tempfile::tempdir().unwrap();
        let quota_of_nothing = store::Retention {
            max_bytes: 0,
            max_age: Duration::MAX,
        };
        let (mut w, notices) = worker(root.path(), quota_of_nothing);
        let dir = w.settings.dir.clone();
        // Oldest first: UUIDv7 ids carry their time.
        let (a, b) = (
            "01900000-0000-7000-8000-00000000000a",
            "01900000-0000-7000-8000-00000000000b",
        );
        for id in [a, b] {
            std::fs::create_dir(dir.join(id)).unwrap();
            std::fs::write(
                dir.join(id).join(package::MANIFEST),
                br#"{"camera":"gate"}"#,
            )
            .unwrap();
        }
        let Some(pin) = Pin::new(&dir.join(a)) else {
            eprintln!(
                "skipped: no folder can be made unremovable here (neither chattr nor permissions hold)"
            );
            return;
        };
        let deletions = |id: &str| {
            custody::entries(&dir)
                .unwrap()
                .iter()
                .filter(|e| e.action == Action::Deleted && e.package == id)
                .count()
        };
        for _ in 0..3 {
            w.retention();
        }
        assert_eq!(deletions(a), 1, "the stuck deletion was logged again");
        assert!(dir.join(a).exists());
        assert!(
            !dir.join(b).exists(),
            "the next package waited behind the stuck one"
        );
        assert_eq!(w.counters.deletion_failures.load(Ordering::Relaxed), 1);
        let told = |notices: &Mutex<Vec<EvidenceNotice>>| -> Vec<String> {
            notices
                .lock()
                .unwrap()
                .iter()
                .map(|n| n.event_id.clone())
                .collect()
        };
        assert_eq!(
            told(&notices),
            [b],
            "a package still here was announced deleted"
        );

        // Once it can go, it goes, on its one entry, and the IOC is told.
        drop(pin);
        w.retention();
        assert!(!dir.join(a).exists());
        assert_eq!(deletions(a), 1);
        assert_eq!(told(&notices), [b, a]);
        let sent = notices.lock().unwrap();
        assert!(sent[1].forced && sent[1].camera == "gate", "{:?}", sent[1]);
    }

    #[test]
    fn a_package_without_a_clip_says_why_in_its_manifest() {
        let root = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(&root.path().join("keys")).unwrap();
        let cx = package::Context {
            key: &key,
            config_sha256: "c",
            pre: Duration::from_secs(1),
            post: Duration::from_secs(1),
        };
        let mut req = request(2000, SystemTime::now());
        for (id, short, frame_time, why) in [
            (
                "a",
                Some(OTHER_TIMELINE.to_string()),
                Some(2000),
                OTHER_TIMELINE,
            ),
            ("b", None, Some(2000), "no video"),
            ("c", None, None, "no timestamps"),
        ] {
            req.id = id.into();
            req.frame_time = frame_time.map(Duration::from_millis);
            let sealed =
                package::write_package(root.path(), &cx, &req, &Span::default(), short).unwrap();
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(sealed.dir.join(package::MANIFEST)).unwrap())
                    .unwrap();
            assert!(manifest["clip"].is_null(), "{id}");
            let reason = manifest["no_clip_reason"].as_str().unwrap_or_default();
            assert!(reason.contains(why), "{id}: {reason}");
        }
    }

    /// Picture `i` of 25 a second, a keyframe a second.
    fn picture(i: u64, arrived: SystemTime) -> EncodedUnit {
        EncodedUnit {
            arrived,
            ..ring::tests::unit(1, i * 40, i.is_multiple_of(25))
        }
    }

    #[test]
    fn video_that_reached_the_agent_long_after_the_frame_is_another_timeline() {
        let now = SystemTime::now();
        let mut ring = Ring::new(Duration::from_secs(30), 1 << 20);
        // 4 s of 25 fps video, a keyframe a second, all arriving now.
        for i in 0..100u64 {
            ring.push(picture(i, now));
        }
        let span = ring.cut(Duration::from_millis(1000), Duration::from_millis(3000));
        assert!(!span.units.is_empty());
        // The frame at 2 s arrived with this video: the same timeline.
        assert!(!other_timeline(&span, &request(2000, now)));
        assert!(!other_timeline(
            &span,
            &request(2000, now - Duration::from_secs(3))
        ));
        // A frame stamped 2 s that arrived a minute earlier: the camera's
        // clock went back since, and this video is not the frame's.
        assert!(other_timeline(
            &span,
            &request(2000, now - Duration::from_secs(60))
        ));
    }

    #[test]
    fn the_clip_is_cut_when_the_package_is_asked_for_not_when_the_thread_gets_to_it() {
        let root = tempfile::tempdir().unwrap();
        let (mut w, notices) = worker(root.path(), KEEP_ALL);
        let now = SystemTime::now();
        // A buffer that keeps 3 s, a keyframe a second, 25 pictures a second.
        let ring = Arc::new(Mutex::new(Ring::new(Duration::from_secs(3), 1 << 20)));
        w.rings.lock().unwrap().insert("c".into(), ring.clone());
        let push = |from: u64, to: u64| {
            for i in from..to {
                ring.lock().unwrap().push(picture(i, now));
            }
        };
        push(0, 60);
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let camera = CameraEvidence {
            ring: ring.clone(),
            roll: (Duration::from_secs(1), Duration::from_secs(1)),
            tx,
            dir: w.settings.dir.clone(),
            counters: Arc::default(),
        };
        // The frame at 2 s; the evidence thread is busy for 5 s meanwhile.
        assert!(camera.request(request(2000, now)));
        push(60, 185);
        let Ok(Command::Package(request)) = rx.try_recv() else {
            panic!("no request")
        };
        let (req, span) = *request;
        let first = span.units.first().and_then(|u| u.time()).unwrap();
        assert!(
            first <= Duration::from_secs(1),
            "the clip starts at {first:?}"
        );
        w.accept(req.clone(), span);
        assert!(w.pending[0].no_clip.is_none());
        // Cut only now, the clip would start after the frame: no clip,
        // and the package says why instead of showing other video.
        w.pending.clear();
        w.accept(
            PackageRequest {
                id: "later".into(),
                ..req
            },
            Span::default(),
        );
        let mut p = w.pending.pop().unwrap();
        let why = w.ready(&mut p, false).unwrap().unwrap();
        assert!(why.contains("had left the camera's buffer"), "{why}");
        drop(notices);
    }
}
