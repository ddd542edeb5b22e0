//! Events as JSON lines, one object per line, to standard output or
//! appended to a file: the simplest integration, and what `matthan run`
//! prints for an installer watching a terminal.
//!
//! Each line is written whole or not at all: a reader that takes the file
//! line by line never sees two events run together after a full disk. A
//! file renamed away by log rotation is followed by a new one at the path.
//!
//! Lines are written on a thread of their own, behind a bounded queue: a
//! terminal paused with Ctrl-S, a pipe nobody reads or a slow disk then
//! costs lines of this output (counted and logged), never the MQTT
//! delivery and outbox that the publisher feeds beside it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use anyhow::Context;

use crate::config::JsonLinesTarget;
use crate::event::Event;
use crate::evidence::EvidenceNotice;

/// Lines waiting for a slow output before new ones are dropped.
const LINES_QUEUED: usize = 4096;
/// How long [`JsonLinesSink::close`] waits for the queued lines to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub struct JsonLinesSink {
    lines: SyncSender<(Vec<u8>, String)>,
    /// Told when the writer has written every line and ended.
    written: Receiver<()>,
    target: String,
    /// Lines dropped in the current run of a full queue, and in all.
    dropping: u64,
    dropped: u64,
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
        // As storage.dir and evidence.dir are: `check` passes a path whose
        // folder it could make.
        if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)?;
        }
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

impl Out {
    fn name(&self) -> String {
        match self {
            Out::Stdout => "standard output".to_string(),
            Out::File(f) => f.path.display().to_string(),
        }
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line).and_then(|()| out.flush())
            }
            Out::File(f) => f.append(line),
        }
    }
}

impl JsonLinesSink {
    /// Opens the output (an error names it) and starts its writer thread.
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
        Self::start(out)
    }

    fn start(mut out: Out) -> anyhow::Result<Self> {
        let target = out.name();
        let (lines, queued) = std::sync::mpsc::sync_channel::<(Vec<u8>, String)>(LINES_QUEUED);
        let (done, written) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("matthan-jsonl".into())
            .spawn(move || {
                for (line, id) in queued {
                    if let Err(e) = out.write(&line) {
                        tracing::error!(event = %id, "cannot write to {}: {e}", out.name());
                    }
                }
                let _ = done.send(());
            })
            .context("cannot start the JSON-lines writer")?;
        Ok(Self {
            lines,
            written,
            target,
            dropping: 0,
            dropped: 0,
        })
    }

    /// Lines dropped because the output did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Waits a little for the queued lines to be written; an output that
    /// takes none (a pipe nobody reads) does not hold up the stop.
    pub fn close(self) {
        let Self {
            lines,
            written,
            target,
            dropped,
            ..
        } = self;
        drop(lines);
        if written.recv_timeout(CLOSE_WAIT).is_err() {
            tracing::warn!(
                "{target} took nothing for {CLOSE_WAIT:?}: the lines still queued for it are not written (MQTT and the outbox have every event)"
            );
        }
        if dropped > 0 {
            tracing::warn!(
                "{dropped} lines were not written to {target}, which did not keep up; MQTT and the outbox have every event"
            );
        }
    }

    pub fn write(&mut self, event: &Event) {
        self.write_line(event, &event.id.to_string());
    }

    pub fn write_notice(&mut self, notice: &EvidenceNotice) {
        self.write_line(notice, &notice.event_id);
    }

    fn write_line(&mut self, value: &impl serde::Serialize, id: &str) {
        let mut line = match serde_json::to_vec(value) {
            Ok(line) => line,
            Err(e) => {
                return tracing::error!(event = %id, "cannot serialise for {}: {e}", self.target);
            }
        };
        line.push(b'\n');
        match self.lines.try_send((line, id.to_string())) {
            Ok(()) if self.dropping > 0 => {
                tracing::warn!(
                    "{} keeps up again; {} lines were dropped",
                    self.target,
                    self.dropping
                );
                self.dropping = 0;
            }
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropping == 0 {
                    tracing::warn!(event = %id, "{} is not keeping up ({LINES_QUEUED} lines waiting): its lines are dropped until it does; MQTT and the outbox are not held up", self.target);
                }
                self.dropping += 1;
                self.dropped += 1;
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!(event = %id, "the writer of {} has stopped", self.target)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_nobody_reads_drops_lines_but_never_holds_up_the_publisher() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A reader that never reads: the pipe fills, then writes block.
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let target = JsonLinesTarget::File(path.clone());
        let (finished, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sink = JsonLinesSink::open(&target).unwrap();
            let padding = "x".repeat(200);
            for n in 0..3 * LINES_QUEUED {
                sink.write_line(&serde_json::json!({ "n": n, "padding": padding }), "id");
            }
            let dropped = sink.dropped();
            sink.close();
            finished.send(dropped).unwrap();
        });
        let dropped = wait
            .recv_timeout(CLOSE_WAIT + Duration::from_secs(20))
            .expect("writing lines blocked on the output");
        assert!(dropped > 0, "the queue is bounded");
    }

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
