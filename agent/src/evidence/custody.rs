//! The custody log: one JSON line for every package created, exported,
//! acknowledged by the IOC or deleted, with the time and the reason.
//!
//! Each line carries the sha256 of the line before it and a signature by
//! the gateway key over itself, so a line changed, removed or inserted
//! breaks the chain at that place, and a forged chain needs the key. The
//! agent and the `matthan evidence` commands may append at the same time,
//! and `verify` may read meanwhile: see [`StoreLock`].

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::keys::GatewayKey;
use crate::digest::sha256_hex;

pub const LOG_FILE: &str = "custody.log";
/// The signed sequence number and hash of the log's last line: a chain
/// alone cannot show that entries were cut from its end.
pub const HEAD_FILE: &str = "custody.head";
/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Exported,
    Acknowledged,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub time: String,
    pub action: Action,
    pub package: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    pub reason: String,
    /// sha256 of the previous line, as written.
    pub prev: String,
    /// Ed25519 signature over this line without `sig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl Entry {
    /// Whether `key` signed this entry as it stands.
    pub fn signed_by(&self, key: &VerifyingKey) -> bool {
        self.sig
            .as_deref()
            .is_some_and(|sig| super::keys::verify(key, &self.signed_bytes(), sig).is_ok())
    }

    /// The sha256 of the entry's line as written: what the next line
    /// chains to, and what an evidence notice gives the IOC to hold.
    pub fn line_sha256(&self) -> String {
        sha256_hex(
            serde_json::to_string(self)
                .expect("entries serialise")
                .as_bytes(),
        )
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Entry {
            sig: None,
            ..self.clone()
        };
        serde_json::to_vec(&unsigned).expect("entries serialise")
    }
}

/// An advisory lock on the evidence folder, released when dropped. Taken
/// exclusively to append a custody line, with the folder change the line
/// records (a package sealed, or deleted); shared by `verify` for its
/// whole read. So appends stay whole and the chain linear, and `verify`
/// never sees a line without its head, nor a package without its line.
pub struct StoreLock {
    _file: std::fs::File,
    dir: PathBuf,
}

impl StoreLock {
    /// The lock is the folder's own (flock on its descriptor): no lock
    /// file to make, so a `verify` run as root before the agent ever
    /// locked cannot leave one the agent's user may not open.
    pub fn exclusive(dir: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(dir)
            .with_context(|| format!("cannot open the evidence folder {}", dir.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock the evidence folder {}", dir.display()))?;
        Ok(Self {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// None where there is no lock to take (no such folder).
    pub fn shared(dir: &Path) -> Option<Self> {
        let file = std::fs::File::open(dir).ok()?;
        file.lock_shared().ok()?;
        Some(Self {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// Appends one entry to the log of the folder this lock holds;
    /// returns it as written.
    pub fn append(
        &self,
        key: &GatewayKey,
        action: Action,
        package: &str,
        manifest_sha256: Option<&str>,
        reason: &str,
    ) -> anyhow::Result<Entry> {
        let dir = &self.dir;
        let path = dir.join(LOG_FILE);
        let new_log = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("cannot open the custody log {}", path.display()))?;
        let (last, terminated) = last_line(&mut file)
            .with_context(|| format!("cannot read the custody log {}", path.display()))?;
        if !terminated {
            // A power cut tore the last line: it stays (verify reports it) and
            // the chain goes on from it, on a line of its own.
            file.write_all(b"\n")
                .with_context(|| format!("cannot append to the custody log {}", path.display()))?;
        }
        let (seq, prev) = match &last {
            Some(line) => {
                let seq = match serde_json::from_slice::<Entry>(line) {
                    Ok(entry) => entry.seq,
                    Err(_) => entries(dir)?.last().map_or(0, |e| e.seq),
                };
                let next = seq.checked_add(1).with_context(|| {
                    format!(
                        "the custody log {} ends at sequence number {seq}, past which none can follow: \
                         it was forged or damaged. Keep it as it is and run `matthan evidence verify`",
                        path.display()
                    )
                })?;
                (next, sha256_hex(line))
            }
            None => (1, GENESIS.to_string()),
        };
        let mut entry = Entry {
            seq,
            time: crate::event::rfc3339(std::time::SystemTime::now()),
            action,
            package: package.to_string(),
            manifest_sha256: manifest_sha256.map(str::to_string),
            reason: reason.to_string(),
            prev,
            sig: None,
        };
        entry.sig = Some(key.sign(&entry.signed_bytes()));
        let mut line = serde_json::to_string(&entry).expect("entries serialise");
        line.push('\n');
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot append to the custody log {}", path.display()))?;
        if new_log {
            // Its name, or the head would name a line of a log not on disk.
            crate::durable::sync_dir(dir)?;
        }
        write_head(dir, key, entry.seq, &sha256_hex(line.trim_end().as_bytes()))?;
        Ok(entry)
    }
}

/// Appends one entry under an exclusive lock; returns it as written.
pub fn append(
    dir: &Path,
    key: &GatewayKey,
    action: Action,
    package: &str,
    manifest_sha256: Option<&str>,
    reason: &str,
) -> anyhow::Result<Entry> {
    StoreLock::exclusive(dir)?.append(key, action, package, manifest_sha256, reason)
}

#[derive(Debug, Serialize, Deserialize)]
struct Head {
    seq: u64,
    last_line_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

impl Head {
    fn signed_by(&self, key: &VerifyingKey) -> bool {
        self.sig
            .as_deref()
            .is_some_and(|s| super::keys::verify(key, &self.signed_bytes(), s).is_ok())
    }

    fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Head {
            sig: None,
            last_line_sha256: self.last_line_sha256.clone(),
            ..*self
        })
        .expect("heads serialise")
    }
}

/// Replaced whole (written aside, then renamed), under the log's lock.
fn write_head(
    dir: &Path,
    key: &GatewayKey,
    seq: u64,
    last_line_sha256: &str,
) -> anyhow::Result<()> {
    let mut head = Head {
        seq,
        last_line_sha256: last_line_sha256.to_string(),
        sig: None,
    };
    head.sig = Some(key.sign(&head.signed_bytes()));
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let path = dir.join(HEAD_FILE);
    std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&serde_json::to_vec(&head).expect("heads serialise"))?;
            f.sync_all()
        })
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    // The folder synced: else a power cut can leave a head several appends
    // behind the synced log, which no start can mend and verify reports as
    // tampering.
    crate::durable::rename_synced(&tmp, &path)
}

/// Brings the signed head up to the log's last line when a stop came
/// between the line's sync and the head's rename (`append` writes them in
/// that order); until then `verify` would report the log's end as
/// changed. Only the line the head itself leads to qualifies: signed by
/// this gateway, numbered one past the head and chaining to the line the
/// head names. Anything else is left for `verify` to report. True when
/// the head was brought up to date.
pub fn mend_head(dir: &Path, key: &GatewayKey) -> anyhow::Result<bool> {
    let path = dir.join(LOG_FILE);
    if !path.exists() {
        return Ok(false);
    }
    let _lock = StoreLock::exclusive(dir)?;
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the custody log {}", path.display()));
        }
    };
    let (Some(line), _) = last_line(&mut file)
        .with_context(|| format!("cannot read the custody log {}", path.display()))?
    else {
        return Ok(false);
    };
    let Ok(entry) = serde_json::from_slice::<Entry>(&line) else {
        return Ok(false);
    };
    let head = match std::fs::read(dir.join(HEAD_FILE)) {
        Ok(text) => match serde_json::from_slice::<Head>(&text) {
            Ok(head) if head.signed_by(&key.public()) => head,
            _ => return Ok(false),
        },
        // The first line's head never written.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Head {
            seq: 0,
            last_line_sha256: GENESIS.to_string(),
            sig: None,
        },
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read {}", dir.join(HEAD_FILE).display()));
        }
    };
    let next = head.seq.checked_add(1) == Some(entry.seq)
        && entry.prev == head.last_line_sha256
        && entry.signed_by(&key.public());
    if next {
        write_head(dir, key, entry.seq, &sha256_hex(&line))?;
    }
    Ok(next)
}

/// Compares the log's end with its signed head.
fn check_head(
    head: Option<&[u8]>,
    key: &VerifyingKey,
    last: Option<(u64, String)>,
    lines: usize,
) -> Option<ChainProblem> {
    let problem = |message: String| {
        Some(ChainProblem {
            line: lines,
            message,
        })
    };
    let text = match head {
        Some(t) => t,
        None if last.is_none() => return None,
        None => {
            return problem(format!(
                "{HEAD_FILE} is missing: the end of the log cannot be checked"
            ));
        }
    };
    let Ok(head) = serde_json::from_slice::<Head>(text) else {
        return problem(format!("{HEAD_FILE} is damaged"));
    };
    if !head.signed_by(key) {
        return problem(format!(
            "{HEAD_FILE}: the signature does not match: it was altered"
        ));
    }
    match last {
        Some((seq, hash)) if seq == head.seq && hash == head.last_line_sha256 => None,
        Some((seq, _)) if seq < head.seq => problem(format!(
            "the log ends at entry {seq} but its signed head says {}: entries were removed from its end",
            head.seq
        )),
        Some((seq, _)) => problem(format!(
            "the log's last entry ({seq}) is not the one its signed head names (entry {})",
            head.seq
        )),
        None => problem(format!(
            "the log is empty but its signed head says {} entries",
            head.seq
        )),
    }
}

/// The last line of the file as bytes, without its newline, and whether
/// the file ends with a newline (false when a write was torn).
fn last_line(file: &mut std::fs::File) -> std::io::Result<(Option<Vec<u8>>, bool)> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut back = 4096u64.min(len);
    loop {
        file.seek(SeekFrom::Start(len - back))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let terminated = tail.last().is_none_or(|b| *b == b'\n');
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        match body.iter().rposition(|b| *b == b'\n') {
            Some(i) => return Ok((Some(body[i + 1..].to_vec()), terminated)),
            None if back == len => {
                return Ok(((!body.is_empty()).then(|| body.to_vec()), terminated));
            }
            None => back = (back * 2).min(len),
        }
    }
}

/// The entries that parse, without checking the chain: what retention
/// needs to know which packages were exported or acknowledged.
pub fn entries(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    Ok(read_lines(dir)?
        .iter()
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

/// The log's lines as bytes, without their newlines: a line torn by a
/// power cut may end inside a character, and must not hide the others.
/// Checks that line `seq` of the log is still the one whose sha256 the
/// IOC was given in an evidence notice. The log and its head are consistent
/// on their own even when an old copy of both was put back; only what left
/// the gateway can show that the log lost lines since. None when it is.
pub fn check_anchor(dir: &Path, seq: u64, line_sha256: &str) -> anyhow::Result<Option<String>> {
    let lines = read_lines(dir)?;
    let found = lines
        .iter()
        .find(|line| serde_json::from_slice::<Entry>(line).is_ok_and(|e| e.seq == seq));
    Ok(match found {
        None => Some(format!(
            "has no line {seq}, which the IOC was told of: the log was cut or replaced by an older copy"
        )),
        Some(line) if sha256_hex(line) != line_sha256 => Some(format!(
            "line {seq} is not the one the IOC was told of (sha256 {}…, expected {}…): the log was replaced",
            &sha256_hex(line)[..12],
            line_sha256.get(..12).unwrap_or(line_sha256)
        )),
        Some(_) => None,
    })
}

fn read_lines(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = read_if_there(&dir.join(LOG_FILE))?.unwrap_or_default();
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    Ok(body.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect())
}

/// One problem the chain check found, with the line it is on.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainProblem {
    pub line: usize,
    pub message: String,
}

/// The log and its head as they were at one moment, in memory, to be
/// checked at leisure: checking every line's signature takes seconds on a
/// months-old store, too long to hold the lock sealing waits on.
pub struct Snapshot {
    lines: Vec<Vec<u8>>,
    head: Option<Vec<u8>>,
}

impl Snapshot {
    /// The number of lines the log had.
    pub fn lines(&self) -> usize {
        self.lines.len()
    }

    /// The packages whose deletion the gateway signed in the lines past
    /// the first `after`: what was deleted since an earlier snapshot. Only
    /// those lines' signatures are checked; the chain was checked before.
    pub fn deleted_after(&self, after: usize, key: &VerifyingKey) -> HashSet<String> {
        self.lines
            .iter()
            .skip(after)
            .filter_map(|line| serde_json::from_slice::<Entry>(line).ok())
            .filter(|e| e.action == Action::Deleted && e.signed_by(key))
            .map(|e| e.package)
            .collect()
    }
}

pub fn snapshot(dir: &Path) -> anyhow::Result<Snapshot> {
    Ok(Snapshot {
        lines: read_lines(dir)?,
        head: read_if_there(&dir.join(HEAD_FILE))?,
    })
}

fn read_if_there(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Reads the log; returns the entries that parse and every break found.
pub fn check(dir: &Path, key: &VerifyingKey) -> anyhow::Result<(Vec<Entry>, Vec<ChainProblem>)> {
    Ok(check_snapshot(&snapshot(dir)?, key))
}

/// As [`check`], on a [`Snapshot`] taken before.
pub fn check_snapshot(snapshot: &Snapshot, key: &VerifyingKey) -> (Vec<Entry>, Vec<ChainProblem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1;
    let mut count = 0;
    for (i, line) in snapshot.lines.iter().enumerate() {
        let n = i + 1;
        let mut problem = |message: String| problems.push(ChainProblem { line: n, message });
        match serde_json::from_slice::<Entry>(line) {
            Err(e) => problem(format!("not a custody entry, or torn by a power cut ({e})")),
            Ok(entry) => {
                if entry.seq != expected_seq {
                    problem(format!(
                        "sequence number {} where {expected_seq} was due: entries were removed or inserted",
                        entry.seq
                    ));
                }
                if entry.prev != prev {
                    problem(format!(
                        "does not chain to the line before it (prev {}…, the line before hashes to {}…): a line before it was changed or removed",
                        entry.prev.get(..12).unwrap_or(&entry.prev),
                        &prev[..12]
                    ));
                }
                if entry.sig.is_none() {
                    problem("has no signature".into());
                } else if !entry.signed_by(key) {
                    problem(format!(
                        "signature does not match: the entry for package {} was altered",
                        entry.package
                    ));
                }
                expected_seq = match entry.seq.checked_add(1) {
                    Some(next) => next,
                    None => {
                        problem(format!(
                            "sequence number {}, past which none can follow: the entry was forged",
                            entry.seq
                        ));
                        // Whatever follows it is out of sequence too.
                        0
                    }
                };
                entries.push(entry);
            }
        }
        prev = sha256_hex(line);
        count = n;
    }
    let last = entries.last().map(|e| (e.seq, prev.clone()));
    if let Some(p) = check_head(snapshot.head.as_deref(), key, last, count) {
        problems.push(p);
    }
    (entries, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: usize) -> (tempfile::TempDir, GatewayKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(&dir.path().join("keys")).unwrap();
        for i in 0..n {
            append(
                dir.path(),
                &key,
                Action::Created,
                &format!("p{i}"),
                Some("ab"),
                "plate event",
            )
            .unwrap();
        }
        (dir, key)
    }

    fn lines(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join(LOG_FILE))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(dir: &Path, lines: &[String]) {
        std::fs::write(dir.join(LOG_FILE), lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn an_untouched_log_chains() {
        let (dir, key) = log_with(5);
        let (entries, problems) = check(dir.path(), &key.public()).unwrap();
        assert_eq!(entries.len(), 5);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(entries[4].seq, 5);
    }

    #[test]
    fn a_removed_entry_breaks_the_chain_where_it_was() {
        let (dir, key) = log_with(5);
        let mut l = lines(dir.path());
        l.remove(2);
        write_lines(dir.path(), &l);
        let (_, problems) = check(dir.path(), &key.public()).unwrap();
        assert!(problems.iter().all(|p| p.line == 3), "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("sequence number 4"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("does not chain"))
        );
    }

    #[test]
    fn an_edited_entry_fails_its_signature_and_the_next_link() {
        let (dir, key) = log_with(3);
        let mut l = lines(dir.path());
        l[1] = l[1].replace("\"p1\"", "\"p9\"");
        write_lines(dir.path(), &l);
        let (_, problems) = check(dir.path(), &key.public()).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.line == 2 && p.message.contains("signature"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.line == 3 && p.message.contains("does not chain"))
        );
    }

    #[test]
    fn a_line_torn_by_a_power_cut_is_reported_and_the_log_goes_on() {
        let (dir, key) = log_with(2);
        let l = lines(dir.path());
        // Cut inside a three-byte character, as a power cut can.
        let mut bytes = l[0].clone().into_bytes();
        bytes.push(b'\n');
        bytes.extend_from_slice(&l[1].as_bytes()[..l[1].len() / 2]);
        bytes.extend_from_slice(&"ắ".as_bytes()[..2]);
        std::fs::write(dir.path().join(LOG_FILE), bytes).unwrap();
        append(
            dir.path(),
            &key,
            Action::Created,
            "p9",
            None,
            "after the cut",
        )
        .unwrap();
        let (entries, problems) = check(dir.path(), &key.public()).unwrap();
        assert_eq!(
            entries.last().unwrap().seq,
            2,
            "numbering goes on from the last whole entry"
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].message.contains("torn"));
    }

    #[test]
    fn another_key_cannot_pass_for_the_gateway() {
        let (dir, _) = log_with(2);
        let other = GatewayKey::load_or_create(&dir.path().join("other")).unwrap();
        let (_, problems) = check(dir.path(), &other.public()).unwrap();
        assert_eq!(
            problems
                .iter()
                .filter(|p| p.message.contains("signature"))
                .count(),
            3,
            "{problems:?}"
        );
    }

    #[test]
    fn entries_cut_from_the_end_are_caught_by_the_signed_head() {
        let (dir, key) = log_with(3);
        let l = lines(dir.path());
        write_lines(dir.path(), &l[..2]);
        let (_, problems) = check(dir.path(), &key.public()).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("removed from its end"),
            "{problems:?}"
        );
    }

    /// A stop between the line's sync and the head's rename.
    #[test]
    fn a_head_one_line_behind_is_brought_up_to_date() {
        let (dir, key) = log_with(2);
        let head = std::fs::read(dir.path().join(HEAD_FILE)).unwrap();
        append(
            dir.path(),
            &key,
            Action::Created,
            "p2",
            Some("ab"),
            "plate event",
        )
        .unwrap();
        std::fs::write(dir.path().join(HEAD_FILE), &head).unwrap();
        let (_, problems) = check(dir.path(), &key.public()).unwrap();
        assert!(
            problems[0]
                .message
                .contains("not the one its signed head names")
        );

        assert!(mend_head(dir.path(), &key).unwrap());
        let (entries, problems) = check(dir.path(), &key.public()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(entries.len(), 3);
        assert!(
            !mend_head(dir.path(), &key).unwrap(),
            "nothing left to mend"
        );

        // The very first line, its head never written.
        let (first, key) = log_with(1);
        std::fs::remove_file(first.path().join(HEAD_FILE)).unwrap();
        assert!(mend_head(first.path(), &key).unwrap());
        assert!(check(first.path(), &key.public()).unwrap().1.is_empty());
    }

    #[test]
    fn a_head_further_behind_or_another_keys_line_is_left_for_verify() {
        let (dir, key) = log_with(1);
        let head = std::fs::read(dir.path().join(HEAD_FILE)).unwrap();
        for i in 0..2 {
            append(
                dir.path(),
                &key,
                Action::Created,
                &format!("q{i}"),
                None,
                "t",
            )
            .unwrap();
        }
        std::fs::write(dir.path().join(HEAD_FILE), &head).unwrap();
        assert!(!mend_head(dir.path(), &key).unwrap(), "two lines behind");
        assert!(!check(dir.path(), &key.public()).unwrap().1.is_empty());

        // One line past the head, but signed with another key.
        let (dir, key) = log_with(1);
        let head = std::fs::read(dir.path().join(HEAD_FILE)).unwrap();
        let other = GatewayKey::load_or_create(&dir.path().join("other")).unwrap();
        append(dir.path(), &other, Action::Deleted, "p0", None, "forged").unwrap();
        std::fs::write(dir.path().join(HEAD_FILE), &head).unwrap();
        assert!(!mend_head(dir.path(), &key).unwrap());
    }

    #[test]
    fn a_forged_last_sequence_number_is_reported_not_wrapped() {
        let (dir, key) = log_with(1);
        let mut forged: Entry = serde_json::from_str(&lines(dir.path())[0]).unwrap();
        forged.seq = u64::MAX;
        forged.sig = Some(key.sign(&forged.signed_bytes()));
        write_lines(dir.path(), &[serde_json::to_string(&forged).unwrap()]);
        let err = append(dir.path(), &key, Action::Created, "p1", None, "t")
            .expect_err("appended past the last sequence number");
        assert!(format!("{err:#}").contains("none can follow"), "{err:#}");
        let (_, problems) = check(dir.path(), &key.public()).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("none can follow")),
            "{problems:?}"
        );
    }

    #[test]
    fn appends_from_several_threads_stay_one_chain() {
        let (dir, _) = log_with(0);
        let path = dir.path().to_path_buf();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let key = GatewayKey::load(&path.join("keys")).unwrap();
                    for i in 0..10 {
                        append(
                            &path,
                            &key,
                            Action::Exported,
                            &format!("{t}-{i}"),
                            None,
                            "t",
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let key = GatewayKey::load(&path.join("keys")).unwrap();
        let (entries, problems) = check(&path, &key.public()).unwrap();
        assert_eq!(entries.len(), 40);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
