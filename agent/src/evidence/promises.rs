//! Packages promised but not yet announced, kept on disk so that a crash or
//! a power cut cannot leave the IOC waiting for a notice that never comes.
//!
//! A plate event goes out at once, naming its package; the package is
//! sealed seconds later, once the clip's video after the frame has
//! arrived. The promise is on disk before the event is: the publisher
//! records it before it stores the event in the outbox (the evidence
//! thread records it too when it takes the request, and marks it taken),
//! and settles it only once the package's notice is stored in turn. At
//! start, each promise left behind says what became of its package: sealed
//! but never announced (it is announced now, and logged in the custody log
//! if the stop came before that), never sealed, or never even taken by the
//! evidence thread (both reported failed).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::package::{self, FileEntry};
use crate::durable;

pub const DIR: &str = ".pending";

#[derive(Serialize, Deserialize)]
struct Promise {
    camera: String,
}

fn path(root: &Path, id: &str) -> PathBuf {
    root.join(DIR).join(format!("{id}.json"))
}

/// Beside the promise once the evidence thread has taken the request: a
/// stop after it leaves a package unsealed, before it a request never seen.
fn taken_path(root: &Path, id: &str) -> PathBuf {
    root.join(DIR).join(format!("{id}.taken"))
}

/// Records that the package `id` of `camera` will be announced. The
/// publisher and the evidence thread both record it, in either order: the
/// file is written aside and renamed, so it is whole whoever wins.
pub fn record(root: &Path, id: &str, camera: &str) -> anyhow::Result<()> {
    static ASIDE: AtomicU64 = AtomicU64::new(0);
    let dir = root.join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let promise = Promise {
        camera: camera.to_string(),
    };
    let aside = dir.join(format!(
        "{id}.json.{}.tmp",
        ASIDE.fetch_add(1, Ordering::Relaxed)
    ));
    durable::write_synced(
        &aside,
        &serde_json::to_vec(&promise).expect("promises serialise"),
    )?;
    let done = std::fs::rename(&aside, path(root, id))
        .with_context(|| format!("cannot record the promise in {}", dir.display()));
    if done.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    done?;
    durable::sync_dir(&dir)
}

/// The evidence thread has taken the package's request.
pub fn mark_taken(root: &Path, id: &str) -> anyhow::Result<()> {
    durable::write_synced(&taken_path(root, id), b"")?;
    durable::sync_dir(&root.join(DIR))
}

/// The package `id` has been announced (sealed or failed). The promise
/// goes first: a stop between the two leaves a mark alone, which the next
/// start clears, never a promise that looks untaken.
pub fn settle(root: &Path, id: &str) {
    let _ = std::fs::remove_file(path(root, id));
    let _ = std::fs::remove_file(taken_path(root, id));
}

/// The publisher's side of the promises: recorded before the event naming
/// a package is stored, settled once the package's notice is.
pub struct Promises {
    root: PathBuf,
    /// Recorded by this publisher, notice not yet stored.
    awaiting: HashSet<String>,
    /// Notices stored before their event came through: a package sealed
    /// at once (no clip to wait for) can overtake the camera thread's
    /// event. Its event must not record the promise again, or the next
    /// start would announce the package a second time. The announcements
    /// of a previous run's packages stay here too; they are few.
    settled_first: HashSet<String>,
}

impl Promises {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            awaiting: HashSet::new(),
            settled_first: HashSet::new(),
        }
    }

    /// Before an event naming the package `id` is stored.
    pub fn before_event(&mut self, id: &str, camera: &str) {
        if self.settled_first.remove(id) {
            return;
        }
        if let Err(e) = record(&self.root, id, camera) {
            tracing::error!(event = %id, "cannot record the evidence package as promised, so a stop before its notice would leave the IOC waiting for it: {e:#}; fix evidence.dir");
        }
        self.awaiting.insert(id.to_string());
    }

    /// The package's notice is stored: its promise is kept.
    pub fn notice_stored(&mut self, id: &str) {
        if !self.awaiting.remove(id) {
            self.settled_first.insert(id.to_string());
        }
        settle(&self.root, id);
    }
}

/// A package promised before the agent stopped, and what became of it.
#[derive(Debug, PartialEq)]
pub struct LeftOver {
    pub id: String,
    pub camera: String,
    /// Whether the evidence thread had taken the request.
    pub taken: bool,
    /// Set when the package was sealed on disk.
    pub sealed: Option<SealedPackage>,
}

#[derive(Debug, PartialEq)]
pub struct SealedPackage {
    pub manifest_sha256: String,
    pub files: Vec<FileEntry>,
    pub clip_complete: bool,
}

/// The promises a previous run left, oldest first. Unreadable ones are
/// reported for the camera "" rather than dropped: the IOC still hears of
/// the package. What a stop left half-done (a promise being written, a
/// mark whose promise was settled) is cleared.
pub fn left_over(root: &Path) -> Vec<LeftOver> {
    let Ok(listing) = std::fs::read_dir(root.join(DIR)) else {
        return Vec::new();
    };
    let entries: Vec<_> = listing.flatten().collect();
    let names: HashSet<String> = entries
        .iter()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let mut found: Vec<(std::time::SystemTime, LeftOver)> = Vec::new();
    for entry in &entries {
        let name = entry.file_name().to_string_lossy().to_string();
        let orphan = name.ends_with(".tmp")
            || name
                .strip_suffix(".taken")
                .is_some_and(|id| !names.contains(&format!("{id}.json")));
        if orphan {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let Some(id) = name.strip_suffix(".json").map(str::to_string) else {
            continue;
        };
        let camera = std::fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Promise>(&b).ok())
            .map(|p| p.camera)
            .unwrap_or_default();
        let when = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        let taken = names.contains(&format!("{id}.taken"));
        let sealed = sealed_package(&root.join(&id));
        found.push((
            when,
            LeftOver {
                id,
                camera,
                taken,
                sealed,
            },
        ));
    }
    found.sort_by_key(|(when, _)| *when);
    found.into_iter().map(|(_, l)| l).collect()
}

/// What the notice of a sealed package carries, read back from its manifest.
fn sealed_package(dir: &Path) -> Option<SealedPackage> {
    let bytes = std::fs::read(dir.join(package::MANIFEST)).ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(SealedPackage {
        manifest_sha256: crate::digest::sha256_hex(&bytes),
        files: serde_json::from_value(manifest["files"].clone()).unwrap_or_default(),
        clip_complete: manifest["clip"]["complete"].as_bool().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promise_left_behind_tells_whether_its_package_was_sealed() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        record(root, "e-sealed", "gate").unwrap();
        record(root, "e-lost", "street").unwrap();
        record(root, "e-unseen", "street").unwrap();
        record(root, "e-announced", "gate").unwrap();
        // Taken by the evidence thread: recorded again, and marked.
        for id in ["e-sealed", "e-lost", "e-announced"] {
            record(root, id, "gate").unwrap();
            mark_taken(root, id).unwrap();
        }
        settle(root, "e-announced");
        let sealed = root.join("e-sealed");
        std::fs::create_dir(&sealed).unwrap();
        let manifest = serde_json::json!({
            "clip": {"complete": true},
            "files": [{"name": "frame.jpg", "role": "frame", "sha256": "ab", "bytes": 3}],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        std::fs::write(sealed.join(package::MANIFEST), &bytes).unwrap();

        let mut left = left_over(root);
        left.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            left,
            [
                LeftOver {
                    id: "e-lost".into(),
                    camera: "gate".into(),
                    taken: true,
                    sealed: None
                },
                LeftOver {
                    id: "e-sealed".into(),
                    camera: "gate".into(),
                    taken: true,
                    sealed: Some(SealedPackage {
                        manifest_sha256: crate::digest::sha256_hex(&bytes),
                        files: vec![FileEntry {
                            name: "frame.jpg".into(),
                            role: "frame".into(),
                            sha256: "ab".into(),
                            bytes: 3
                        }],
                        clip_complete: true,
                    })
                },
                LeftOver {
                    id: "e-unseen".into(),
                    camera: "street".into(),
                    taken: false,
                    sealed: None
                },
            ]
        );
        for id in ["e-lost", "e-sealed", "e-unseen"] {
            settle(root, id);
        }
        assert!(left_over(root).is_empty());
        assert_eq!(std::fs::read_dir(root.join(DIR)).unwrap().count(), 0);
    }

    #[test]
    fn a_stop_between_settling_and_unmarking_leaves_nothing_to_announce() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        record(root, "e", "gate").unwrap();
        mark_taken(root, "e").unwrap();
        std::fs::remove_file(path(root, "e")).unwrap();
        std::fs::write(root.join(DIR).join("f.json.3.tmp"), b"{").unwrap();
        assert!(left_over(root).is_empty());
        assert_eq!(std::fs::read_dir(root.join(DIR)).unwrap().count(), 0);
    }

    #[test]
    fn the_publisher_keeps_a_promise_from_before_its_event_until_its_notice() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let mut promises = Promises::new(root.to_path_buf());
        promises.before_event("e", "gate");
        assert!(path(root, "e").is_file(), "no promise before the event");
        // The evidence thread takes the request after the publisher's record.
        record(root, "e", "gate").unwrap();
        mark_taken(root, "e").unwrap();
        promises.notice_stored("e");
        assert!(left_over(root).is_empty());

        // A package sealed at once can have its notice stored first: its
        // event, coming after, must not promise it again.
        record(root, "quick", "gate").unwrap();
        promises.notice_stored("quick");
        promises.before_event("quick", "gate");
        assert!(left_over(root).is_empty(), "{:?}", left_over(root));
        // Only once: a later event id is promised as usual.
        promises.before_event("later", "gate");
        assert_eq!(left_over(root).len(), 1);
    }
}
