//! The gateway's Ed25519 signing key.
//!
//! Made at the agent's first start, kept beside the other state with mode
//! 0600 so only the agent's user reads it. Its public half is written next
//! to it, printed by `matthan keys show`, and copied into every signature,
//! so anyone can check a package; the fingerprint is what an installer
//! registers with the IOC to say "this gateway's key".

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::digest::{hex, unhex};
use crate::durable;

pub const PRIVATE_FILE: &str = "evidence.ed25519";
pub const PUBLIC_FILE: &str = "evidence.ed25519.pub";

pub struct GatewayKey {
    signing: SigningKey,
}

/// The folder that holds the key pair, inside the state folder.
pub fn key_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("keys")
}

impl GatewayKey {
    /// Loads the key, or makes one when there is none yet.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(PRIVATE_FILE);
        if path.exists() {
            return Self::load(dir);
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the key folder {}", dir.display()))?;
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .context("cannot read /dev/urandom to make the gateway key")?;
        let key = Self {
            signing: SigningKey::from_bytes(&seed),
        };
        if !write_private(&path, &seed)? {
            // Another process (`matthan keys show` beside the agent) made
            // one first: that one is the gateway's.
            return Self::load(dir);
        }
        durable::replace_synced(&dir.join(PUBLIC_FILE), (key.public_hex() + "\n").as_bytes())?;
        tracing::info!(fingerprint = %key.fingerprint(), path = %path.display(), "made the gateway's evidence signing key");
        Ok(key)
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(PRIVATE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the gateway key {} (it is made at the agent's first start; run `matthan run` once, as the agent's user)",
                path.display()
            )
        })?;
        let seed: [u8; 32] = unhex(text.trim())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                anyhow!(
                    "{} is not an Ed25519 key (64 hex digits); restore it from backup: packages signed with it cannot be re-signed",
                    path.display()
                )
            })?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn public_hex(&self) -> String {
        hex(self.public().as_bytes())
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public())
    }

    pub fn sign(&self, message: &[u8]) -> String {
        hex(&self.signing.sign(message).to_bytes())
    }
}

/// Writes the key aside, syncs it and links it into place: a power cut
/// while it is made must not leave an empty or torn key, which the next
/// start would refuse (and which would sign nothing). The link, unlike a
/// rename, never replaces a key another process made meanwhile: returns
/// false then, and this one is dropped.
fn write_private(path: &Path, seed: &[u8; 32]) -> anyhow::Result<bool> {
    let aside = path.with_extension(format!("ed25519.{}.tmp", std::process::id()));
    // Left by a cut while the key was made: never used, so it goes.
    let _ = std::fs::remove_file(&aside);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)
        .with_context(|| format!("cannot create the gateway key {}", aside.display()))?;
    file.write_all(hex(seed).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the gateway key {}", aside.display()))?;
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot create the gateway key {}", path.display()));
        }
    }
    let folder = path.parent().unwrap_or(Path::new("."));
    durable::sync_dir(folder)?;
    Ok(true)
}

/// `sha256:` and the first 16 bytes of the public key's hash, in groups.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let groups: Vec<String> = digest[..16].chunks(2).map(hex).collect();
    format!("sha256:{}", groups.join(":"))
}

/// Reads a public key given as 64 hex digits.
pub fn parse_public(text: &str) -> anyhow::Result<VerifyingKey> {
    let bytes: [u8; 32] = unhex(text.trim())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("not an Ed25519 public key (64 hex digits)"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow!("not a valid Ed25519 public key: {e}"))
}

/// Checks a hex signature of `message` by `key`.
pub fn verify(key: &VerifyingKey, message: &[u8], signature_hex: &str) -> anyhow::Result<()> {
    let bytes: [u8; 64] = unhex(signature_hex)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("the signature is not 128 hex digits"))?;
    key.verify(message, &Signature::from_bytes(&bytes))
        .map_err(|_| anyhow!("the signature does not match"))
}

/// Refuses a key folder others can read into: a key anyone on the
/// gateway can copy proves nothing.
pub fn check_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(PRIVATE_FILE);
    let mode = std::fs::metadata(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_signs_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(dir.path()).unwrap();
        check_private(dir.path()).unwrap();
        let again = GatewayKey::load_or_create(dir.path()).unwrap();
        assert_eq!(key.public_hex(), again.public_hex());
        let public = std::fs::read_to_string(dir.path().join(PUBLIC_FILE)).unwrap();
        let public = parse_public(&public).unwrap();
        let sig = key.sign(b"manifest");
        verify(&public, b"manifest", &sig).unwrap();
        assert!(verify(&public, b"manifesT", &sig).is_err());
        assert!(key.fingerprint().starts_with("sha256:"));
    }

    #[test]
    fn a_key_another_process_made_meanwhile_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = GatewayKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(PRIVATE_FILE);
        let before = std::fs::read(&path).unwrap();
        assert!(!write_private(&path, &[7; 32]).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(
            GatewayKey::load(dir.path()).unwrap().fingerprint(),
            first.fingerprint()
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_damaged_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PRIVATE_FILE), "not a key").unwrap();
        let err = GatewayKey::load(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains(PRIVATE_FILE) && err.contains("64 hex digits"),
            "{err}"
        );
    }
}
