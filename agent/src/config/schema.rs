//! The shape of the TOML file. Every struct denies unknown keys; defaults
//! are named constants next to the field they belong to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub site: Site,
    #[serde(default)]
    pub analysis: Analysis,
    #[serde(default)]
    pub models: Models,
    #[serde(default)]
    pub events: Events,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub ingest: Ingest,
    #[serde(default)]
    pub evidence: Evidence,
    #[serde(default, rename = "camera")]
    pub cameras: Vec<CameraConfig>,
    pub outputs: Outputs,
    /// sha256 of the file as read, so evidence can name the exact
    /// configuration it was made under.
    #[serde(skip)]
    pub source_sha256: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

pub const DEFAULT_ANALYSIS_FPS: f64 = 2.0;
pub const DEFAULT_PLATE_THRESHOLD: f32 = 0.5;
pub const DEFAULT_PLATE_READ_THRESHOLD: f32 = 0.6;
/// On the held-out frames every real plate scored at least 0.72 and every
/// false detection at most 0.69 (models/README.md, `matthan eval`).
pub const DEFAULT_PLATE_UNREADABLE_THRESHOLD: f32 = 0.7;
pub const DEFAULT_FACE_THRESHOLD: f32 = 0.7;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// Analysed frames per second per camera. Frames in between are dropped
    /// inside GStreamer before colour conversion, so they cost only decoding.
    pub fps: f64,
    /// Minimum detector confidence for a plate.
    pub plate_threshold: f32,
    /// Minimum confidence of a single frame's plate read for it to count
    /// in the vote; a track with no such read is reported as unreadable.
    pub plate_read_threshold: f32,
    /// Minimum detector confidence, in some frame of the track, for a plate
    /// no frame could read to be reported as `plate.unreadable`; below it,
    /// the track is counted as dismissed (most likely not a plate).
    pub plate_unreadable_threshold: f32,
    /// Minimum face detector score.
    pub face_threshold: f32,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            fps: DEFAULT_ANALYSIS_FPS,
            plate_threshold: DEFAULT_PLATE_THRESHOLD,
            plate_read_threshold: DEFAULT_PLATE_READ_THRESHOLD,
            plate_unreadable_threshold: DEFAULT_PLATE_UNREADABLE_THRESHOLD,
            face_threshold: DEFAULT_FACE_THRESHOLD,
        }
    }
}

pub const DEFAULT_MAX_DELAY_SECONDS: f64 = 10.0;
pub const DEFAULT_DEDUP_SECONDS: f64 = 60.0;

/// When a pass becomes an event.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// A pass is reported when its track ends, or at the latest this long
    /// after it was first seen (a vehicle waiting at a red light).
    pub max_delay_seconds: f64,
    /// The same plate seen again by the same camera within this many
    /// seconds of its last sighting is the same pass: no second event.
    pub dedup_seconds: f64,
    /// Report plate tracks that never read as a valid plate as
    /// `plate.unreadable` events (they are always counted).
    pub unreadable_plates: bool,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            max_delay_seconds: DEFAULT_MAX_DELAY_SECONDS,
            dedup_seconds: DEFAULT_DEDUP_SECONDS,
            unreadable_plates: true,
        }
    }
}

pub const DEFAULT_STORAGE_DIR: &str = "state";
pub const DEFAULT_OUTBOX_MAX_MB: u64 = 512;
pub const DEFAULT_OUTBOX_MAX_AGE_HOURS: f64 = 168.0;

/// Where the agent keeps what must survive a restart.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// State folder (relative to the config file); the outbox lives in
    /// `outbox/` inside it. `/var/lib/matthan` on an installed gateway.
    pub dir: PathBuf,
    /// Undelivered events kept at most, in MiB; beyond it the oldest are
    /// dropped, counted and logged.
    pub outbox_max_mb: u64,
    /// Undelivered events older than this are dropped, counted and logged.
    pub outbox_max_age_hours: f64,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_STORAGE_DIR),
            outbox_max_mb: DEFAULT_OUTBOX_MAX_MB,
            outbox_max_age_hours: DEFAULT_OUTBOX_MAX_AGE_HOURS,
        }
    }
}

pub const DEFAULT_EVIDENCE_PRE_SECONDS: f64 = 5.0;
pub const DEFAULT_EVIDENCE_POST_SECONDS: f64 = 3.0;
pub const DEFAULT_EVIDENCE_MAX_MB: u64 = 4096;
pub const DEFAULT_EVIDENCE_MAX_AGE_DAYS: f64 = 90.0;

/// Evidence packages for plate events: the camera's original video around
/// the frame the plate was read from, the frame, the crops and a signed
/// manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Evidence {
    pub enabled: bool,
    /// Package folder (relative to the config file); `evidence/` inside
    /// `storage.dir` when not set.
    pub dir: Option<PathBuf>,
    /// Seconds of video before the frame the plate was read from.
    pub pre_seconds: f64,
    /// Seconds of video after it.
    pub post_seconds: f64,
    /// Disk quota of the package folder, in MiB; beyond it the oldest
    /// packages go, exported or acknowledged ones first.
    pub max_mb: u64,
    /// Exported or acknowledged packages older than this are deleted;
    /// others are kept until the quota forces them out.
    pub max_age_days: f64,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            pre_seconds: DEFAULT_EVIDENCE_PRE_SECONDS,
            post_seconds: DEFAULT_EVIDENCE_POST_SECONDS,
            max_mb: DEFAULT_EVIDENCE_MAX_MB,
            max_age_days: DEFAULT_EVIDENCE_MAX_AGE_DAYS,
        }
    }
}

/// Gateway-wide video settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ingest {
    /// `auto` (the board's hardware decoder if there is one), `jetson`,
    /// `rockchip`, `vaapi`, `raspberrypi` or `software`. A preset whose
    /// decoder is missing falls back to software with a warning.
    pub decoder: crate::ingest::decoder::DecoderPreset,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Address of the Prometheus endpoint (`GET /metrics`); keep it on
    /// loopback. An empty string turns it off.
    pub metrics_listen: String,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            metrics_listen: crate::health::metrics::DEFAULT_LISTEN.into(),
        }
    }
}

pub const DEFAULT_MODELS_DIR: &str = "models/fetched";
pub const DEFAULT_FACE_DETECTOR: &str = "yunet_s_dynamic.onnx";
/// The project's own models, trained for Vietnamese plates (motorbikes
/// included); the third-party HyperLPR3 and fast-plate-ocr models they
/// started from stay selectable by name.
pub const DEFAULT_PLATE_DETECTOR: &str = "vn_plate_det_320.onnx";
pub const DEFAULT_PLATE_READER: &str = "vn_plate_ocr.onnx";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Models {
    /// Folder holding the ONNX files (relative to the config file).
    pub dir: PathBuf,
    pub face_detector: String,
    pub plate_detector: String,
    pub plate_reader: String,
    /// ONNX Runtime intra-op threads per model. One keeps a camera's
    /// inference on one core and leaves the others to decoding.
    pub threads: usize,
}

impl Default for Models {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_MODELS_DIR),
            face_detector: DEFAULT_FACE_DETECTOR.into(),
            plate_detector: DEFAULT_PLATE_DETECTOR.into(),
            plate_reader: DEFAULT_PLATE_READER.into(),
            threads: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `rtsp://…` or `file://…` (a path relative to the config file may be
    /// written `file://clips/a.mp4`).
    pub source: Source,
    #[serde(default)]
    pub location: Option<Location>,
    /// Lane labels, left to right as the camera sees them.
    #[serde(default)]
    pub lanes: Vec<String>,
    /// Direction of travel the camera watches, e.g. "northbound".
    #[serde(default)]
    pub direction: Option<String>,
    /// Overrides `analysis.fps` for this camera.
    #[serde(default)]
    pub analysis_fps: Option<f64>,
    /// What to look for in this camera's frames.
    #[serde(default = "default_detect")]
    pub detect: Vec<DetectKind>,
    /// File sources only: play at the file's own frame rate, as a camera
    /// would deliver it. `false` analyses every frame as fast as possible.
    #[serde(default = "default_true")]
    pub realtime: bool,
    /// File sources only: start again from the beginning at the end.
    #[serde(default, rename = "loop")]
    pub loop_file: bool,
    /// Restart the camera's pipeline when no frame has arrived for this
    /// many seconds (default 10).
    #[serde(default)]
    pub stall_seconds: Option<f64>,
    /// Analyse a frame only when the scene moved since the last analysed
    /// one (a cheap comparison of a small grey copy); unchanged frames keep
    /// the last detections. Saves most of the inference on quiet streets.
    #[serde(default)]
    pub motion_gate: bool,
    /// RTSP only: transport, "auto" (UDP, then TCP when UDP gets nothing),
    /// "tcp" or "udp".
    #[serde(default)]
    pub rtsp_transport: RtspTransport,
}

fn default_detect() -> Vec<DetectKind> {
    vec![DetectKind::Plates, DetectKind::Faces]
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectKind {
    Plates,
    Faces,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    #[default]
    Auto,
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "String")]
pub enum Source {
    Rtsp(String),
    File(PathBuf),
}

impl From<Source> for String {
    fn from(s: Source) -> String {
        match s {
            Source::Rtsp(u) => u,
            Source::File(p) => format!("file://{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Source::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, String> {
        if let Some(path) = s.strip_prefix("file://") {
            if path.is_empty() {
                return Err(format!(
                    "`{s}` names no file; write file:///abs/path.mp4 or file://relative/path.mp4"
                ));
            }
            return Ok(Source::File(PathBuf::from(path)));
        }
        if s.starts_with("rtsp://") || s.starts_with("rtsps://") {
            let url = url::Url::parse(s)
                .map_err(|e| format!("`{}` is not a valid RTSP URL: {e}", redact(s)))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("`{}` has no host", redact(s)));
            }
            if s.contains('@') && url.username().is_empty() && url.password().is_none() {
                return Err(format!(
                    "in `{}` the part before `@` is not read as a user and password, so the host is wrong: \
                     a password holding `/`, `?` or `#` ends the host early; write those characters \
                     percent-encoded (`/` as %2F, `?` as %3F, `#` as %23, `@` as %40)",
                    redact(s)
                ));
            }
            return Ok(Source::Rtsp(s.to_string()));
        }
        Err(format!(
            "`{}` is not a camera source: use rtsp://host[:port]/path or file://path/to/clip.mp4",
            redact(s)
        ))
    }

    /// The source as it may be logged: RTSP credentials are replaced.
    pub fn display(&self) -> String {
        match self {
            Source::Rtsp(u) => redact(u),
            Source::File(p) => format!("file://{}", p.display()),
        }
    }
}

/// Camera URLs carry passwords (`rtsp://admin:secret@…`); they must never
/// reach a log or an error message. Everything between the scheme and the
/// last `@` goes, however a URL parser would read it: a password holding
/// `/` makes a parser take the user and password for the host.
pub fn redact(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let url = match url.rfind('@') {
        Some(at) if at >= after_scheme => {
            format!("{}***{}", &url[..after_scheme], &url[at..])
        }
        _ => url.to_string(),
    };
    redact_parameters(&url)
}

/// Many cheap cameras (the XMEye family) take their credentials in the
/// path or query instead: `rtsp://10.0.0.9/user=admin&password=x&channel=1`.
/// The value of every `key=value` whose key names a user, a password or a
/// token goes, up to the next separator.
pub fn redact_parameters(text: &str) -> String {
    const SECRET_KEYS: [&str; 6] = ["user", "usr", "pass", "pwd", "login", "token"];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let key_start = rest[..eq]
            .rfind(['/', '?', '&', ';', ' ', '"', '\''])
            .map_or(0, |i| i + 1);
        let key = rest[key_start..eq].to_ascii_lowercase();
        out.push_str(&rest[..=eq]);
        rest = &rest[eq + 1..];
        if SECRET_KEYS.iter().any(|k| key.contains(k)) {
            let end = rest
                .find(['/', '?', '&', ';', ' ', '"', '\''])
                .unwrap_or(rest.len());
            out.push_str("***");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    pub mqtt: Option<MqttOutput>,
    pub jsonl: Option<JsonLinesOutput>,
}

pub const DEFAULT_TOPIC_PREFIX: &str = "matthan/v1";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttOutput {
    /// `mqtt://host:port` (plain TCP) or `mqtts://host:port` (TLS).
    pub url: String,
    /// Defaults to `matthan-{site id}`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// mqtts only: PEM file of the CA that signed the broker's certificate
    /// (default: the system's trusted roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// mqtts only, for mutual TLS: the gateway's certificate and key (PEM).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    /// The password is never written in this file: it is read from a file
    /// (readable by the agent only) or from an environment variable.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
}

fn default_topic_prefix() -> String {
    DEFAULT_TOPIC_PREFIX.into()
}

fn default_qos() -> u8 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonLinesOutput {
    /// "-" for standard output, else a file that events are appended to.
    pub path: JsonLinesTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "String")]
pub enum JsonLinesTarget {
    Stdout,
    File(PathBuf),
}

impl From<JsonLinesTarget> for String {
    fn from(t: JsonLinesTarget) -> String {
        match t {
            JsonLinesTarget::Stdout => "-".into(),
            JsonLinesTarget::File(p) => p.display().to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for JsonLinesTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "-" => JsonLinesTarget::Stdout,
            _ => JsonLinesTarget::File(PathBuf::from(s)),
        })
    }
}
