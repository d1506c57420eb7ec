//! Errors of the key ring format, pod files and ciphertexts.

/// What went wrong with a key ring, a pod file or a ciphertext. One error type for
/// both sides of the format: applications reading a pod file meet the pod file and
/// ciphertext variants, the controller's key rings the others.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The ring id breaks the naming rule (see [`validate_id`](crate::validate_id)).
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
