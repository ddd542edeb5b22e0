//! Events as JSON lines, one object per line, to standard output or
//! appended to a file: the simplest integration, and what `matthan run`
//! prints for an installer watching a terminal.
//!
//! Each line is written whole or not at all: a reader that takes the file
//! line by line never sees two events run together after a full disk. A
//! file renamed away by log rotation is followed by a new one at the path.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::JsonLinesTarget;
use crate::event::Event;
use crate::evidence::EvidenceNotice;

pub struct JsonLinesSink {
    out: Out,
}

enum Out {
    Stdout,
    File(LinesFile),
}

struct LinesFile {
    path: PathBuf,
    file: File,
    /// (device, inode) of the open file, to notice a rotation.
    identity: (u64, u64),
}

impl LinesFile {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            identity: (meta.dev(), meta.ino()),
        })
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let rotated =
            std::fs::metadata(&self.path).map_or(true, |m| (m.dev(), m.ino()) != self.identity);
        if rotated {
            *self = Self::open(&self.path)?;
        }
        let before = self.file.metadata()?.len();
        self.file.write_all(line).inspect_err(|_| {
            // A part written (disk full) would join the next line: cut it.
            let _ = self.file.set_len(before);
        })
    }
}

impl JsonLinesSink {
    pub fn open(target: &JsonLinesTarget) -> anyhow::Result<Self> {
        let out = match target {
            JsonLinesTarget::Stdout => Out::Stdout,
            JsonLinesTarget::File(path) => Out::File(LinesFile::open(path).with_context(|| {
                format!(
                    "cannot open the JSON-lines output {} for appending",
                    path.display()
                )
            })?),
        };
        Ok(Self { out })
    }

    pub fn write(&mut self, event: &Event) {
        self.write_line(event, &event.id.to_string());
    }

    pub fn write_notice(&mut self, notice: &EvidenceNotice) {
        self.write_line(notice, &notice.event_id);
    }

    fn write_line(&mut self, value: &impl serde::Serialize, id: &str) {
        let line = serde_json::to_vec(value).map(|mut l| {
            l.push(b'\n');
            l
        });
        let result = line
            .map_err(std::io::Error::other)
            .and_then(|line| match &mut self.out {
                Out::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&line).and_then(|()| out.flush())
                }
                Out::File(f) => f.append(&line),
            });
        if let Err(e) = result {
            let target = match &self.out {
                Out::Stdout => "standard output".to_string(),
                Out::File(f) => f.path.display().to_string(),
            };
            tracing::error!(event = %id, "cannot write to {target}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rotated_away_is_followed_by_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut f = LinesFile::open(&path).unwrap();
        f.append(b"{\"n\":1}\n").unwrap();
        std::fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        f.append(b"{\"n\":2}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":2}\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("events.jsonl.1")).unwrap(),
            "{\"n\":1}\n"
        );
    }
}
