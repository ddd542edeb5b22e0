//! `matthan evidence verify`: checks one package, or a whole evidence
//! folder with its custody log, and says exactly what was changed.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, bail};
use ed25519_dalek::VerifyingKey;

use super::custody::{self, Action};
use super::keys::{self, fingerprint};
use super::package::{FileEntry, MANIFEST, SIGNATURE, SignatureFile};
use crate::digest::{sha256_file, sha256_hex};

/// The public key file kept in the evidence folder itself, so a copied
/// folder can be checked anywhere (its fingerprint still has to match
/// the one registered for the gateway).
pub const STORE_KEY_FILE: &str = "gateway.ed25519.pub";
/// Files an export adds beside the package's own: the page an officer
/// reads, the instructions, and the export's signature over both (the
/// manifest's signature cannot cover what is written after sealing).
pub const EXPORT_PAGES: [&str; 2] = ["index.html", "VERIFY.txt"];
pub const EXPORT_SIGNATURE: &str = "export.sig.json";

/// What the export signs: the package it shows and its pages as written.
pub fn export_message(package: &str, pages: &[(&str, String)]) -> Vec<u8> {
    let mut m = format!("matthan export of package {package}\n");
    for (name, sha) in pages {
        m.push_str(&format!("{name} {sha}\n"));
    }
    m.into_bytes()
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ExportSignature {
    pub package: String,
    pub public_key: String,
    pub key_fingerprint: String,
    pub signature: String,
}

/// Whose key signatures are checked against, and so what a valid one proves.
#[derive(Clone, Copy)]
enum Trust<'a> {
    /// Given by the verifier (`--key`): the gateway's.
    Given(&'a VerifyingKey),
    /// The evidence folder's own copy: proves only that the folder is
    /// consistent, unless its fingerprint is the gateway's registered one.
    Folder(&'a VerifyingKey),
    /// Each package's own: the same, for one package.
    Carried,
}

impl Trust<'_> {
    fn key(&self) -> Option<&VerifyingKey> {
        match self {
            Trust::Given(k) | Trust::Folder(k) => Some(k),
            Trust::Carried => None,
        }
    }

    fn signed_by(&self, signer: &str) -> String {
        match self {
            Trust::Given(_) => format!("by the gateway's key {signer}"),
            Trust::Folder(_) => format!(
                "by the key in the folder's {STORE_KEY_FILE}, {signer}: compare it with the \
                 fingerprint registered for the gateway, or give --key"
            ),
            Trust::Carried => format!(
                "by the key the package carries, {signer}: compare it with the fingerprint \
                 registered for the gateway, or give --key"
            ),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub checked: Vec<String>,
    pub problems: Vec<String>,
    /// Worth a look, but no change to the evidence.
    pub warnings: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn print(&self) -> String {
        let mut out = String::new();
        for c in &self.checked {
            out.push_str(&format!("ok      {c}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning {w}\n"));
        }
        for p in &self.problems {
            out.push_str(&format!("CHANGED {p}\n"));
        }
        out.push_str(&if self.passed() {
            "verified: nothing was changed\n".to_string()
        } else {
            format!("FAILED: {} problem(s)\n", self.problems.len())
        });
        out
    }
}

/// Verifies a package folder or an evidence folder; `trusted` is the
/// gateway's public key when the verifier has it.
pub fn verify(path: &Path, trusted: Option<&VerifyingKey>) -> anyhow::Result<Report> {
    let mut report = Report::default();
    if path.join(MANIFEST).is_file() {
        let trust = trusted.map_or(Trust::Carried, Trust::Given);
        package(path, trust, &mut report);
    } else if path.is_dir() {
        store(path, trusted, &mut report)?;
    } else {
        bail!(
            "{} is neither an evidence package (no {MANIFEST}) nor an evidence folder",
            path.display()
        );
    }
    Ok(report)
}

/// Checks one package; returns the sha256 of its manifest.
fn package(dir: &Path, trust: Trust, report: &mut Report) -> Option<String> {
    let name = folder_name(dir);
    let manifest = match std::fs::read(dir.join(MANIFEST)) {
        Ok(m) => m,
        Err(e) => {
            report
                .problems
                .push(format!("{name}/{MANIFEST}: cannot be read ({e})"));
            return None;
        }
    };
    let signer = match signature(dir, &manifest, trust.key()) {
        Ok(signer) => {
            report.checked.push(format!(
                "{name}/{MANIFEST}: signature valid, {}",
                trust.signed_by(&signer)
            ));
            Some(signer)
        }
        Err(e) => {
            report.problems.push(format!("{name}/{MANIFEST}: {e}"));
            None
        }
    };
    let parsed = serde_json::from_slice::<serde_json::Value>(&manifest).ok();
    let (Some(files), Some(id)) = (
        parsed
            .as_ref()
            .and_then(|v| serde_json::from_value::<Vec<FileEntry>>(v.get("files")?.clone()).ok()),
        parsed.as_ref().and_then(|v| v["package"].as_str()),
    ) else {
        report.problems.push(format!(
            "{name}/{MANIFEST}: not a package manifest (no file list or package id)"
        ));
        return None;
    };
    report
        .checked
        .push(format!("{name}: holds package {id} (its manifest says so)"));
    let mut listed: HashSet<&str> = [MANIFEST, SIGNATURE].into();
    // An exported copy may carry any folder name, and says which package
    // it shows under its own signature; a stored package is its folder.
    if dir.join(EXPORT_SIGNATURE).exists() {
        listed.extend(EXPORT_PAGES);
        listed.insert(EXPORT_SIGNATURE);
        match export_signature(dir, id, trust.key(), signer.as_deref()) {
            Ok(()) => report.checked.push(format!(
                "{name}: the export's pages ({}) are as signed at export",
                EXPORT_PAGES.join(", ")
            )),
            Err(e) => report
                .problems
                .push(format!("{name}/{EXPORT_SIGNATURE}: {e}")),
        }
    } else if id != name {
        report.problems.push(format!(
            "{name}: holds the package of event {id} (its manifest says so): packages were swapped or renamed"
        ));
    }
    let mut good = 0;
    for f in &files {
        listed.insert(&f.name);
        match sha256_file(&dir.join(&f.name)) {
            Err(_) => report.problems.push(format!(
                "{name}/{}: missing (the manifest lists it)",
                f.name
            )),
            Ok((sha, bytes)) if sha != f.sha256 => report.problems.push(format!(
                "{name}/{}: changed (sha256 {}…, {bytes} bytes; the manifest says {}…, {} bytes)",
                f.name,
                &sha[..16],
                f.sha256.get(..16).unwrap_or(&f.sha256),
                f.bytes
            )),
            Ok(_) => good += 1,
        }
    }
    if let Ok(listing) = std::fs::read_dir(dir) {
        for entry in listing.flatten() {
            let file = entry.file_name().to_string_lossy().to_string();
            if listed.contains(file.as_str()) {
                continue;
            }
            if desktop_metadata(&file) {
                report.warnings.push(format!(
                    "{name}/{file}: not in the manifest; a file the computer's desktop adds \
                     to folders it shows, not part of the evidence"
                ));
            } else {
                report.problems.push(format!(
                    "{name}/{file}: not in the manifest (added after sealing)"
                ));
            }
        }
    }
    report.checked.push(format!(
        "{name}: {good} of {} files match the manifest",
        files.len()
    ));
    Some(sha256_hex(&manifest))
}

/// Files macOS Finder and Windows Explorer write into a folder they show:
/// an exported folder opened on an officer's computer gets them, and
/// they change nothing the manifest lists.
fn desktop_metadata(file: &str) -> bool {
    file == ".DS_Store"
        || file.starts_with("._")
        || file.eq_ignore_ascii_case("Thumbs.db")
        || file.eq_ignore_ascii_case("desktop.ini")
}

/// The folder's own name, which a stored package must share with its
/// manifest: `.` or `pkg/..` have none until made absolute.
fn folder_name(dir: &Path) -> String {
    let full = dir
        .canonicalize()
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    full.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().to_string(),
    )
}

/// Checks an export's signature over its pages and the package it shows:
/// by the trusted key, else by the key that signed the manifest.
fn export_signature(
    dir: &Path,
    id: &str,
    trusted: Option<&VerifyingKey>,
    manifest_signer: Option<&str>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(dir.join(EXPORT_SIGNATURE))
        .map_err(|e| anyhow!("cannot be read ({e})"))?;
    let sig: ExportSignature =
        serde_json::from_str(&text).map_err(|e| anyhow!("is damaged ({e})"))?;
    if sig.package != id {
        bail!(
            "the export was made for package {}, but the manifest here is event {id}'s",
            sig.package
        );
    }
    let key = keys::parse_public(&sig.public_key)
        .map_err(|e| anyhow!("the public key is damaged ({e})"))?;
    let expected = match trusted {
        Some(t) => Some(fingerprint(t)),
        None => manifest_signer.map(str::to_string),
    };
    if expected.as_deref() != Some(fingerprint(&key).as_str()) {
        bail!(
            "signed by key {}, not by the key that signed the package",
            fingerprint(&key)
        );
    }
    let mut pages = Vec::new();
    for page in EXPORT_PAGES {
        let (sha, _) = sha256_file(&dir.join(page))
            .map_err(|_| anyhow!("{page} is missing (the export signed it)"))?;
        pages.push((page, sha));
    }
    keys::verify(&key, &export_message(id, &pages), &sig.signature).map_err(|_| {
        anyhow!(
            "the signature does not match: {} was changed after export",
            EXPORT_PAGES.join(" or ")
        )
    })
}

/// Checks the signature; returns the signer's fingerprint.
fn signature(
    dir: &Path,
    manifest: &[u8],
    trusted: Option<&VerifyingKey>,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(dir.join(SIGNATURE))
        .map_err(|e| anyhow!("{SIGNATURE} cannot be read ({e}): the package is unsigned"))?;
    let sig: SignatureFile =
        serde_json::from_str(&text).map_err(|e| anyhow!("{SIGNATURE} is damaged ({e})"))?;
    let key = keys::parse_public(&sig.public_key)
        .map_err(|e| anyhow!("{SIGNATURE}: the public key is damaged ({e})"))?;
    if let Some(t) = trusted
        && t != &key
    {
        bail!(
            "signed by key {}, not by the gateway's key {}",
            fingerprint(&key),
            fingerprint(t)
        );
    }
    keys::verify(&key, manifest, &sig.signature).map_err(|_| {
        anyhow!("the signature does not match: the manifest was changed after signing")
    })?;
    Ok(fingerprint(&key))
}

fn store(root: &Path, trusted: Option<&VerifyingKey>, report: &mut Report) -> anyhow::Result<()> {
    let key = match trusted {
        Some(k) => *k,
        None => {
            let path = root.join(STORE_KEY_FILE);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow!(
                    "cannot read {} ({e}); give the gateway's public key with --key",
                    path.display()
                )
            })?;
            keys::parse_public(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
    };
    let trust = match trusted {
        Some(_) => Trust::Given(&key),
        None => Trust::Folder(&key),
    };
    // The packages, the log and its head as of one moment: read while the
    // agent seals or deletes, they would disagree without any tampering.
    // Only that moment is locked: hashing a large store under the lock
    // would hold up sealing on the gateway (clips cut short, requests
    // refused) for as long as it takes.
    let (packages, log) = {
        let _lock = custody::StoreLock::shared(root);
        (
            super::store::Index::read(root)?.packages(),
            custody::snapshot(root)?,
        )
    };
    let (entries, problems) = custody::check_snapshot(&log, &key);
    let mut present: HashMap<String, Option<String>> = HashMap::new();
    let merge = |report: &mut Report, mut own: Report| {
        report.checked.append(&mut own.checked);
        report.problems.append(&mut own.problems);
        report.warnings.append(&mut own.warnings);
    };
    let mut damaged = Vec::new();
    for p in packages {
        let mut own = Report::default();
        let sha = package(&p.dir, trust, &mut own);
        if !own.passed() {
            damaged.push((p.id, sha, own));
            continue;
        }
        merge(report, own);
        present.insert(p.id, sha);
    }
    // Retention may delete a package after that moment: its deletion is
    // logged before its files start to go, so one found damaged whose
    // deletion the log has recorded since was being deleted: no finding.
    // Only lines added since count: a package whose removal got stuck,
    // logged deleted before, must still show as present and changed.
    let mut gone_since: HashSet<String> = HashSet::new();
    if !damaged.is_empty() {
        let now = {
            let _lock = custody::StoreLock::shared(root);
            custody::snapshot(root)
        };
        gone_since = now
            .map(|now| now.deleted_after(log.lines(), &key))
            .unwrap_or_default();
    }
    for (id, sha, own) in damaged {
        if gone_since.contains(&id) {
            report
                .warnings
                .push(format!("{id}: deleted by retention while the check ran"));
        } else {
            merge(report, own);
            present.insert(id, sha);
        }
    }
    for p in &problems {
        report.problems.push(format!(
            "{}, line {}: {}",
            custody::LOG_FILE,
            p.line,
            p.message
        ));
    }
    let mut created: HashMap<&str, Option<&str>> = HashMap::new();
    let mut deleted: HashSet<&str> = HashSet::new();
    for e in &entries {
        match e.action {
            Action::Created => {
                created.insert(&e.package, e.manifest_sha256.as_deref());
            }
            Action::Deleted => {
                deleted.insert(&e.package);
            }
            Action::Exported | Action::Acknowledged => {}
        }
    }
    for (id, sha) in &present {
        match created.get(id.as_str()) {
            None => report.problems.push(format!(
                "{id}: no `created` entry in {} (an entry was removed, or the package was added from elsewhere)",
                custody::LOG_FILE
            )),
            Some(logged) if sha.is_some() && *logged != sha.as_deref() => report.problems.push(format!(
                "{id}: its manifest is not the one logged at creation (replaced after sealing)"
            )),
            Some(_) => {}
        }
        if deleted.contains(id.as_str()) {
            report
                .problems
                .push(format!("{id}: logged as deleted but still present"));
        }
    }
    for id in created.keys() {
        if !present.contains_key(*id) && !deleted.contains(id) && !gone_since.contains(*id) {
            report.problems.push(format!(
                "{id}: missing, and {} does not record its deletion",
                custody::LOG_FILE
            ));
        }
    }
    if problems.is_empty() {
        report.checked.push(format!(
            "{}: {} entries, chain and signatures intact, key {}",
            custody::LOG_FILE,
            entries.len(),
            fingerprint(&key)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::keys::GatewayKey;
    use crate::evidence::package::tests::stored;
    use std::path::PathBuf;

    fn store() -> (tempfile::TempDir, PathBuf, GatewayKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(&dir.path().join("keys")).unwrap();
        let root = dir.path().join("evidence");
        (dir, root, key)
    }

    fn event() -> serde_json::Value {
        serde_json::json!({ "kind": "plate", "plate": { "text": "51G-123.45", "valid": true } })
    }

    #[test]
    fn a_package_given_as_a_relative_path_without_a_name_is_known_by_its_folder() {
        let (_dir, root, key) = store();
        stored(&root, &key, "p0", event());
        let report = verify(&root.join("p0").join("."), Some(&key.public())).unwrap();
        assert!(report.passed(), "{}", report.print());
        // `matthan evidence verify .` run inside the package: its name is
        // the working folder's (changing that here would move every test).
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            folder_name(Path::new(".")),
            here.file_name().unwrap().to_string_lossy()
        );
    }

    #[test]
    fn desktop_metadata_files_are_named_but_do_not_fail_the_check() {
        let (_dir, root, key) = store();
        stored(&root, &key, "p0", event());
        let package = root.join("p0");
        for file in [".DS_Store", "._frame.jpg", "Thumbs.db", "desktop.ini"] {
            std::fs::write(package.join(file), b"x").unwrap();
        }
        let report = verify(&package, Some(&key.public())).unwrap();
        assert!(report.passed(), "{}", report.print());
        assert_eq!(report.warnings.len(), 4, "{}", report.print());
        assert!(report.print().contains("warning p0/.DS_Store"));

        std::fs::write(package.join("notes.txt"), b"x").unwrap();
        let report = verify(&package, Some(&key.public())).unwrap();
        assert!(!report.passed());
        assert!(
            report
                .print()
                .contains("p0/notes.txt: not in the manifest (added after sealing)")
        );
    }

    /// Runs `work` on another thread, as the agent would on the gateway,
    /// and verifies the store over and over until it is done: every look
    /// must pass.
    fn verify_while(root: &Path, key: &GatewayKey, work: impl FnOnce() + Send) {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                work();
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let mut looks = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let report = verify(root, Some(&key.public())).unwrap();
                assert!(report.passed(), "look {looks}:\n{}", report.print());
                looks += 1;
                // A pause between looks, as between two people's checks:
                // back to back, this thread may take the lock again before
                // the waiting worker wakes (flock is not fair).
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
    }

    #[test]
    fn verify_on_a_busy_gateway_finds_no_tampering_that_did_not_happen() {
        let (_dir, root, key) = store();
        stored(&root, &key, "p0", event());
        verify_while(&root, &key, || {
            for _ in 0..300 {
                custody::append(&root, &key, Action::Acknowledged, "p0", None, "ack").unwrap();
            }
        });
    }

    #[test]
    fn a_package_whose_deletion_got_stuck_still_shows_present_and_changed() {
        let (_dir, root, key) = store();
        stored(&root, &key, "p0", event());
        let d = crate::evidence::store::Deletion {
            id: "p0".into(),
            reason: "over quota".into(),
            forced: false,
        };
        crate::evidence::store::log_deletion(
            &custody::StoreLock::exclusive(&root).unwrap(),
            &key,
            &d,
        )
        .unwrap();
        // The removal failed, and someone edited what was left.
        std::fs::write(root.join("p0").join(MANIFEST), b"{}").unwrap();
        let report = verify(&root, Some(&key.public())).unwrap();
        let problems = report.problems.join("\n");
        assert!(
            problems.contains("p0: logged as deleted but still present")
                && problems.contains("p0/manifest.json"),
            "{}",
            report.print()
        );
    }

    #[test]
    fn packages_deleted_by_retention_while_verify_runs_are_no_finding() {
        let (_dir, root, key) = store();
        let ids: Vec<String> = (0..120).map(|i| format!("p{i:03}")).collect();
        for id in &ids {
            stored(&root, &key, id, event());
        }
        // As retention does: the deletion's line, then the folder, under
        // the lock; from the end, to meet the check halfway.
        verify_while(&root, &key, || {
            for id in ids.iter().rev() {
                let d = crate::evidence::store::Deletion {
                    id: id.clone(),
                    reason: "over quota".into(),
                    forced: false,
                };
                let lock = custody::StoreLock::exclusive(&root).unwrap();
                crate::evidence::store::log_deletion(&lock, &key, &d).unwrap();
                crate::evidence::store::remove(&root, &d).unwrap();
            }
        });
    }
}
