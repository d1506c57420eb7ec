//! Reading side of the `kcred-keys/v1` pod file and the ciphertext framing; the
//! contract itself is documented on the crate.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{
    ALGORITHM, B64Key, HEADER_LEN, KEY_LEN, KeyError, NONCE_LEN, POD_FORMAT, TAG_LEN, validate_id,
};

/// A parsed `kcred-keys/v1` file, as an application in a pod sees it.
#[derive(Debug)]
pub struct PodKeyFile {
    /// Ring id.
    pub id: String,
    /// Version to seal new data with.
    pub primary: u32,
    /// Delivered versions, ascending.
    pub keys: Vec<PodKey>,
}

impl PodKeyFile {
    /// The key for `version`, if delivered.
    pub fn key(&self, version: u32) -> Option<&PodKey> {
        self.keys.iter().find(|k| k.version == version)
    }
}

/// One delivered key version.
pub struct PodKey {
    /// Version number.
    pub version: u32,
    /// Raw AES-256 key; wiped on drop.
    pub key: Zeroizing<[u8; KEY_LEN]>,
    /// Creation time as written in the file (RFC 3339).
    pub created: String,
    /// Whether this is the file's primary.
    pub primary: bool,
}

impl fmt::Debug for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodKey")
            .field("version", &self.version)
            .field("created", &self.created)
            .field("primary", &self.primary)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Parses and checks a pod file against the `kcred-keys/v1` contract.
pub fn parse_pod_file(bytes: &[u8]) -> Result<PodKeyFile, KeyError> {
    let bad = |m: &str| KeyError::PodFile(m.to_owned());
    let file: PodFileIn =
        serde_json::from_slice(bytes).map_err(|e| KeyError::PodFile(e.to_string()))?;
    if file.format != POD_FORMAT {
        return Err(bad("unsupported format"));
    }
    if file.algorithm != ALGORITHM {
        return Err(bad("unsupported algorithm"));
    }
    validate_id(&file.id).map_err(|_| bad("invalid id"))?;
    let mut keys: Vec<PodKey> = file
        .keys
        .into_iter()
        .map(|k| PodKey {
            version: k.version,
            key: k.key.0,
            created: k.created,
            primary: k.primary,
        })
        .collect();
    keys.sort_by_key(|k| k.version);
    if keys.iter().any(|k| k.version == 0) || keys.windows(2).any(|w| w[0].version == w[1].version)
    {
        return Err(bad("versions must be unique and >= 1"));
    }
    let primaries: Vec<u32> = keys
        .iter()
        .filter(|k| k.primary)
        .map(|k| k.version)
        .collect();
    if primaries != [file.primary] {
        return Err(bad(
            "exactly one key must be primary and match the top-level primary",
        ));
    }
    Ok(PodKeyFile {
        id: file.id,
        primary: file.primary,
        keys,
    })
}

/// Encrypts `plaintext` under the file's primary, framed as the module docs describe.
pub fn seal_with_primary(
    file: &PodKeyFile,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let key = file
        .key(file.primary)
        .ok_or(KeyError::VersionNotDelivered(file.primary))?;
    let cipher = Aes256Gcm::new_from_slice(&key.key[..]).map_err(|_| KeyError::Encrypt)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| KeyError::Random)?;

    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&key.version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[HEADER_LEN..])
        .map_err(|_| KeyError::Encrypt)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Decrypts a framed ciphertext with whichever delivered version its header names.
pub fn open_with_any(
    file: &PodKeyFile,
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if ciphertext.len() < HEADER_LEN + TAG_LEN {
        return Err(KeyError::CiphertextTooShort);
    }
    let (header, rest) = ciphertext.split_at(HEADER_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let (version, nonce) = header.split_at(4);
    let version = u32::from_be_bytes(version.try_into().map_err(|_| KeyError::Decrypt)?);
    let key = file
        .key(version)
        .ok_or(KeyError::VersionNotDelivered(version))?;
    let cipher = Aes256Gcm::new_from_slice(&key.key[..]).map_err(|_| KeyError::Decrypt)?;
    let mut plain = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            aad,
            &mut plain,
            Tag::from_slice(tag),
        )
        .map_err(|_| KeyError::Decrypt)?;
    Ok(plain)
}

#[derive(Deserialize)]
struct PodFileIn {
    format: String,
    id: String,
    algorithm: String,
    primary: u32,
    keys: Vec<PodKeyIn>,
}

#[derive(Deserialize)]
struct PodKeyIn {
    version: u32,
    key: B64Key,
    created: String,
    primary: bool,
}
