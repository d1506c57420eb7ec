//! The master key: 32 random bytes in a file only the controller can read.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::CryptoError;

/// The key that wraps every record's data key. Never printed.
pub struct MasterKey {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Builds a key from raw bytes (tests, and keys fetched from a KMS).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let key = Zeroizing::new(bytes);
        let digest = Sha256::new()
            .chain_update(b"kcred master key id\0")
            .chain_update(key.as_slice())
            .finalize();
        MasterKey {
            id: hex::encode(&digest[..8]),
            key,
        }
    }

    /// Reads a key file holding 64 hex digits (a trailing newline is fine).
    /// A file that group or others can read is refused: the key would no
    /// longer be the controller's alone.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let err = |reason: String| CryptoError::MasterKey {
            path: path.display().to_string(),
            reason,
        };
        crate::private_file::check(path).map_err(|reason| CryptoError::MasterKey {
            path: path.display().to_string(),
            reason,
        })?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut_slice())
            .map_err(|_| err("expected 64 hex digits (32 bytes)".into()))?;
        Ok(Self::from_bytes(*key))
    }

    /// Creates a new random key file (mode 0600); refuses to overwrite one.
    pub fn generate_file(path: &Path) -> Result<Self, CryptoError> {
        let err = |reason: String| CryptoError::MasterKey {
            path: path.display().to_string(),
            reason,
        };
        let mut key = Zeroizing::new([0u8; 32]);
        super::random::fill(key.as_mut_slice()).map_err(|e| err(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_slice())));
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| err(e.to_string()))?;
        Ok(Self::from_bytes(*key))
    }

    /// Identifies the key in records without revealing it.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_key_loads_back_and_loose_modes_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let k = MasterKey::generate_file(&path).expect("generate");
        assert!(
            MasterKey::generate_file(&path).is_err(),
            "must not overwrite"
        );
        assert_eq!(MasterKey::load(&path).expect("load").id(), k.id());
        assert!(!format!("{k:?}").contains(&hex::encode(k.bytes())));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(MasterKey::load(&path).is_err());
    }
}
