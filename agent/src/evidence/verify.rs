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
/// Files an export adds beside the package's own.
pub const EXPORT_FILES: [&str; 2] = ["index.html", "VERIFY.txt"];

#[derive(Debug, Default)]
pub struct Report {
    pub checked: Vec<String>,
    pub problems: Vec<String>,
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
        package(path, trusted, &mut report);
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
fn package(dir: &Path, trusted: Option<&VerifyingKey>, report: &mut Report) -> Option<String> {
    let name = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().to_string(),
    );
    let manifest = match std::fs::read(dir.join(MANIFEST)) {
        Ok(m) => m,
        Err(e) => {
            report
                .problems
                .push(format!("{name}/{MANIFEST}: cannot be read ({e})"));
            return None;
        }
    };
    match signature(dir, &manifest, trusted) {
        Ok(signer) if trusted.is_some() => report.checked.push(format!(
            "{name}/{MANIFEST}: signature valid, by the gateway's key {signer}"
        )),
        Ok(signer) => report.checked.push(format!(
            "{name}/{MANIFEST}: signature valid, by the key the package carries, {signer}: \
             compare it with the fingerprint registered for the gateway, or give --key"
        )),
        Err(e) => report.problems.push(format!("{name}/{MANIFEST}: {e}")),
    }
    let files: Vec<FileEntry> = match serde_json::from_slice::<serde_json::Value>(&manifest)
        .ok()
        .and_then(|v| serde_json::from_value(v.get("files")?.clone()).ok())
    {
        Some(f) => f,
        None => {
            report.problems.push(format!(
                "{name}/{MANIFEST}: not a package manifest (no file list)"
            ));
            return None;
        }
    };
    let mut listed: HashSet<&str> = [MANIFEST, SIGNATURE].into();
    listed.extend(EXPORT_FILES);
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
            if !listed.contains(file.as_str()) {
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
    let present: HashMap<String, Option<String>> = super::store::Index::read(root)?
        .packages()
        .into_iter()
        .map(|p| {
            let sha = package(&p.dir, Some(&key), report);
            (p.id, sha)
        })
        .collect();
    let (entries, problems) = custody::check(root, &key)?;
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
        if !present.contains_key(*id) && !deleted.contains(id) {
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
