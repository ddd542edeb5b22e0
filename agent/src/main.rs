//! The `matthan` command line. Every subcommand, flag and its help text is
//! defined here; the work is done by the library's stages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use matthan::config::{Config, DetectKind, Models as ModelsConfig};
use matthan::frame::BgrImage;
use matthan::infer::Models;

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
    /// Print the JSON Schema of the events.
    Schema,
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
        Command::Schema => {
            println!("{}", matthan::event::SCHEMA_JSON.trim_end());
            Ok(ExitCode::SUCCESS)
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
            let d = models
                .analyze(&img, &[DetectKind::Plates, DetectKind::Faces], &thresholds)
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
                            "chars": p.chars, "text": matthan::plate::display_text(&p.chars),
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
    (v as f64 * 10.0).round() / 10.0
}

fn round3(v: f32) -> f64 {
    (v as f64 * 1000.0).round() / 1000.0
}
