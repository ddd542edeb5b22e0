//! Per-camera sequence numbers and event ids.
//!
//! A consumer that sees seq 7 after 5 knows it missed an event, so the
//! numbers must only increase, with no gap, across restarts too: the last
//! number given out is kept in a small file per camera, written and synced
//! before the event leaves the camera thread (one tiny write per event,
//! which events, one per vehicle pass, can afford).
//!
//! Two files, written in turn (odd numbers to one, even to the other): a
//! card that spoils one leaves the other, one number behind at most, and
//! the numbers go on after it with a gap of one at most, never a repeat.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;

#[derive(Debug, Default)]
pub struct Sequencer {
    last: Mutex<u64>,
    file: Option<PathBuf>,
}

impl Sequencer {
    /// Numbers kept in memory only, after `last` (the highest known to
    /// have been given out, when the file that keeps it cannot be read).
    pub fn in_memory_after(last: u64) -> Self {
        Self {
            last: Mutex::new(last),
            file: None,
        }
    }

    /// Resumes from the number stored in `file`, if any, or from
    /// `given_out`, the highest this camera's events still waiting to be
    /// delivered carry, when that is higher: a run whose storage had
    /// turned read-only numbered its events on without storing the number.
    pub fn persistent(file: PathBuf, given_out: u64) -> anyhow::Result<Self> {
        let stored = match (read_number(&file), read_number(&other_copy(&file))) {
            (Ok(a), Ok(b)) => a.max(b),
            // The spoilt copy held the last number or the one before it.
            (Ok(n), Err(e)) | (Err(e), Ok(n)) => {
                tracing::error!(
                    "{e:#}; numbering goes on from the other copy, skipping one number at most"
                );
                n + 1
            }
            (Err(e), Err(_)) => return Err(e.context("and so does its other copy (.b)")),
        };
        // A folder that cannot be made shows at the first number stored, in
        // the log; the numbers still go on from the last one known.
        if let Some(dir) = file.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::error!("cannot create {}: {e}", dir.display());
        }
        Ok(Self {
            last: Mutex::new(stored.max(given_out)),
            file: Some(file),
        })
    }

    pub fn next(&self) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last += 1;
        if let Some(file) = &self.file
            && let Err(e) = write_synced(&copy_for(file, *last), *last)
        {
            // The number is still unique in this run; only a restart could repeat it.
            tracing::error!(
                "cannot store the sequence number in {}: {e:#}",
                file.display()
            );
        }
        *last
    }
}

/// The number a copy holds; 0 when there is none yet.
fn read_number(file: &std::path::Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(file) {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold a sequence number", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

fn other_copy(file: &std::path::Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".b");
    PathBuf::from(name)
}

/// Odd numbers go to the first copy, even ones to the other.
fn copy_for(file: &std::path::Path, n: u64) -> PathBuf {
    if n % 2 == 1 {
        file.to_path_buf()
    } else {
        other_copy(file)
    }
}

fn write_synced(file: &std::path::Path, n: u64) -> anyhow::Result<()> {
    let tmp = file.with_extension("tmp");
    crate::durable::write_synced(&tmp, format!("{n}\n").as_bytes())?;
    std::fs::rename(&tmp, file)?;
    // The rename too must be on disk: lost in a power cut, it would bring
    // back the number before, and two events would share it.
    if let Some(dir) = file.parent() {
        crate::durable::sync_dir(dir)?;
    }
    Ok(())
}

pub fn new_event_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_starts_at_one_without_gaps() {
        let s = Sequencer::in_memory_after(0);
        assert_eq!((s.next(), s.next(), s.next()), (1, 2, 3));
    }

    #[test]
    fn sequence_continues_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seq/cam-1");
        let s = Sequencer::persistent(file.clone(), 0).unwrap();
        assert_eq!((s.next(), s.next()), (1, 2));
        drop(s);
        let s = Sequencer::persistent(file.clone(), 0).unwrap();
        assert_eq!(s.next(), 3);
    }

    #[test]
    fn a_spoilt_copy_costs_one_number_at_most_never_a_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seq/cam-1");
        let s = Sequencer::persistent(file.clone(), 0).unwrap();
        assert_eq!((s.next(), s.next(), s.next()), (1, 2, 3));
        drop(s);
        // The copy with the last number (3) spoilt: 4 comes next.
        std::fs::write(&file, "gar\0bage").unwrap();
        let s = Sequencer::persistent(file.clone(), 0).unwrap();
        assert_eq!((s.next(), s.next()), (4, 5));
        drop(s);
        // The copy with the one before (4) spoilt: 7, skipping 6.
        std::fs::write(other_copy(&file), "").unwrap();
        assert_eq!(Sequencer::persistent(file.clone(), 0).unwrap().next(), 7);
        // Both: no number can be trusted; the caller is told.
        std::fs::write(&file, "x").unwrap();
        std::fs::write(other_copy(&file), "y").unwrap();
        let e = Sequencer::persistent(file, 0).err().unwrap();
        assert!(format!("{e:#}").contains("other copy"), "{e:#}");
    }

    #[test]
    fn numbers_given_out_but_not_stored_are_not_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seq/cam-1");
        let s = Sequencer::persistent(file.clone(), 0).unwrap();
        assert_eq!(s.next(), 1);
        drop(s);
        // Events 2 to 7 waited in a temporary outbox while storage was read-only.
        let s = Sequencer::persistent(file.clone(), 7).unwrap();
        assert_eq!(s.next(), 8);
        drop(s);
        let s = Sequencer::persistent(file, 3).unwrap();
        assert_eq!(s.next(), 9);
        assert_eq!(Sequencer::in_memory_after(7).next(), 8);
    }

    #[test]
    fn ids_are_time_ordered_v7() {
        let a = new_event_id();
        let b = new_event_id();
        assert_eq!(a.get_version_num(), 7);
        assert!(a < b);
    }
}
