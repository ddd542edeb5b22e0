//! The `matthan` command line. Every subcommand, flag and its help text is
//! defined here; the work is done by the library's stages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use matthan::config::{Config, DetectKind, Models as ModelsConfig};
use matthan::evidence::keys::{self, GatewayKey};
use matthan::frame::{BgrImage, I420Image};
use matthan::infer::Models;
use matthan::infer::geometry::quad_aspect;

#[derive(Parser)]
#[command(
    name = "matthan",
    version,
    about = "Edge video analytics agent: reads Vietnamese licence plates and finds faces in camera streams, publishes events over MQTT"
)]
struct Cli {
    /// Log format on standard error: `text` for people, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaKind {
    Event,
    Evidence,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every configured camera until SIGINT or SIGTERM (or until every
    /// file source has finished).
    Run {
        /// The site's configuration file (see pipelines/*.toml).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file and the model files it names; exits
    /// non-zero with the key and the problem when something is wrong.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the detectors on still images and print one JSON object per image.
    Detect {
        /// Folder with the ONNX models (default: models.dir of --config, else models/fetched).
        #[arg(long)]
        models: Option<PathBuf>,
        /// Take model names and thresholds from this configuration file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print JSON lines (the only output format for now; kept explicit
        /// because accuracy benchmarks parse it).
        #[arg(long, required = true)]
        json: bool,
        /// JPEG or PNG images.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the events, or of the evidence notices.
    Schema {
        #[arg(value_enum, default_value_t = SchemaKind::Event)]
        which: SchemaKind,
    },
    /// Measure this machine: decode and inference limits on one core, N
    /// real-time RTSP cameras through the agent, the most cameras it holds.
    /// Prints one JSON object. Run the release build.
    Bench {
        /// Decode-only and inference-only frames per second on one core.
        #[arg(long, conflicts_with_all = ["streams", "max_streams"])]
        limits: bool,
        /// Run this many cameras (RTSP at real time) through the agent.
        #[arg(long)]
        streams: Option<usize>,
        /// Find the most cameras that hold the analysis rate with p99
        /// frame-to-event latency within 300 ms.
        #[arg(long, conflicts_with = "streams")]
        max_streams: bool,
        /// The clip (H.264 MP4); scripts/make-bench-clip makes the 1080p25 one.
        #[arg(long)]
        source: PathBuf,
        /// Measured seconds per run, after every camera is streaming.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Analysed frames per second per camera.
        #[arg(long, default_value_t = 5.0)]
        analysis_fps: f64,
        /// Turn each camera's motion gate on.
        #[arg(long)]
        motion_gate: bool,
        /// Spread the cameras' starting points evenly over this many seconds
        /// of the clip, as independent cameras are never all in the same
        /// scene at once (0: all start together). The bench clip's cycle of
        /// moving and still scenes is 47 s.
        #[arg(long, default_value_t = 0.0)]
        spread: f64,
        /// Folder with the ONNX models.
        #[arg(long, default_value = matthan::config::DEFAULT_MODELS_DIR)]
        models: PathBuf,
    },
    /// Score plate finding and reading on labelled data with the agent's
    /// own code, and time each stage on one core. Prints one JSON object.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
        #[command(flatten)]
        models: EvalModels,
    },
    /// The gateway's evidence signing key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Evidence packages: list, verify, export for review.
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
    /// The reader on upright plate crops: DIR holds `images/` (or the
    /// images) and `truth.csv` (`image`, `plate_text`).
    Crops {
        dir: PathBuf,
        /// The CSV with the true strings (default DIR/truth.csv).
        #[arg(long)]
        truth: Option<PathBuf>,
    },
    /// Detector, then detector and reader, on frames: DIR holds `images/`
    /// and YOLO `labels/`.
    Frames {
        dir: PathBuf,
        /// CSV (`image`, `category`, `plate`) choosing the frames, their
        /// category, and the plate strings a person read in them.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
    /// Detector and reader on every few frames of a video, against the
    /// plates a person reads in it.
    Clip {
        source: PathBuf,
        /// The plates in the clip, comma-separated (`59-KA 191.66,59-GA 185.93`).
        #[arg(long, value_delimiter = ',', required = true)]
        plates: Vec<String>,
        /// Analyse every N-th frame.
        #[arg(long, default_value_t = 3)]
        every: u64,
    },
}

#[derive(clap::Args)]
struct EvalModels {
    /// Folder with the ONNX models.
    #[arg(long, global = true, default_value = matthan::config::DEFAULT_MODELS_DIR)]
    models: PathBuf,
    /// Plate detector file in that folder (default: the agent's).
    #[arg(long, global = true, default_value = matthan::config::DEFAULT_PLATE_DETECTOR)]
    plate_detector: String,
    /// Plate reader file in that folder (default: the agent's).
    #[arg(long, global = true, default_value = matthan::config::DEFAULT_PLATE_READER)]
    plate_reader: String,
    /// Plate detector confidence threshold (default: the agent's).
    #[arg(long, global = true, default_value_t = matthan::config::DEFAULT_PLATE_THRESHOLD)]
    threshold: f32,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print the public key and its fingerprint (register the fingerprint
    /// with the IOC; it identifies this gateway's evidence).
    Show {
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum EvidenceCommand {
    /// List the packages in the evidence folder, oldest first.
    List {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a package folder, an exported folder, or the whole evidence
    /// folder with its custody log. Exits 1 on any change, naming it.
    Verify {
        /// A package, an export, or an evidence folder.
        path: PathBuf,
        /// The gateway's public key (64 hex digits, or a file holding them);
        /// without it, the key inside the package or folder is used and its
        /// fingerprint printed for comparison.
        #[arg(long)]
        key: Option<String>,
        /// A package's `created` line as an evidence notice gave it to the
        /// IOC (`custody.seq` and `custody.line_sha256`), as SEQ:SHA256;
        /// repeatable. Shows whether the folder's custody log was cut or
        /// replaced by an older copy since, which the log cannot show alone.
        #[arg(long, value_name = "SEQ:SHA256")]
        custody: Vec<String>,
    },
    /// Write a self-contained folder with the package's files and a page
    /// for review in any browser; logs the export in the custody log. Run
    /// as the agent's user (it signs the log entry).
    Export {
        /// The package id (the event id).
        id: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MATTHAN_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            matthan::run::run(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config: path } => check(&path),
        Command::Detect {
            models,
            config,
            json: _,
            images,
        } => detect(models, config, &images),
        Command::Schema { which } => {
            let schema = match which {
                SchemaKind::Event => matthan::event::SCHEMA_JSON,
                SchemaKind::Evidence => matthan::event::EVIDENCE_SCHEMA_JSON,
            };
            println!("{}", schema.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command: KeysCommand::Show { config },
        } => {
            let config = Config::load(&config)?;
            let key = GatewayKey::load(&config.key_dir())?;
            println!("public key:  {}", key.public_hex());
            println!("fingerprint: {}", key.fingerprint());
            println!(
                "file:        {}",
                config.key_dir().join(keys::PRIVATE_FILE).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Evidence { command } => evidence(command),
        Command::Eval { what, models } => {
            use matthan::eval;
            let setup = eval::Setup {
                models: ModelsConfig {
                    dir: models.models,
                    plate_detector: models.plate_detector,
                    plate_reader: models.plate_reader,
                    ..ModelsConfig::default()
                },
                threshold: models.threshold,
            };
            let out = matthan::bench::on_one_core(move || match what {
                EvalCommand::Crops { dir, truth } => {
                    eval::crops::run(&dir, truth.as_deref(), &setup)
                }
                EvalCommand::Frames { dir, labels } => {
                    eval::frames::run(&dir, labels.as_deref(), &setup)
                }
                EvalCommand::Clip {
                    source,
                    plates,
                    every,
                } => eval::clip::run(&source, &plates, every, &setup),
            })?;
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            limits,
            streams,
            max_streams,
            source,
            seconds,
            analysis_fps,
            motion_gate,
            spread,
            models,
        } => {
            use matthan::bench;
            if !(spread >= 0.0 && spread.is_finite()) {
                anyhow::bail!(
                    "--spread {spread}: give the seconds (0 or more) to spread the cameras over"
                );
            }
            if !source.is_file() {
                anyhow::bail!(
                    "--source {} is not a file; scripts/make-bench-clip makes the benchmark clip",
                    source.display()
                );
            }
            let models_config = ModelsConfig {
                dir: models.clone(),
                ..ModelsConfig::default()
            };
            let setup = bench::streams::Setup {
                source: std::path::absolute(&source)?,
                models_dir: models,
                streams: streams.unwrap_or(1),
                seconds,
                analysis_fps,
                motion_gate,
                spread,
            };
            let out = if limits {
                let l = bench::limits::measure(&source, &models_config)?;
                let mut v = serde_json::to_value(&l)?;
                v["limit_streams"] =
                    json!(bench::round_to(bench::limit_streams(&l, analysis_fps), 2));
                v["analysis_fps"] = json!(analysis_fps);
                v
            } else if max_streams {
                let l = bench::limits::measure(&source, &models_config)?;
                bench::max_streams(&setup, &l)?
            } else if streams.is_some() {
                serde_json::to_value(bench::streams::run(&setup)?)?
            } else {
                anyhow::bail!("say what to measure: --limits, --streams N or --max-streams");
            };
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn evidence(command: EvidenceCommand) -> anyhow::Result<ExitCode> {
    use matthan::evidence::{export, store, verify};
    match command {
        EvidenceCommand::List { config } => {
            let config = Config::load(&config)?;
            let dir = config.evidence_dir();
            // Only what the gateway signed counts as exported or acknowledged.
            // The key folder may be the service user's alone; the copy
            // that travels with the packages will do as well.
            let public = config.key_dir().join(keys::PUBLIC_FILE);
            let read = |path: &Path| {
                std::fs::read_to_string(path)
                    .map_err(anyhow::Error::from)
                    .and_then(|k| keys::parse_public(&k))
            };
            let key = read(&public)
                .or_else(|_| read(&dir.join(verify::STORE_KEY_FILE)))
                .with_context(|| {
                    format!(
                        "cannot read the gateway's public key {} (made at the agent's first start; `matthan keys show` prints it)",
                        public.display()
                    )
                })?;
            let index = store::Index::read_for_gateway(&dir, key)?;
            let (released, packages) = (index.released(), index.packages());
            for p in &packages {
                let manifest: serde_json::Value = std::fs::read(p.dir.join("manifest.json"))
                    .ok()
                    .and_then(|m| serde_json::from_slice(&m).ok())
                    .unwrap_or_default();
                println!(
                    "{}  {}  {:<8} {:<14} {:>7} KiB  {}",
                    p.id,
                    manifest["event"]["time"].as_str().unwrap_or("?"),
                    manifest["camera"].as_str().unwrap_or("?"),
                    manifest["event"]["plate"]["text"].as_str().unwrap_or("?"),
                    p.bytes / 1024,
                    if released.contains(&p.id) {
                        "exported/acknowledged"
                    } else {
                        "not exported"
                    }
                );
            }
            eprintln!("{} package(s) in {}", packages.len(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        EvidenceCommand::Verify { path, key, custody } => {
            let trusted = key
                .map(|k| {
                    let text = std::fs::read_to_string(&k).unwrap_or(k);
                    keys::parse_public(&text).context("--key")
                })
                .transpose()?;
            let mut report = verify::verify(&path, trusted.as_ref())?;
            for anchor in &custody {
                let (seq, sha) = anchor
                    .split_once(':')
                    .and_then(|(seq, sha)| Some((seq.parse::<u64>().ok()?, sha)))
                    .with_context(|| {
                        format!("--custody {anchor}: write the notice's custody.seq and custody.line_sha256 as SEQ:SHA256")
                    })?;
                match matthan::evidence::custody::check_anchor(&path, seq, sha)? {
                    None => report.checked.push(format!(
                        "custody.log line {seq}: the one the IOC was told of"
                    )),
                    Some(problem) => report.problems.push(format!("custody.log {problem}")),
                }
            }
            print!("{}", report.print());
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        EvidenceCommand::Export { id, out, config } => {
            let config = Config::load(&config)?;
            let key = GatewayKey::load(&config.key_dir())?;
            let report = export::export(&config.evidence_dir(), &id, &out, &key)?;
            print!("{}", report.print());
            println!(
                "exported to {}; open {} in a browser",
                out.display(),
                out.join("index.html").display()
            );
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let mut problems = Vec::new();
    for (key, file) in [
        ("models.face_detector", &config.models.face_detector),
        ("models.plate_detector", &config.models.plate_detector),
        ("models.plate_reader", &config.models.plate_reader),
    ] {
        let p = config.models.dir.join(file);
        if !p.is_file() {
            problems.push(format!(
                "{}: `{key}`: model file {} does not exist; run scripts/setup, or fix models.dir",
                path.display(),
                p.display()
            ));
        }
    }
    // Every model file is there: load them, as `run` would, so that a
    // truncated file or a model named for the wrong role shows here too.
    if problems.is_empty()
        && let Err(e) = Models::load(&config.models)
    {
        problems.push(format!("{}: {e:#}", path.display()));
    }
    if let Some(mqtt) = &config.outputs.mqtt {
        for (key, file) in [
            ("ca_file", &mqtt.ca_file),
            ("client_cert_file", &mqtt.client_cert_file),
            ("client_key_file", &mqtt.client_key_file),
            ("password_file", &mqtt.password_file),
        ] {
            // Read whole, as the connection will: a folder opens as a file.
            if let Some(file) = file
                && let Err(e) = std::fs::read(file)
            {
                problems.push(format!(
                    "{}: `outputs.mqtt.{key}`: cannot read {}: {e}",
                    path.display(),
                    file.display()
                ));
            }
        }
    }
    if let Some(var) = config
        .outputs
        .mqtt
        .as_ref()
        .and_then(|m| m.password_env.as_ref())
        && std::env::var_os(var).is_none()
    {
        // A warning only: `check` is often run from a shell, outside the
        // service's environment that sets it.
        eprintln!(
            "warning: {}: `outputs.mqtt.password_env`: {var} is not set here; the service's \
             environment must set it, or the agent stops at start",
            path.display()
        );
    }
    // Under the systemd unit only /var/lib/matthan is writable: a folder
    // moved elsewhere must show here, before the start, not as lost
    // evidence or a temporary outbox after it.
    let mut folders = vec![("storage.dir", config.storage.dir.clone())];
    if config.evidence.enabled {
        folders.push(("evidence.dir", config.evidence_dir()));
    }
    if let Some(matthan::config::JsonLinesOutput {
        path: matthan::config::JsonLinesTarget::File(file),
    }) = &config.outputs.jsonl
    {
        if file.is_dir() {
            problems.push(format!(
                "{}: `outputs.jsonl.path`: {} is a folder; name a file in it",
                path.display(),
                file.display()
            ));
        }
        folders.push(("outputs.jsonl.path", file.clone()));
    }
    for (key, folder) in folders {
        if let Err(e) = writable(&folder) {
            problems.push(format!(
                "{}: `{key}`: {} cannot be written ({e}); give a folder the agent's user can write \
                 (under systemd, add it with `systemctl edit matthan`: ReadWritePaths=…)",
                path.display(),
                folder.display()
            ));
        }
    }
    for (i, cam) in config.cameras.iter().enumerate() {
        if let matthan::config::Source::File(p) = &cam.source
            && !p.is_file()
        {
            problems.push(format!(
                "{}: `camera[{i}].source`: {} does not exist",
                path.display(),
                p.display()
            ));
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        return Ok(ExitCode::from(1));
    }
    println!(
        "{}: OK: site {}, {} camera(s): {}",
        path.display(),
        config.site.id,
        config.cameras.len(),
        config
            .cameras
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `path` could be written: itself if it exists, else the
/// nearest folder above it that does (where it would be made).
fn writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if existing != path && !existing.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is a file, where a folder would have to be made",
            existing.display()
        )));
    }
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes())?;
    // SAFETY: access() only reads the NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn detect(
    models_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    images: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let (models_config, thresholds) = match &config {
        Some(p) => {
            let c = Config::load(p)?;
            (c.models, c.analysis)
        }
        None => (ModelsConfig::default(), Default::default()),
    };
    let dir = models_dir.unwrap_or_else(|| models_config.dir.clone());
    let models = Models::load_from(&dir, &models_config)?;
    let mut failed = false;
    for path in images {
        // One bad image must not stop the batch: report it and go on.
        let result = BgrImage::open(path).and_then(|img| {
            // Analysed as a camera's frame is: in I420.
            let d = I420Image::from_bgr(&img)
                .and_then(|frame| {
                    models.analyze(
                        &frame,
                        &[DetectKind::Plates, DetectKind::Faces],
                        &thresholds,
                    )
                })
                .with_context(|| format!("analysis of {} failed", path.display()))?;
            Ok((img, d))
        });
        match result {
            Ok((img, d)) => {
                let plates: Vec<_> = d
                    .plates
                    .iter()
                    .map(|p| {
                        json!({
                            "bbox": p.bbox.map(round1), "corners": p.corners.map(|c| c.map(round1)),
                            "chars": p.chars,
                            "text": matthan::plate::parse_shaped(&p.chars, p.lines, quad_aspect(&p.corners))
                                .map_or_else(|| p.chars.clone(), |plate| plate.display),
                            "confidence": round3(p.detector_score * p.read_confidence),
                            "detector_confidence": round3(p.detector_score), "read_confidence": round3(p.read_confidence),
                            "lines": p.lines,
                        })
                    })
                    .collect();
                let faces: Vec<_> = d
                    .faces
                    .iter()
                    .map(|f| json!({"bbox": f.bbox.map(round1), "score": round3(f.score), "landmarks": f.landmarks.map(|c| c.map(round1))}))
                    .collect();
                let t = d.timing;
                let timing = json!({
                    "plate_detector": round3(t.plate_detector_ms as f32),
                    "plate_reader": round3(t.plate_reader_ms as f32),
                    "face_detector": round3(t.face_detector_ms as f32),
                });
                println!(
                    "{}",
                    json!({"image": path.display().to_string(), "width": img.width, "height": img.height, "plates": plates, "faces": faces, "timing_ms": timing})
                );
            }
            Err(e) => {
                failed = true;
                eprintln!("error: {e:#}");
                println!(
                    "{}",
                    json!({"image": path.display().to_string(), "error": format!("{e:#}")})
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn round1(v: f32) -> f64 {
    matthan::bench::round_to(v.into(), 1)
}

fn round3(v: f32) -> f64 {
    matthan::bench::round_to(v.into(), 3)
}
