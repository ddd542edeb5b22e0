//! Writes that survive a power cut once they return: what the agent has
//! reported stored (evidence, pending packages, outbox segments) must be.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Syncs a folder, so that the names of the files made in it are on disk.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the folder {}", dir.display()))
}

/// Writes `bytes` as the whole of `path` and syncs the file.
pub fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Copies `from` to `to` and syncs the copy.
pub fn copy_synced(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .and_then(|_| std::fs::File::open(to)?.sync_all())
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

/// Replaces `path` whole: written aside and synced, renamed over it, and
/// the folder synced, so a power cut leaves the old file or the new one,
/// never a torn or empty one.
pub fn replace_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let aside = path.with_file_name(name);
    write_synced(&aside, bytes)?;
    rename_synced(&aside, path)
}

/// Renames `from` to `to` and syncs the folder, so the new name is on disk.
pub fn rename_synced(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
    let folder = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(folder)
}
