//! Packages promised but not yet announced, kept on disk so that a crash or
//! a power cut cannot leave the IOC waiting for a notice that never comes.
//!
//! A plate event goes out at once, naming its package; the package is
//! sealed seconds later, once the clip's video after the frame has
//! arrived. Each accepted request leaves a small file in `.pending/` until
//! its notice has been handed over. At start, each file left behind says
//! what became of its package: sealed but never announced (it is announced
//! now, and logged in the custody log if the stop came before that), or
//! never sealed (it is reported failed).

use std::path::{Path, PathBuf};

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

/// Records that the package `id` of `camera` will be announced.
pub fn record(root: &Path, id: &str, camera: &str) -> anyhow::Result<()> {
    let dir = root.join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let promise = Promise {
        camera: camera.to_string(),
    };
    durable::write_synced(
        &path(root, id),
        &serde_json::to_vec(&promise).expect("promises serialise"),
    )?;
    durable::sync_dir(&dir)
}

/// The package `id` has been announced (sealed or failed).
pub fn settle(root: &Path, id: &str) {
    let _ = std::fs::remove_file(path(root, id));
}

/// A package promised before the agent stopped, and what became of it.
#[derive(Debug, PartialEq)]
pub struct LeftOver {
    pub id: String,
    pub camera: String,
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
/// the package.
pub fn left_over(root: &Path) -> Vec<LeftOver> {
    let Ok(listing) = std::fs::read_dir(root.join(DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, LeftOver)> = listing
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let id = name.strip_suffix(".json")?.to_string();
            let camera = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Promise>(&b).ok())
                .map(|p| p.camera)
                .unwrap_or_default();
            let when = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            let sealed = sealed_package(&root.join(&id));
            Some((when, LeftOver { id, camera, sealed }))
        })
        .collect();
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
        record(root, "e-announced", "gate").unwrap();
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
                    camera: "street".into(),
                    sealed: None
                },
                LeftOver {
                    id: "e-sealed".into(),
                    camera: "gate".into(),
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
            ]
        );
        settle(root, "e-lost");
        settle(root, "e-sealed");
        assert!(left_over(root).is_empty());
    }
}
