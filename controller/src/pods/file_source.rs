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

/// A parsed pods file, handed over whole to the pod index: the index keeps
/// the pods (compact), the file's watcher only its digest. Kept by the
/// watcher too, 100,000 pods would cost their memory twice.
#[derive(Debug, Default)]
pub struct HandedOver(std::sync::Mutex<Vec<PodInfo>>);

impl HandedOver {
    /// The pods, once; later calls get none.
    pub fn take(&self) -> Vec<PodInfo> {
        std::mem::take(&mut *crate::locks::lock(&self.0))
    }
}

/// [`parse_pods`], for the pods file's watcher.
pub fn parse_handed_over(path: &Path, text: &str) -> Result<HandedOver, LoadError> {
    parse_pods(path, text).map(|pods| HandedOver(std::sync::Mutex::new(pods)))
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
    fn parsed_pods_are_handed_over_once() {
        let parsed = parse_handed_over(
            Path::new("pods.toml"),
            "[[pods]]\nnamespace = \"web\"\nname = \"web-0\"\nuid = \"1\"\n",
        )
        .expect("valid");
        assert_eq!(parsed.take().len(), 1);
        assert!(parsed.take().is_empty(), "the watcher keeps none");
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
