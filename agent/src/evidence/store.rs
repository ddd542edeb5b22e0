//! The package folder as a whole: which packages it holds, and retention.
//!
//! Retention deletes oldest first, by age and by disk quota. A package
//! that was neither exported by an officer nor acknowledged by the IOC is
//! never deleted for its age, only when the quota leaves no other choice;
//! that forced deletion is logged in the custody log with its reason and
//! reported in the agent's status.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

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

/// Every complete package, oldest first.
pub fn packages(root: &Path) -> anyhow::Result<Vec<PackageInfo>> {
    let mut out = Vec::new();
    let listing = match std::fs::read_dir(root) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", root.display())),
    };
    for entry in listing.flatten() {
        let dir = entry.path();
        let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if !dir.is_dir() || id.starts_with('.') || !dir.join(super::package::MANIFEST).exists() {
            continue;
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
        let created = uuid::Uuid::parse_str(&id)
            .ok()
            .and_then(|u| u.get_timestamp())
            .map(|ts| {
                let (s, n) = ts.to_unix();
                SystemTime::UNIX_EPOCH + Duration::new(s, n)
            })
            .or_else(|| entry.metadata().and_then(|m| m.modified()).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        out.push(PackageInfo {
            id,
            dir,
            bytes,
            created,
        });
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Packages an officer exported or the IOC acknowledged.
pub fn released(root: &Path) -> anyhow::Result<HashSet<String>> {
    Ok(custody::entries(root)?
        .into_iter()
        .filter(|e| matches!(e.action, Action::Exported | Action::Acknowledged))
        .map(|e| e.package)
        .collect())
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

/// What retention deletes now; `packages` oldest first.
pub fn plan(
    packages: &[PackageInfo],
    released: &HashSet<String>,
    policy: Retention,
    now: SystemTime,
) -> Vec<Deletion> {
    let mut kept: Vec<&PackageInfo> = Vec::new();
    let mut out = Vec::new();
    for p in packages {
        let age = now.duration_since(p.created).unwrap_or_default();
        if age > policy.max_age && released.contains(&p.id) {
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
            if released.contains(&p.id) == forced {
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

/// Logs and deletes. The entry is written first: a package that then
/// fails to go is reported by `verify` as present though logged deleted,
/// never silently missing.
pub fn apply(root: &Path, key: &GatewayKey, deletions: &[Deletion]) -> anyhow::Result<()> {
    for d in deletions {
        custody::append(root, key, Action::Deleted, &d.id, None, &d.reason)?;
        let dir = root.join(&d.id);
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot delete {}", dir.display()))?;
        if d.forced {
            tracing::error!(package = %d.id, "evidence deleted before export or acknowledgement: {}", d.reason);
        } else {
            tracing::info!(package = %d.id, "evidence deleted: {}", d.reason);
        }
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
        let d = plan(&p, &released, policy, now);
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
        let d = plan(&p, &released, policy, now);
        assert_eq!(ids(&d), ["c", "a"]);
        assert_eq!(
            d.iter().map(|d| d.forced).collect::<Vec<_>>(),
            [false, true]
        );
        assert!(d[1].reason.contains("never exported"));
    }

    #[test]
    fn under_quota_nothing_young_goes() {
        let now = SystemTime::now();
        let p = [pkg("a", 5, 4, now)];
        let policy = Retention {
            max_bytes: 8 * MB,
            max_age: Duration::from_secs(90 * 86400),
        };
        assert!(plan(&p, &HashSet::new(), policy, now).is_empty());
    }
}
