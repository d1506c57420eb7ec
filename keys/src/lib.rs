//! The data-encryption keys kcred delivers into pods, as an application
//! reads them: parse a delivered `<id>.keys.json`, seal new data with the
//! primary version, open ciphertexts with whichever version sealed them.
//!
//! A pod asks for a key ring with the annotation `kcred.io/keys: "orders-db"`;
//! the kcred volume then holds `orders-db.keys.json`. Every pod given the
//! same ring gets the same keys, so what one pod seals another opens. When
//! operators rotate the ring, a new primary appears in the file and older
//! versions stay, so existing data still opens; re-read the file when it
//! changes.
//!
//! ```
//! # fn main() -> Result<(), kcred_keys::KeyError> {
//! // In a pod: std::fs::read("/etc/kcred/orders-db.keys.json"), with the
//! // path where the pod mounts its kcred volume.
//! let delivered = br#"{"format":"kcred-keys/v1","id":"orders-db","algorithm":"AES-256-GCM",
//!   "primary":2,"keys":[
//!   {"version":1,"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","created":"2025-01-02T03:04:05Z","primary":false},
//!   {"version":2,"key":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=","created":"2025-03-04T05:06:07Z","primary":true}]}"#;
//! let file = kcred_keys::parse_pod_file(delivered)?;
//! assert_eq!(file.primary, 2);
//!
//! // New data is sealed with the primary; the AAD (here a row id) must be
//! // the same when opening.
//! let sealed = kcred_keys::seal_with_primary(&file, b"order 4711: 3 widgets", b"row 17")?;
//! assert_eq!(sealed[..4], 2u32.to_be_bytes());
//!
//! // Any holder of the file opens it, by the version in its first 4 bytes.
//! let opened = kcred_keys::open_with_any(&file, &sealed, b"row 17")?;
//! assert_eq!(&opened[..], b"order 4711: 3 widgets");
//!
//! // A wrong AAD (or a changed byte) fails authentication.
//! assert!(kcred_keys::open_with_any(&file, &sealed, b"row 18").is_err());
//! # Ok(())
//! # }
//! ```
//!
//! # Pod file (public contract, `kcred-keys/v1`)
//!
//! Delivered as `<id>.keys.json`, UTF-8 JSON:
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

#![forbid(unsafe_code)]

mod b64key;
mod error;
mod id;
mod pod_file;

#[cfg(test)]
mod tests;

pub use b64key::B64Key;
pub use error::KeyError;
pub use id::validate_id;
pub use pod_file::{PodKey, PodKeyFile, open_with_any, parse_pod_file, seal_with_primary};

/// Value of the pod file's `format` field.
pub const POD_FORMAT: &str = "kcred-keys/v1";
/// Value of the pod file's `algorithm` field.
pub const ALGORITHM: &str = "AES-256-GCM";
/// Suffix appended to the ring id to name the delivered file.
pub const POD_FILE_SUFFIX: &str = ".keys.json";
/// Bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Bytes of a GCM nonce in the framing.
pub const NONCE_LEN: usize = 12;
/// Bytes of the GCM tag closing a ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes before the GCM ciphertext: version (4) + nonce (12).
pub const HEADER_LEN: usize = 4 + NONCE_LEN;
