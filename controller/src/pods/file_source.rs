//! A static pod source: a TOML file listing pods, for clusters the
//! controller cannot watch, for demos and for tests. Hot-reloaded.

use std::path::Path;

use serde::Deserialize;

use super::PodInfo;
use crate::names;
use crate::reload::LoadError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodsFile {
    #[serde(default)]
    pods: Vec<PodInfo>,
}

/// Parses a pods file: `[[pods]]` tables with the fields of [`PodInfo`].
pub fn parse_pods(path: &Path, text: &str) -> Result<Vec<PodInfo>, LoadError> {
    let invalid = |reason: String| LoadError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let file: PodsFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    for p in &file.pods {
        names::validate_k8s_name("namespace", &p.namespace).map_err(|e| invalid(e.to_string()))?;
        names::validate_k8s_name("pod name", &p.name).map_err(|e| invalid(e.to_string()))?;
        if p.uid.is_empty() {
            return Err(invalid(format!(
                "pod {}/{} has no uid",
                p.namespace, p.name
            )));
        }
    }
    Ok(file.pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_file_round_trips_annotations() {
        let pods = parse_pods(
            Path::new("pods.toml"),
            r#"
            [[pods]]
            namespace = "web"
            name = "web-0"
            uid = "1111"
            node_name = "node-a"
            annotations = { "kcred.io/keytabs" = "HTTP/web.example.com" }
            "#,
        )
        .expect("valid");
        assert_eq!(pods.len(), 1);
        assert_eq!(
            pods[0].annotations["kcred.io/keytabs"],
            "HTTP/web.example.com"
        );
    }

    #[test]
    fn a_pod_without_uid_is_refused() {
        let err = parse_pods(
            Path::new("pods.toml"),
            "[[pods]]\nnamespace = \"web\"\nname = \"web-0\"\nuid = \"\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("no uid"), "{err}");
    }
}
