//! Files only the controller may read: the master key, its keytabs, the
//! audit signing key. One rule, applied at start and by `check-config`,
//! so the two never disagree.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Refuses a file that group or others can read or write: the secret in it
/// would no longer be the controller's alone. The message (without the
/// path, which callers name with the setting) says how to fix it.
pub fn check(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("mode {mode:o} lets others read it; chmod 600"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_private_to_their_owner_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "x").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let result = check(&path);
            assert_eq!(result.is_ok(), ok, "mode {mode:o}: {result:?}");
        }
        let err = check(&path).unwrap_err();
        assert!(
            err.contains("mode 604") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(check(&dir.path().join("missing")).is_err());
        assert!(
            check(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
    }
}
