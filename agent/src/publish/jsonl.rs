//! Events as JSON lines, one object per line, to standard output or
//! appended to a file: the simplest integration, and what `matthan run`
//! prints for an installer watching a terminal.

use std::io::Write;

use anyhow::Context;

use crate::config::JsonLinesTarget;
use crate::event::Event;
use crate::evidence::EvidenceNotice;

pub struct JsonLinesSink {
    out: Box<dyn Write + Send>,
    target: String,
}

impl JsonLinesSink {
    pub fn open(target: &JsonLinesTarget) -> anyhow::Result<Self> {
        Ok(match target {
            JsonLinesTarget::Stdout => Self {
                out: Box::new(std::io::stdout()),
                target: "standard output".into(),
            },
            JsonLinesTarget::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| {
                        format!(
                            "cannot open the JSON-lines output {} for appending",
                            path.display()
                        )
                    })?;
                Self {
                    out: Box::new(std::io::LineWriter::new(file)),
                    target: path.display().to_string(),
                }
            }
        })
    }

    pub fn write(&mut self, event: &Event) {
        self.write_line(event, &event.id.to_string());
    }

    pub fn write_notice(&mut self, notice: &EvidenceNotice) {
        self.write_line(notice, &notice.event_id);
    }

    fn write_line(&mut self, value: &impl serde::Serialize, id: &str) {
        let result = serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::other)
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush());
        if let Err(e) = result {
            tracing::error!(event = %id, "cannot write to {}: {e}", self.target);
        }
    }
}
