//! Secrets at rest: envelope encryption under a master key.
//!
//! Each record is encrypted with its own random data key (AES-256-GCM); the
//! data key is encrypted ("wrapped") with the master key, whose id is kept
//! beside it so master keys can be rotated record by record. The record's
//! store key is bound in as associated data, so a ciphertext moved to
//! another record fails to decrypt instead of delivering the wrong secret.

mod master_key;
pub mod random;

pub use master_key::MasterKey;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;

/// Why a seal or open failed. Deliberately vague about contents.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CryptoError {
    /// The record names a master key this controller does not hold.
    #[error(
        "record is sealed under master key {record_key_id}, but the loaded master key is {loaded_key_id}"
    )]
    UnknownKeyId {
        /// Key id in the record.
        record_key_id: String,
        /// Key id loaded.
        loaded_key_id: String,
    },
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// Authentication failed: wrong key, wrong record, or tampering.
    #[error("record failed authentication (tampered, moved, or wrong master key)")]
    Authentication,
    /// The master key file is unusable.
    #[error("master key {path}: {reason}")]
    MasterKey {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// An encrypted record as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the master key that wraps the data key.
    pub key_id: String,
    /// Nonce and ciphertext of the data key.
    #[serde(with = "hex::serde")]
    pub wrapped_key: Vec<u8>,
    /// Nonce and ciphertext of the record.
    #[serde(with = "hex::serde")]
    pub ciphertext: Vec<u8>,
}

fn encrypt(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut nonce = [0u8; NONCE_LEN];
    random::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let nonce = *Nonce::from_slice(&nonce);
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Authentication)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn decrypt(key: &[u8; 32], aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if blob.len() < NONCE_LEN {
        return Err(CryptoError::Authentication);
    }
    let (nonce, ct) = blob.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Authentication)
}

/// Encrypts `plaintext` for the record named `aad`.
pub fn seal(master: &MasterKey, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
    let mut dek = Zeroizing::new([0u8; 32]);
    random::fill(dek.as_mut_slice()).map_err(|_| CryptoError::Random)?;
    let ciphertext = encrypt(&dek, aad, plaintext)?;
    let wrapped_key = encrypt(master.bytes(), aad, dek.as_slice())?;
    Ok(Sealed {
        key_id: master.id().to_string(),
        wrapped_key,
        ciphertext,
    })
}

/// Decrypts a record sealed by [`seal`] for the same `aad`.
pub fn open(
    master: &MasterKey,
    aad: &[u8],
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.key_id != master.id() {
        return Err(CryptoError::UnknownKeyId {
            record_key_id: sealed.key_id.clone(),
            loaded_key_id: master.id().to_string(),
        });
    }
    let dek = decrypt(master.bytes(), aad, &sealed.wrapped_key)?;
    let dek: Zeroizing<[u8; 32]> = Zeroizing::new(
        dek.as_slice()
            .try_into()
            .map_err(|_| CryptoError::Authentication)?,
    );
    decrypt(&dek, aad, &sealed.ciphertext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_binds_the_record_name() {
        let mk = MasterKey::from_bytes([7u8; 32]);
        let sealed = seal(&mk, b"keytab/HTTP/a", b"secret bytes").expect("seal");
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            open(&mk, b"keytab/HTTP/a", &sealed)
                .expect("open")
                .as_slice(),
            b"secret bytes"
        );
        assert!(matches!(
            open(&mk, b"keytab/HTTP/b", &sealed),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn tampering_or_another_master_key_fails() {
        let mk = MasterKey::from_bytes([7u8; 32]);
        let mut sealed = seal(&mk, b"r", b"secret").expect("seal");
        let other = MasterKey::from_bytes([8u8; 32]);
        assert!(matches!(
            open(&other, b"r", &sealed),
            Err(CryptoError::UnknownKeyId { .. })
        ));
        let last = sealed.ciphertext.len() - 1;
        sealed.ciphertext[last] ^= 1;
        assert!(matches!(
            open(&mk, b"r", &sealed),
            Err(CryptoError::Authentication)
        ));
    }
}
