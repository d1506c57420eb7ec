//! The driver's settings (flags or environment; see `main.rs`).

use std::path::{Path, PathBuf};

/// Default CSI driver name, as registered with kubelet.
pub const DEFAULT_DRIVER_NAME: &str = "csi.kcred.io";

/// Everything the node driver needs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// CSI driver name (domain notation, at most 63 characters).
    pub driver_name: String,
    /// This node's name, as the Kubernetes API knows it.
    pub node_id: String,
    /// Kubelet's root directory; every target path must lie under its
    /// `pods/` directory.
    pub kubelet_dir: PathBuf,
    /// Where non-secret per-volume state is kept across restarts.
    pub state_dir: PathBuf,
    /// The controllers' node API, e.g. `http://controller:7420`; several
    /// separated by commas (calls fail over between them).
    pub controller_endpoint: String,
    /// Size limit of each volume's tmpfs.
    pub tmpfs_size_bytes: u64,
    /// The audience of the pod tokens kubelet passes (the CSIDriver's
    /// tokenRequests) that are forwarded to the controller.
    pub pod_token_audience: String,
}

/// The pod-token audience the chart and the controller use by default.
pub const DEFAULT_POD_TOKEN_AUDIENCE: &str = "kcred";

/// Longest driver name the CSI spec allows.
const MAX_DRIVER_NAME: usize = 63;

/// A driver name the CSI spec does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "driver name {0:?} must be 1 to 63 characters in domain notation: letters, digits, '-' and '.', beginning and ending with a letter or digit"
)]
pub struct InvalidDriverName(pub String);

/// Checks a driver name against the CSI spec: at most 63 characters,
/// beginning and ending with an alphanumeric character, with dashes,
/// dots and alphanumerics between (kubelet registers it under this name).
pub fn validate_driver_name(name: &str) -> Result<(), InvalidDriverName> {
    let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    let bytes = name.as_bytes();
    let ok = !name.is_empty()
        && name.len() <= MAX_DRIVER_NAME
        && alnum(bytes.first())
        && alnum(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(InvalidDriverName(name.to_string()))
    }
}

/// How the driver reaches the controller, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ControllerSettings<'a> {
    /// `--controller`.
    pub endpoint: &'a str,
    /// `--ca-file`.
    pub ca_file: Option<&'a Path>,
    /// `--tls-cert` and `--tls-key`.
    pub client_cert: Option<(&'a Path, &'a Path)>,
    /// `--keytab`.
    pub keytab: Option<&'a Path>,
}

/// A setting that can never work, whatever the network does: the driver
/// exits at once naming it, instead of retrying for ever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {problem}")]
pub struct StaticMisconfiguration {
    /// The flag (its environment variable says the same).
    pub flag: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

fn misconfigured(flag: &'static str, problem: impl Into<String>) -> StaticMisconfiguration {
    StaticMisconfiguration {
        flag,
        problem: problem.into(),
    }
}

/// Checks what can be checked before the first call: the endpoint's form
/// and scheme, TLS settings that go together, and files that must exist.
pub fn check_controller_settings(s: &ControllerSettings<'_>) -> Result<(), StaticMisconfiguration> {
    let (scheme, rest) = s.endpoint.split_once("://").ok_or_else(|| {
        misconfigured(
            "--controller",
            format!(
                "{:?} is not a URL: use http://HOST:PORT or https://HOST:PORT",
                s.endpoint
            ),
        )
    })?;
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(misconfigured(
            "--controller",
            format!("{:?} names no host", s.endpoint),
        ));
    }
    match (scheme, s.ca_file) {
        ("https", None) => {
            return Err(misconfigured(
                "--ca-file",
                format!(
                    "--controller {:?} is https but no --ca-file (the controller's CA certificate, its exported ca.crt) is set",
                    s.endpoint
                ),
            ));
        }
        ("http", Some(_)) => {
            return Err(misconfigured(
                "--controller",
                format!(
                    "{:?} is plain http but --ca-file is set: use https:// to reach the controller over TLS",
                    s.endpoint
                ),
            ));
        }
        ("http", None) if s.client_cert.is_some() => {
            return Err(misconfigured(
                "--tls-cert",
                "a client certificate needs TLS: use an https:// --controller with --ca-file",
            ));
        }
        ("http" | "https", _) => {}
        (other, _) => {
            return Err(misconfigured(
                "--controller",
                format!(
                    "scheme {other:?} of {:?} is neither http nor https",
                    s.endpoint
                ),
            ));
        }
    }
    if let Some(ca) = s.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| misconfigured("--ca-file", format!("{}: {e}", ca.display())))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(misconfigured(
                "--ca-file",
                format!("{} holds no PEM certificate", ca.display()),
            ));
        }
    }
    let mut files = vec![];
    if let Some((cert, key)) = s.client_cert {
        files.extend([("--tls-cert", cert), ("--tls-key", key)]);
    }
    if let Some(keytab) = s.keytab {
        files.push(("--keytab", keytab));
    }
    for (flag, path) in files {
        std::fs::File::open(path)
            .map_err(|e| misconfigured(flag, format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_can_never_work_name_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let ok = |s: ControllerSettings<'_>| check_controller_settings(&s);
        let flag = |s: ControllerSettings<'_>| ok(s).unwrap_err().flag;
        assert!(
            ok(ControllerSettings {
                endpoint: "http://c:7420",
                ..Default::default()
            })
            .is_ok()
        );
        assert!(
            ok(ControllerSettings {
                endpoint: "https://c:7420",
                ca_file: Some(&ca),
                ..Default::default()
            })
            .is_ok()
        );
        assert_eq!(
            flag(ControllerSettings {
                endpoint: "c:7420",
                ..Default::default()
            }),
            "--controller"
        );
        assert_eq!(
            flag(ControllerSettings {
                endpoint: "grpc://c:7420",
                ..Default::default()
            }),
            "--controller"
        );
        assert_eq!(
            flag(ControllerSettings {
                endpoint: "https://c:7420",
                ..Default::default()
            }),
            "--ca-file"
        );
        assert_eq!(
            flag(ControllerSettings {
                endpoint: "http://c:7420",
                ca_file: Some(&ca),
                ..Default::default()
            }),
            "--controller"
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            flag(ControllerSettings {
                endpoint: "https://c",
                ca_file: Some(&missing),
                ..Default::default()
            }),
            "--ca-file"
        );
        assert_eq!(
            flag(ControllerSettings {
                endpoint: "http://c",
                keytab: Some(&missing),
                ..Default::default()
            }),
            "--keytab"
        );
    }

    #[test]
    fn driver_names_follow_the_csi_specs_domain_notation() {
        for good in [
            DEFAULT_DRIVER_NAME,
            "a",
            "csi-1.example.com",
            &"a".repeat(63),
        ] {
            assert!(validate_driver_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-csi.kcred.io",
            "csi.kcred.io.",
            "csi_kcred.io",
            "csi kcred",
            "csi/kcred",
            &"a".repeat(64),
        ] {
            assert!(validate_driver_name(bad).is_err(), "{bad:?}");
        }
    }
}
