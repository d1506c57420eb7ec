//! AES-256 data-encryption key rings delivered to pods (`kcred.io/keys: "orders-db"`).
//!
//! A ring has numbered versions (1, 2, ...). Each version is **Active** (delivered to
//! pods) or **Retired** (kept in the controller's store, never delivered again); exactly
//! one Active version is the **primary**, used for new encryptions. [`KeyRing::rotate`]
//! adds a version and makes it primary; older Active versions keep being delivered so
//! existing data still decrypts. [`KeyRing::retire`] stops delivery of a non-primary
//! version: pods lose the ability to decrypt data under it once their file is refreshed,
//! so re-encrypt such data first. Retired key material stays in the store (not
//! crypto-shredded) and version numbers are never reused.
//!
//! # Pod file (public contract, `kcred-keys/v1`)
//!
//! Delivered as `<id>.keys.json` ([`KeyRing::pod_file_name`]), UTF-8 JSON:
//!
//! ```json
//! {"format":"kcred-keys/v1","id":"orders-db","algorithm":"AES-256-GCM","primary":2,
//!  "keys":[{"version":1,"key":"<base64>","created":"2025-01-02T03:04:05Z","primary":false},
//!          {"version":2,"key":"<base64>","created":"2025-03-04T05:06:07Z","primary":true}]}
//! ```
//!
//! * `format` is exactly `"kcred-keys/v1"`; an incompatible change gets a new value.
//!   Readers must ignore unknown fields (compatible additions stay `v1`).
//! * `algorithm` is exactly `"AES-256-GCM"`.
//! * `keys` lists every Active version, ascending by `version` (u32, >= 1, unique).
//!   `key` is 32 bytes in standard padded base64 (RFC 4648 §4, 44 chars).
//!   `created` is RFC 3339 UTC with second precision (`YYYY-MM-DDTHH:MM:SSZ`).
//! * Exactly one entry has `"primary":true`, and its `version` equals the top-level `primary`.
//!
//! # Ciphertext framing (so pods interoperate)
//!
//! `version (4 bytes, big-endian u32) || nonce (12 random bytes) || AES-256-GCM ciphertext || tag (16)`.
//! Seal with the primary; open with the key whose `version` the first 4 bytes name.
//! The header is not fed to GCM as AAD (a changed version selects a different key and
//! fails authentication anyway); the optional application AAD is passed through
//! unchanged and must be the same on both sides. Nonces are random, so seal at most
//! about 2^32 messages per version and rotate well before.
//! [`seal_with_primary`] and [`open_with_any`] implement this; in Python:
//!
//! ```python
//! import base64, json, os, struct
//! from cryptography.hazmat.primitives.ciphers.aead import AESGCM
//! f = json.load(open("orders-db.keys.json"))
//! keys = {k["version"]: AESGCM(base64.b64decode(k["key"])) for k in f["keys"]}
//! def seal(pt, aad=b""):
//!     n = os.urandom(12)
//!     return struct.pack(">I", f["primary"]) + n + keys[f["primary"]].encrypt(n, pt, aad)
//! def open_(ct, aad=b""):
//!     return keys[struct.unpack(">I", ct[:4])[0]].decrypt(ct[4:16], ct[16:], aad)
//! ```

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Value of the pod file's `format` field.
pub const POD_FORMAT: &str = "kcred-keys/v1";
/// Value of the pod file's `algorithm` field.
pub const ALGORITHM: &str = "AES-256-GCM";
/// Suffix appended to the ring id to name the delivered file.
pub const POD_FILE_SUFFIX: &str = ".keys.json";
/// Bytes before the GCM ciphertext: version (4) + nonce (12).
pub const HEADER_LEN: usize = 4 + NONCE_LEN;

const STORE_FORMAT: &str = "kcred-keyring/v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// 9999-12-31T23:59:59Z: keeps `created` a four-digit-year RFC 3339 timestamp.
const MAX_CREATED_UNIX: i64 = 253_402_300_799;

/// What went wrong with a key ring, a pod file or a ciphertext.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The ring id breaks the naming rule (see [`KeyRing::new`]).
    #[error("invalid key ring id: {0}")]
    InvalidId(&'static str),
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
    /// The ring has no such version.
    #[error("key version {0} does not exist")]
    UnknownVersion(u32),
    /// The primary must stay deliverable; rotate first.
    #[error("key version {0} is the primary; rotate before retiring it")]
    RetirePrimary(u32),
    /// Version numbers ran out (u32::MAX reached).
    #[error("key ring has no version numbers left")]
    VersionsExhausted,
    /// Stored ring bytes are corrupt or of an unknown format.
    #[error("invalid stored key ring: {0}")]
    Store(String),
    /// A pod file is malformed or breaks the `kcred-keys/v1` contract.
    #[error("invalid key file: {0}")]
    PodFile(String),
    /// The ciphertext names a version the pod file does not hold (retired or too new).
    #[error("key version {0} is not in the key file")]
    VersionNotDelivered(u32),
    /// The ciphertext is shorter than header + tag.
    #[error("ciphertext too short")]
    CiphertextTooShort,
    /// Encryption failed (message too long for AES-GCM).
    #[error("encryption failed")]
    Encrypt,
    /// Authentication failed: wrong key, wrong AAD or tampered ciphertext.
    #[error("decryption failed: wrong key, wrong AAD or tampered ciphertext")]
    Decrypt,
}

/// Lifecycle of a version: Active (delivered; one is primary) -> Retired (not delivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Delivered to pods; usable for decryption, and for encryption if primary.
    Active,
    /// Kept in the store only; pods no longer receive it.
    Retired,
}

/// One version of a ring's key.
pub struct KeyVersion {
    version: u32,
    key: Zeroizing<[u8; KEY_LEN]>,
    created_unix: i64,
    state: KeyState,
}

impl KeyVersion {
    /// Version number, also the first 4 bytes of every ciphertext sealed under it.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// Creation time, seconds since the Unix epoch.
    pub fn created_unix(&self) -> i64 {
        self.created_unix
    }
    /// Whether pods still receive this version.
    pub fn state(&self) -> KeyState {
        self.state
    }
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVersion")
            .field("version", &self.version)
            .field("created_unix", &self.created_unix)
            .field("state", &self.state)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A named set of key versions with one primary.
pub struct KeyRing {
    id: String,
    versions: Vec<KeyVersion>,
    primary: u32,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("id", &self.id)
            .field("primary", &self.primary)
            .field("versions", &self.versions)
            .finish()
    }
}

impl KeyRing {
    /// Creates a ring with a random version 1 as primary. `id` is 1..=63 bytes of
    /// `[a-z0-9.-]`, starting and ending alphanumeric, no `..`, because it becomes a file
    /// name inside pods.
    pub fn new(id: &str) -> Result<Self, KeyError> {
        validate_id(id)?;
        Ok(Self {
            id: id.to_owned(),
            versions: vec![fresh_version(1)?],
            primary: 1,
        })
    }

    /// The ring id from the pod annotation.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Version used for new encryptions.
    pub fn primary(&self) -> u32 {
        self.primary
    }

    /// All versions, Active and Retired, ascending (for listing; never exposes key bytes).
    pub fn versions(&self) -> &[KeyVersion] {
        &self.versions
    }

    /// Versions delivered to pods, ascending.
    pub fn live_versions(&self) -> Vec<u32> {
        self.live().map(|v| v.version).collect()
    }

    /// Adds a random version and makes it primary; returns its number. Older Active
    /// versions stay delivered so existing ciphertexts still open. Fallible because it
    /// needs the system RNG and a free version number.
    pub fn rotate(&mut self) -> Result<u32, KeyError> {
        let last = self.versions.iter().map(|v| v.version).max().unwrap_or(0);
        let next = last.checked_add(1).ok_or(KeyError::VersionsExhausted)?;
        self.versions.push(fresh_version(next)?);
        self.primary = next;
        tracing::info!(ring = %self.id, version = next, "rotated data key ring");
        Ok(next)
    }

    /// Stops delivering `version` (idempotent). Refuses the primary: rotate first.
    pub fn retire(&mut self, version: u32) -> Result<(), KeyError> {
        if version == self.primary {
            return Err(KeyError::RetirePrimary(version));
        }
        let v = self
            .versions
            .iter_mut()
            .find(|v| v.version == version)
            .ok_or(KeyError::UnknownVersion(version))?;
        if v.state != KeyState::Retired {
            v.state = KeyState::Retired;
            tracing::info!(ring = %self.id, version, "retired data key version");
        }
        Ok(())
    }

    /// File name of [`Self::to_pod_file`] inside the pod volume: `<id>.keys.json`.
    pub fn pod_file_name(&self) -> String {
        format!("{}{POD_FILE_SUFFIX}", self.id)
    }

    /// The `kcred-keys/v1` document (module docs) with every Active version.
    pub fn to_pod_file(&self) -> Zeroizing<Vec<u8>> {
        self.render(|ring, out| {
            let (id, primary) = (&ring.id, ring.primary);
            write!(
                out,
                r#"{{"format":"{POD_FORMAT}","id":"{id}","algorithm":"{ALGORITHM}","#
            )?;
            write!(out, r#""primary":{primary},"keys":["#)?;
            for (i, v) in ring.live().enumerate() {
                let (sep, key) = (if i == 0 { "" } else { "," }, encode_key(&v.key));
                let (created, is_primary) = (rfc3339(v.created_unix), v.version == primary);
                write!(
                    out,
                    r#"{sep}{{"version":{},"key":"{}","#,
                    v.version,
                    key.as_str()
                )?;
                write!(out, r#""created":"{created}","primary":{is_primary}}}"#)?;
            }
            out.write_str("]}\n")
        })
    }

    /// Everything (Retired versions included) for the controller's encrypted store.
    /// The bytes hold raw keys: seal them before they touch disk.
    pub fn to_store_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.render(|ring, out| {
            let (id, primary) = (&ring.id, ring.primary);
            write!(
                out,
                r#"{{"format":"{STORE_FORMAT}","id":"{id}","primary":{primary},"#
            )?;
            out.write_str(r#""versions":["#)?;
            for (i, v) in ring.versions.iter().enumerate() {
                let (sep, key) = (if i == 0 { "" } else { "," }, encode_key(&v.key));
                let state = match v.state {
                    KeyState::Active => "active",
                    KeyState::Retired => "retired",
                };
                write!(
                    out,
                    r#"{sep}{{"version":{},"key":"{}","#,
                    v.version,
                    key.as_str()
                )?;
                write!(
                    out,
                    r#""created_unix":{},"state":"{state}"}}"#,
                    v.created_unix
                )?;
            }
            out.write_str("]}\n")
        })
    }

    /// Hand-written JSON: every value is a validated id, a number, base64 or a timestamp,
    /// so nothing needs escaping; the buffer is sized up front so key material is not left
    /// behind in a reallocated, unzeroized copy.
    fn render(&self, f: impl FnOnce(&Self, &mut String) -> fmt::Result) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(String::with_capacity(256 + 160 * self.versions.len()));
        // fmt::Write for String never fails, so there is no error to report.
        let _infallible = f(self, &mut out);
        Zeroizing::new(std::mem::take(&mut *out).into_bytes())
    }

    /// Restores a ring from [`Self::to_store_bytes`], re-checking every invariant.
    pub fn from_store_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bad = |m: &str| KeyError::Store(m.to_owned());
        let stored: StoredRing =
            serde_json::from_slice(bytes).map_err(|e| KeyError::Store(e.to_string()))?;
        if stored.format != STORE_FORMAT {
            return Err(bad("unknown format"));
        }
        validate_id(&stored.id).map_err(|_| bad("invalid id"))?;
        let mut versions: Vec<KeyVersion> = stored
            .versions
            .into_iter()
            .map(|v| KeyVersion {
                version: v.version,
                key: v.key.0,
                created_unix: v.created_unix,
                state: v.state,
            })
            .collect();
        versions.sort_by_key(|v| v.version);
        if versions.is_empty() || versions[0].version == 0 {
            return Err(bad("no versions, or version 0"));
        }
        if versions.windows(2).any(|w| w[0].version == w[1].version) {
            return Err(bad("duplicate version"));
        }
        if versions
            .iter()
            .any(|v| !(0..=MAX_CREATED_UNIX).contains(&v.created_unix))
        {
            return Err(bad("creation time out of range"));
        }
        let primary_ok = versions
            .iter()
            .any(|v| v.version == stored.primary && v.state == KeyState::Active);
        if !primary_ok {
            return Err(bad("primary missing or retired"));
        }
        Ok(Self {
            id: stored.id,
            versions,
            primary: stored.primary,
        })
    }

    fn live(&self) -> impl Iterator<Item = &KeyVersion> {
        self.versions.iter().filter(|v| v.state == KeyState::Active)
    }
}

#[derive(Deserialize)]
struct StoredRing {
    format: String,
    id: String,
    primary: u32,
    versions: Vec<StoredVersion>,
}

#[derive(Deserialize)]
struct StoredVersion {
    version: u32,
    key: B64Key,
    created_unix: i64,
    state: KeyState,
}

/// A 32-byte key decoded straight from its base64 string into zeroizing memory.
struct B64Key(Zeroizing<[u8; KEY_LEN]>);

impl<'de> Deserialize<'de> for B64Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = B64Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string encoding 32 bytes")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<B64Key, E> {
                let mut buf = Zeroizing::new([0u8; KEY_LEN + 16]);
                match B64.decode_slice(s, &mut buf[..]) {
                    Ok(KEY_LEN) => {
                        let mut key = Zeroizing::new([0u8; KEY_LEN]);
                        key.copy_from_slice(&buf[..KEY_LEN]);
                        Ok(B64Key(key))
                    }
                    _ => Err(E::custom("key must be standard base64 of exactly 32 bytes")),
                }
            }
        }
        d.deserialize_str(Visitor)
    }
}

fn encode_key(key: &[u8; KEY_LEN]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(44));
    B64.encode_string(key, &mut s);
    s
}

fn fresh_version(version: u32) -> Result<KeyVersion, KeyError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(&mut key[..])
        .map_err(|_| KeyError::Random)?;
    let created_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| {
            i64::try_from(d.as_secs()).unwrap_or(MAX_CREATED_UNIX)
        })
        .min(MAX_CREATED_UNIX);
    Ok(KeyVersion {
        version,
        key,
        created_unix,
        state: KeyState::Active,
    })
}

fn validate_id(id: &str) -> Result<(), KeyError> {
    let err = match id {
        "" => "empty",
        _ if id.len() > 63 => "longer than 63 bytes",
        _ if !id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.')) =>
        {
            "only a-z, 0-9, '-' and '.' are allowed"
        }
        _ if !id.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !id.ends_with(|c: char| c.is_ascii_alphanumeric()) =>
        {
            "must start and end with a letter or digit"
        }
        _ if id.contains("..") => "must not contain '..'",
        _ => return Ok(()),
    };
    Err(KeyError::InvalidId(err))
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(unix: i64) -> String {
    kcred_audit::timefmt::rfc3339_seconds(unix)
}

#[path = "data_keys/pod_file.rs"]
mod pod_file;
pub use pod_file::{PodKey, PodKeyFile, open_with_any, parse_pod_file, seal_with_primary};

#[cfg(test)]
#[path = "data_keys/tests.rs"]
mod tests;
