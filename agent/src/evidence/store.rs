//! The package folder as a whole: which packages it holds, and retention.
//!
//! Retention deletes oldest first, by age and by disk quota. A package
//! that was neither exported by an officer nor acknowledged by the IOC is
//! never deleted for its age, only when the quota leaves no other choice;
//! that forced deletion is logged in the custody log with its reason and
//! reported in the agent's status. A package logged deleted whose folder
//! then cannot be removed is tried again at each look, never logged again,
//! and does not hold up the others.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ed25519_dalek::VerifyingKey;

use super::custody::{self, Action};
use super::keys::GatewayKey;
use super::package::PARTIAL_PREFIX;

#[derive(Debug, Clone)]
pub struct PackageInfo {
    pub id: String,
    pub dir: PathBuf,
    pub bytes: u64,
    pub created: SystemTime,
}

/// What retention needs to know of the evidence folder, kept from one
/// look to the next so that its cost follows what changed, not what the
/// folder holds after months: packages are immutable once sealed, so only
/// new folders are measured, and only the custody log's new lines are read.
#[derive(Debug, Default)]
pub struct Index {
    packages: HashMap<String, PackageInfo>,
    /// Bytes of the custody log read so far (whole lines only), and which
    /// file they were read from (device, inode).
    log_read_to: u64,
    log_file: Option<(u64, u64)>,
    released: HashSet<String>,
    /// Packages logged deleted whose folder is still here: the removal
    /// failed, in this run or an earlier one.
    stuck: HashMap<String, Deletion>,
    /// The gateway's key, when known: only entries it signed release a
    /// package, so a line written into the log by hand cannot get a
    /// package deleted (with a properly signed deletion entry).
    signer: Option<VerifyingKey>,
}

impl Index {
    /// The index retention uses: releases only by entries `key` signed.
    pub fn for_gateway(key: VerifyingKey) -> Self {
        Self {
            signer: Some(key),
            ..Self::default()
        }
    }

    /// The folder as it is now, released only by entries `key` signed:
    /// what `matthan evidence list` shows, so that a line added to the log
    /// by hand does not show a package as exported.
    pub fn read_for_gateway(root: &Path, key: VerifyingKey) -> anyhow::Result<Self> {
        let mut index = Self::for_gateway(key);
        index.refresh(root)?;
        Ok(index)
    }

    /// The folder as it is now (a folder that does not exist yet is
    /// empty), trusting every entry of the log: for its packages only.
    pub fn read(root: &Path) -> anyhow::Result<Self> {
        let mut index = Self::default();
        index.refresh(root)?;
        Ok(index)
    }

    /// Brings the index up to date with the folder: new packages measured,
    /// vanished ones dropped, the custody log's new lines read.
    pub fn refresh(&mut self, root: &Path) -> anyhow::Result<()> {
        self.refresh_packages(root)?;
        self.refresh_released(root)?;
        // Only packages still here can be released: one deleted (by
        // retention, or by hand) leaves the set.
        let packages = &self.packages;
        self.released.retain(|id| packages.contains_key(id));
        // Usually gone by the time its entry is read; one stat per deletion.
        self.stuck.retain(|id, _| root.join(id).exists());
        Ok(())
    }

    /// Every complete package, oldest first.
    pub fn packages(&self) -> Vec<PackageInfo> {
        let mut out: Vec<PackageInfo> = self.packages.values().cloned().collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// Packages here that an officer exported or the IOC acknowledged.
    pub fn released(&self) -> &HashSet<String> {
        &self.released
    }

    /// Packages logged deleted but still here, with their logged deletion.
    pub fn stuck(&self) -> &HashMap<String, Deletion> {
        &self.stuck
    }

    fn refresh_packages(&mut self, root: &Path) -> anyhow::Result<()> {
        let listing = match std::fs::read_dir(root) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.packages.clear();
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", root.display())),
        };
        let mut seen = HashSet::new();
        for entry in listing.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if id.starts_with('.') || id.starts_with(PARTIAL_PREFIX) {
                continue;
            }
            if !self.packages.contains_key(&id) {
                match measure(&entry, &id) {
                    Some(info) => {
                        self.packages.insert(id.clone(), info);
                    }
                    None => continue,
                }
            }
            seen.insert(id);
        }
        self.packages.retain(|id, _| seen.contains(id));
        Ok(())
    }

    fn refresh_released(&mut self, root: &Path) -> anyhow::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let path = root.join(custody::LOG_FILE);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (self.log_read_to, self.released, self.log_file) = (0, HashSet::new(), None);
                self.stuck.clear();
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let identity = {
            use std::os::unix::fs::MetadataExt;
            Some((meta.dev(), meta.ino()))
        };
        if meta.len() < self.log_read_to || identity != self.log_file {
            // The log was replaced or cut (verify reports that): read it afresh.
            (self.log_read_to, self.released) = (0, HashSet::new());
            self.stuck.clear();
            self.log_file = identity;
        }
        let mut new = Vec::new();
        file.seek(SeekFrom::Start(self.log_read_to))
            .and_then(|_| file.read_to_end(&mut new))
            .with_context(|| format!("cannot read {}", path.display()))?;
        // A line still being appended is read next time, whole.
        let whole = new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in new[..whole].split(|b| *b == b'\n') {
            let Ok(entry) = serde_json::from_slice::<custody::Entry>(line) else {
                continue;
            };
            if self.signer.is_some_and(|key| !entry.signed_by(&key)) {
                tracing::warn!(package = %entry.package, "a custody entry not signed by the gateway's key is ignored (the log was edited: run matthan evidence verify)");
                continue;
            }
            match entry.action {
                Action::Exported | Action::Acknowledged => {
                    self.released.insert(entry.package);
                }
                Action::Deleted => {
                    let forced = !self.released.contains(&entry.package);
                    self.stuck.insert(
                        entry.package.clone(),
                        Deletion {
                            id: entry.package,
                            reason: entry.reason,
                            forced,
                        },
                    );
                }
                Action::Created => {}
            }
        }
        self.log_read_to += whole as u64;
        Ok(())
    }
}

/// A sealed package's size and creation time; None for anything else.
fn measure(entry: &std::fs::DirEntry, id: &str) -> Option<PackageInfo> {
    let dir = entry.path();
    if !dir.is_dir() || !dir.join(super::package::MANIFEST).exists() {
        return None;
    }
    let bytes = std::fs::read_dir(&dir)
        .map(|l| {
            l.flatten()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    // Package ids are UUIDv7: they carry their creation time.
    let created = uuid::Uuid::parse_str(id)
        .ok()
        .and_then(|u| u.get_timestamp())
        .map(|ts| {
            let (s, n) = ts.to_unix();
            SystemTime::UNIX_EPOCH + Duration::new(s, n)
        })
        .or_else(|| entry.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Some(PackageInfo {
        id: id.to_string(),
        dir,
        bytes,
        created,
    })
}

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_bytes: u64,
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub id: String,
    pub reason: String,
    /// Deleted although never exported or acknowledged.
    pub forced: bool,
}

/// What retention deletes now; `packages` oldest first. Packages already
/// logged deleted (`stuck`) are not deleted again, but their bytes count:
/// the quota is of the disk, so others go in their place.
pub fn plan(
    packages: &[PackageInfo],
    released: &HashSet<String>,
    stuck: &HashMap<String, Deletion>,
    policy: Retention,
    now: SystemTime,
) -> Vec<Deletion> {
    let mut kept: Vec<&PackageInfo> = Vec::new();
    let mut out = Vec::new();
    for p in packages {
        let age = now.duration_since(p.created).unwrap_or_default();
        if age > policy.max_age && released.contains(&p.id) && !stuck.contains_key(&p.id) {
            out.push(Deletion {
                id: p.id.clone(),
                reason: format!(
                    "older than {} days and already exported or acknowledged",
                    policy.max_age.as_secs_f64() / 86400.0
                ),
                forced: false,
            });
        } else {
            kept.push(p);
        }
    }
    let mut total: u64 = kept.iter().map(|p| p.bytes).sum();
    let quota_mb = policy.max_bytes / (1024 * 1024);
    // Released packages go first, oldest first; then, only if the quota is
    // still exceeded, the oldest of the rest.
    for forced in [false, true] {
        for p in &kept {
            if total <= policy.max_bytes {
                return out;
            }
            if released.contains(&p.id) == forced || stuck.contains_key(&p.id) {
                continue;
            }
            total -= p.bytes;
            out.push(Deletion {
                id: p.id.clone(),
                reason: if forced {
                    format!("disk quota of {quota_mb} MiB full: deleted although never exported or acknowledged")
                } else {
                    format!("disk quota of {quota_mb} MiB full; already exported or acknowledged")
                },
                forced,
            });
        }
    }
    out
}

/// Logs a deletion, before the folder goes: a package that then fails to
/// go is reported by `verify` as present though logged deleted, never
/// silently missing. Nothing may be deleted when this fails.
/// Taken under the folder's lock, held until the folder is gone, so
/// `verify` never reads the entry with the folder still there.
pub fn log_deletion(
    lock: &custody::StoreLock,
    key: &GatewayKey,
    d: &Deletion,
) -> anyhow::Result<()> {
    lock.append(key, Action::Deleted, &d.id, None, &d.reason)
        .map(|_| ())
}

/// Removes a package already logged deleted.
pub fn remove(root: &Path, d: &Deletion) -> anyhow::Result<()> {
    let dir = root.join(&d.id);
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot delete {}", dir.display()))?;
    if d.forced {
        tracing::error!(package = %d.id, "evidence deleted before export or acknowledgement: {}", d.reason);
    } else {
        tracing::info!(package = %d.id, "evidence deleted: {}", d.reason);
    }
    Ok(())
}

/// Folders a power cut left half-written: they were never reported, so
/// they go, with a line in the log of the agent.
pub fn remove_partials(root: &Path) {
    let Ok(listing) = std::fs::read_dir(root) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(PARTIAL_PREFIX) {
            tracing::warn!(folder = %entry.path().display(), "removing a package left unfinished by a stop or power cut");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MB: u64 = 1024 * 1024;

    fn pkg(id: &str, age_days: u64, mb: u64, now: SystemTime) -> PackageInfo {
        PackageInfo {
            id: id.into(),
            dir: PathBuf::from(id),
            bytes: mb * MB,
            created: now - Duration::from_secs(age_days * 86400),
        }
    }

    fn ids(d: &[Deletion]) -> Vec<&str> {
        d.iter().map(|d| d.id.as_str()).collect()
    }

    /// A sealed package folder of `bytes` bytes.
    fn sealed(root: &Path, id: &str, bytes: usize) {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(super::super::package::MANIFEST), vec![b'{'; bytes]).unwrap();
    }

    #[test]
    fn only_entries_the_gateway_signed_release_a_package() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let key = GatewayKey::load_or_create(&root.join("keys")).unwrap();
        let id = "01900000-0000-7000-8000-00000000000a";
        sealed(root, id, 100);
        custody::append(root, &key, Action::Created, id, None, "sealed").unwrap();
        // An acknowledgement written into the log by hand, unsigned.
        let forged = custody::Entry {
            seq: 2,
            time: "2026-11-28T00:00:00Z".into(),
            action: Action::Acknowledged,
            package: id.into(),
            manifest_sha256: None,
            reason: "ack".into(),
            prev: String::new(),
            sig: None,
        };
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join(custody::LOG_FILE))
            .unwrap();
        writeln!(log, "{}", serde_json::to_string(&forged).unwrap()).unwrap();
        let mut retention = Index::for_gateway(key.public());
        retention.refresh(root).unwrap();
        assert!(
            retention.released().is_empty(),
            "the forged line released it"
        );
        // Nor does it in the listing, which an unchecked index would show.
        assert!(Index::read(root).unwrap().released().contains(id));
        let listing = Index::read_for_gateway(root, key.public()).unwrap();
        assert!(
            listing.released().is_empty(),
            "listed as exported on a forged line"
        );
    }

    #[test]
    fn index_follows_the_folder_and_reads_only_new_log_lines() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let key = GatewayKey::load_or_create(&root.join("keys")).unwrap();
        let (a, b) = (
            "01900000-0000-7000-8000-00000000000a",
            "01900000-0000-7000-8000-00000000000b",
        );
        let mut index = Index::read(root).unwrap();
        assert!(index.packages().is_empty() && index.released().is_empty());

        sealed(root, a, 100);
        std::fs::create_dir_all(root.join(format!("{PARTIAL_PREFIX}{b}"))).unwrap();
        custody::append(root, &key, Action::Created, a, None, "sealed").unwrap();
        custody::append(root, &key, Action::Exported, a, None, "export").unwrap();
        index.refresh(root).unwrap();
        assert_eq!(
            index.packages().len(),
            1,
            "a half-written folder is not a package"
        );
        assert_eq!(index.packages()[0].bytes, 100);
        assert!(index.released().contains(a));
        let read = index.log_read_to;

        // A line still being written is left for the next look.
        let log = root.join(custody::LOG_FILE);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut f, br#"{"seq":3,"time":"#).unwrap();
        index.refresh(root).unwrap();
        assert_eq!(index.log_read_to, read);

        // The torn line is closed by the next append; the acknowledgement counts.
        sealed(root, b, 50);
        custody::append(root, &key, Action::Acknowledged, b, None, "ack").unwrap();
        index.refresh(root).unwrap();
        assert!(index.released().contains(b));
        assert_eq!(index.packages().len(), 2);

        let d = Deletion {
            id: a.into(),
            reason: "test".into(),
            forced: false,
        };
        log_deletion(&custody::StoreLock::exclusive(root).unwrap(), &key, &d).unwrap();
        remove(root, &d).unwrap();
        index.refresh(root).unwrap();
        assert_eq!(
            index
                .packages()
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            vec![b]
        );
        assert!(
            !index.released().contains(a),
            "a deleted package is not released any more"
        );
        // Same answer as reading everything from scratch.
        let fresh = Index::read(root).unwrap();
        assert_eq!(fresh.released(), index.released());

        // A log cut shorter than what was read is read again from the start.
        std::fs::write(&log, b"").unwrap();
        index.refresh(root).unwrap();
        assert!(index.released().is_empty());
    }

    #[test]
    fn old_packages_go_only_once_released() {
        let now = SystemTime::now();
        let p = [
            pkg("a", 100, 1, now),
            pkg("b", 95, 1, now),
            pkg("c", 1, 1, now),
        ];
        let released: HashSet<String> = ["b".to_string()].into();
        let policy = Retention {
            max_bytes: 100 * MB,
            max_age: Duration::from_secs(90 * 86400),
        };
        let d = plan(&p, &released, &HashMap::new(), policy, now);
        assert_eq!(ids(&d), ["b"]);
        assert!(!d[0].forced);
    }

    #[test]
    fn the_quota_takes_released_packages_first_then_the_oldest() {
        let now = SystemTime::now();
        let p = [
            pkg("a", 5, 4, now),
            pkg("b", 4, 4, now),
            pkg("c", 3, 4, now),
            pkg("d", 2, 4, now),
        ];
        let released: HashSet<String> = ["c".to_string()].into();
        let policy = Retention {
            max_bytes: 8 * MB,
            max_age: Duration::from_secs(90 * 86400),
        };
        let d = plan(&p, &released, &HashMap::new(), policy, now);
        assert_eq!(ids(&d), ["c", "a"]);
        assert_eq!(
            d.iter().map(|d| d.forced).collect::<Vec<_>>(),
            [false, true]
        );
        assert!(d[1].reason.contains("never exported"));
    }

    #[test]
    fn a_package_logged_deleted_is_not_deleted_again_and_others_go_instead() {
        let now = SystemTime::now();
        let p = [
            pkg("a", 5, 4, now),
            pkg("b", 4, 4, now),
            pkg("c", 3, 4, now),
        ];
        let stuck = HashMap::from([(
            "a".to_string(),
            Deletion {
                id: "a".into(),
                reason: "quota".into(),
                forced: true,
            },
        )]);
        let policy = Retention {
            max_bytes: 8 * MB,
            max_age: Duration::from_secs(90 * 86400),
        };
        let d = plan(&p, &HashSet::new(), &stuck, policy, now);
        assert_eq!(ids(&d), ["b"], "a still takes its 4 MiB");
    }

    #[test]
    fn under_quota_nothing_young_goes() {
        let now = SystemTime::now();
        let p = [pkg("a", 5, 4, now)];
        let policy = Retention {
            max_bytes: 8 * MB,
            max_age: Duration::from_secs(90 * 86400),
        };
        assert!(plan(&p, &HashSet::new(), &HashMap::new(), policy, now).is_empty());
    }
}
