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
//! The pod file format (`kcred-keys/v1`) and the ciphertext framing are defined once, in
//! [`kcred_keys`], which applications in pods use to read the file; this module writes it.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use kcred_keys::{
    ALGORITHM, HEADER_LEN, KeyError, POD_FILE_SUFFIX, POD_FORMAT, PodKey, PodKeyFile,
    open_with_any, parse_pod_file, seal_with_primary,
};
use kcred_keys::{B64Key, KEY_LEN, validate_id};

const STORE_FORMAT: &str = "kcred-keyring/v1";
/// 9999-12-31T23:59:59Z: keeps `created` a four-digit-year RFC 3339 timestamp.
const MAX_CREATED_UNIX: i64 = 253_402_300_799;

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

fn encode_key(key: &[u8; KEY_LEN]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(44));
    B64.encode_string(key, &mut s);
    s
}

fn fresh_version(version: u32) -> Result<KeyVersion, KeyError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    crate::crypto::random::fill(&mut key[..]).map_err(|_| KeyError::Random)?;
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

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(unix: i64) -> String {
    kcred_audit::timefmt::rfc3339_seconds(unix)
}

#[cfg(test)]
#[path = "data_keys/tests.rs"]
mod tests;
