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
