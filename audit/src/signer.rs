//! The audit signing key: Ed25519, in a file only the controller can read.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::AuditError;

/// Names a public key in records without spelling it out: hex of the first
/// 8 bytes of its SHA-256.
pub fn key_id_of(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// Signs audit records. Only the key id and public key are ever printed.
///
/// Signing is ed25519-dalek's: every record is signed, and it signs in
/// about two thirds of ring's time (13 against 19 µs here). Ed25519 is
/// deterministic, so the signatures are the same bytes either way, and
/// verifiers keep using ring.
pub struct AuditSigner {
    /// Zeroized on drop.
    key: SigningKey,
    public_key: VerifyingKey,
    key_id: String,
}

impl fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSigner")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl AuditSigner {
    /// Reads a PKCS#8 Ed25519 key: raw DER bytes (as `openssl genpkey
    /// -algorithm ed25519 -outform DER` writes) or the same bytes as hex
    /// text (as [`AuditSigner::load_or_generate`] writes). Both v1 and v2
    /// PKCS#8 are accepted.
    pub fn from_pkcs8(document: &[u8]) -> Result<Self, AuditError> {
        Self::parse(document, "(PKCS#8 bytes)")
    }

    /// A fresh key held in memory only (tests, throwaway logs).
    pub fn generate() -> Result<Self, AuditError> {
        let pkcs8 = Self::new_pkcs8("(generated)")?;
        Self::parse(&pkcs8, "(generated)")
    }

    /// Loads the key file, refusing one that group or others can read:
    /// whoever can read it can forge the audit log.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let what = path.display().to_string();
        let err = |reason: String| AuditError::Key {
            what: what.clone(),
            reason,
        };
        let meta = fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {:o} lets others read it; chmod 600",
                mode & 0o777
            )));
        }
        let bytes = Zeroizing::new(fs::read(path).map_err(|e| err(e.to_string()))?);
        Self::parse(&bytes, &what)
    }

    /// Loads the key file, or creates it (mode 0600, never overwriting) with
    /// a new key as hex PKCS#8 when it does not exist yet. A key replaced by
    /// accident makes [`super::AuditLog::open`] refuse the old log, so a lost
    /// key cannot silently start a second history.
    pub fn load_or_generate(path: &Path) -> Result<Self, AuditError> {
        let what = path.display().to_string();
        let err = |reason: String| AuditError::Key {
            what: what.clone(),
            reason,
        };
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Self::load(path),
            Err(e) => return Err(err(format!("cannot create: {e}"))),
        };
        let written = Self::new_pkcs8(&what).and_then(|pkcs8| {
            let text = Zeroizing::new(format!("{}\n", hex::encode(pkcs8.as_slice())));
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .and_then(|()| sync_parent(path))
                .map_err(|e| err(format!("cannot write new key: {e}")))?;
            Self::parse(&pkcs8, &what)
        });
        if written.is_err() {
            // A half-written key file would block every later start.
            let _ = fs::remove_file(path);
        }
        written
    }

    /// The raw 32-byte Ed25519 public key verifiers need.
    pub fn public_key(&self) -> &[u8] {
        self.public_key.as_bytes()
    }

    /// The public key as hex, for `kcredctl audit verify --public-key`.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// The key id written into every record ([`key_id_of`]).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub(super) fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }

    /// A new key as PKCS#8 v2 (the public key included).
    fn new_pkcs8(what: &str) -> Result<Zeroizing<Vec<u8>>, AuditError> {
        let err = |reason: String| AuditError::Key {
            what: what.to_string(),
            reason,
        };
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(seed.as_mut())
            .map_err(|_| err("the system random generator failed".into()))?;
        let doc = SigningKey::from_bytes(&seed)
            .to_pkcs8_der()
            .map_err(|e| err(format!("cannot encode the new key: {e}")))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    fn parse(bytes: &[u8], what: &str) -> Result<Self, AuditError> {
        let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or("");
        let der = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Zeroizing::new(hex::decode(text).map_err(|e| AuditError::Key {
                what: what.to_string(),
                reason: format!("bad hex: {e}"),
            })?)
        } else {
            Zeroizing::new(bytes.to_vec())
        };
        let key = signing_key(&der).map_err(|reason| AuditError::Key {
            what: what.to_string(),
            reason: format!("not a PKCS#8 Ed25519 key ({reason})"),
        })?;
        let public_key = key.verifying_key();
        let key_id = key_id_of(public_key.as_bytes());
        Ok(AuditSigner {
            key,
            public_key,
            key_id,
        })
    }
}

/// The key of a PKCS#8 document: v1 (the private key alone) or v2 (with
/// the public key, which must then be the private key's), as RFC 8410
/// writes them or in the older v2 form ring 0.16 wrote (the public key in
/// a constructed `[1]`), which ring still reads.
fn signing_key(der: &[u8]) -> Result<SigningKey, String> {
    let dalek = match SigningKey::from_pkcs8_der(der) {
        Ok(key) => return Ok(key),
        Err(e) => e,
    };
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| dalek.to_string())?;
    // In every form the private key is an OCTET STRING holding the 32-byte
    // seed as an OCTET STRING, right after the algorithm identifier.
    const SEED_AFTER: [u8; 9] = [0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let seed: Zeroizing<[u8; 32]> = der
        .windows(SEED_AFTER.len())
        .position(|w| w == SEED_AFTER)
        .and_then(|at| der.get(at + SEED_AFTER.len()..at + SEED_AFTER.len() + 32))
        .and_then(|s| <[u8; 32]>::try_from(s).ok())
        .map(Zeroizing::new)
        .ok_or_else(|| dalek.to_string())?;
    let key = SigningKey::from_bytes(&seed);
    if key.verifying_key().as_bytes() != pair.public_key().as_ref() {
        return Err("its public key is not its private key's".into());
    }
    Ok(key)
}

/// Makes a newly created file's directory entry durable.
pub(super) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
        _ => fs::File::open(".")?.sync_all(),
    }
}
