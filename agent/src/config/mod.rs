//! The site's configuration: one TOML file describing the site, its
//! cameras, the models and thresholds, and where events go.
//!
//! Loading happens in two steps. `toml` + serde reject syntax errors,
//! wrong types and unknown keys (every struct denies unknown fields, so a
//! misspelt key is an error, not a silently ignored setting). Then
//! [`validate`] checks what types cannot say: ranges, URL schemes, unique
//! ids. Both report the file, the exact key and what to do.

mod schema;
mod validate;

pub use schema::*;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates the file. Relative paths inside it
    /// (model folder, JSON-lines file, `file://` sources) are resolved
    /// against the file's own folder, so a config works from any cwd.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path, &base)
    }

    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(&e, text),
        })?;
        validate::validate(&config).map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        })?;
        config.resolve_paths(base);
        config.source_sha256 = crate::digest::sha256_hex(text.as_bytes());
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.models.dir);
        resolve(&mut self.storage.dir);
        if let Some(d) = &mut self.evidence.dir {
            resolve(d);
        }
        if let Some(m) = &mut self.outputs.mqtt {
            for p in [
                &mut m.ca_file,
                &mut m.client_cert_file,
                &mut m.client_key_file,
                &mut m.password_file,
            ]
            .into_iter()
            .flatten()
            {
                resolve(p);
            }
        }
        if let Some(JsonLinesOutput {
            path: JsonLinesTarget::File(p),
        }) = &mut self.outputs.jsonl
        {
            resolve(p);
        }
        for camera in &mut self.cameras {
            if let Source::File(p) = &mut camera.source {
                resolve(p);
            }
        }
    }

    /// How passes are made of a camera's frames, analysed at `fps`.
    pub fn pass_config(&self, fps: f64) -> crate::rules::PassConfig {
        crate::rules::PassConfig {
            tracker: crate::track::TrackerConfig::at_fps(fps),
            max_delay: std::time::Duration::from_secs_f64(self.events.max_delay_seconds),
            dedup_window: std::time::Duration::from_secs_f64(self.events.dedup_seconds),
            emit_unreadable: self.events.unreadable_plates,
            min_read_confidence: self.analysis.plate_read_threshold,
            min_unreadable_score: self.analysis.plate_unreadable_threshold,
        }
    }

    pub fn outbox_config(&self) -> crate::publish::outbox::OutboxConfig {
        crate::publish::outbox::OutboxConfig {
            max_bytes: self.storage.outbox_max_mb * 1024 * 1024,
            max_age: std::time::Duration::from_secs_f64(self.storage.outbox_max_age_hours * 3600.0),
            ..crate::publish::outbox::OutboxConfig::new(self.storage.dir.join("outbox"))
        }
    }

    /// Where evidence packages and their custody log live.
    pub fn evidence_dir(&self) -> std::path::PathBuf {
        self.evidence
            .dir
            .clone()
            .unwrap_or_else(|| self.storage.dir.join("evidence"))
    }

    /// Where the gateway's signing key lives.
    pub fn key_dir(&self) -> std::path::PathBuf {
        crate::evidence::keys::key_dir(&self.storage.dir)
    }

    /// Effective analysis rate for one camera.
    pub fn analysis_fps(&self, camera: &CameraConfig) -> f64 {
        camera.analysis_fps.unwrap_or(self.analysis.fps)
    }
}

/// toml's message already names the key; add the line and column so the
/// installer can find it in a long file.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    // toml quotes the value it could not take: a camera URL, perhaps.
    let message = hide_credentials(e.message().trim());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            let line_text =
                hide_credentials(text[line_start..].lines().next().unwrap_or("").trim());
            format!("line {line}, column {column} (`{line_text}`): {message}")
        }
        None => message,
    }
}

/// Hides `user:password@` in any URL inside a line of the file, since the
/// line is quoted back in error messages. The credentials run to the last
/// `@` before the next white space: a password may hold `/`, `'` or `"`,
/// so neither the host nor a quote ends them (a URL holds no white space;
/// the worst case hides more than the credentials, never less).
pub(crate) fn hide_credentials(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    schema::redact_parameters(&out)
}

#[cfg(test)]
mod tests;
