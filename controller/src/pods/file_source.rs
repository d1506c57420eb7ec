//! A static pod source: a TOML file listing pods, for clusters the
//! controller cannot watch, for demos and for tests. Hot-reloaded.

use std::path::Path;

use serde::Deserialize;

use super::{PodInfo, PodList};
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
#[derive(Default)]
pub struct HandedOver(std::sync::Mutex<PodList>);

impl HandedOver {
    /// The pods, once; later calls get none.
    pub fn take(&self) -> PodList {
        std::mem::take(&mut *crate::locks::lock(&self.0))
    }
}

/// [`parse_pods`] into the pod view's own list, for the pods file's watcher.
pub fn parse_handed_over(path: &Path, text: &str) -> Result<HandedOver, LoadError> {
    read_pods(path, text).map(|pods| HandedOver(std::sync::Mutex::new(pods)))
}

/// Parses a pods file: `[[pods]]` tables with the fields of [`PodInfo`].
pub fn parse_pods(path: &Path, text: &str) -> Result<Vec<PodInfo>, LoadError> {
    read_pods(path, text)
}

/// Parses a pods file into `L`, each pod checked as it is added.
fn read_pods<L: Default + Extend<PodInfo>>(path: &Path, text: &str) -> Result<L, LoadError> {
    let invalid = |reason: String| LoadError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(pods) = read_pod_by_pod(text).map_err(invalid)? {
        return Ok(pods);
    }
    // The whole file through the parser: its error names the file's line.
    let file: PodsFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut pods = L::default();
    add_checked(&mut pods, file.pods).map_err(invalid)?;
    Ok(pods)
}

/// Adds `pods` to `list`, each checked for what it needs beyond the
/// file's syntax; stops at the first that fails.
fn add_checked<L: Extend<PodInfo>>(list: &mut L, pods: Vec<PodInfo>) -> Result<(), String> {
    for p in pods {
        names::validate_k8s_name("namespace", &p.namespace).map_err(|e| e.to_string())?;
        names::validate_k8s_name("pod name", &p.name).map_err(|e| e.to_string())?;
        if p.uid.is_empty() {
            return Err(format!("pod {}/{} has no uid", p.namespace, p.name));
        }
        list.extend([p]);
    }
    Ok(())
}

/// The line that opens each pod's table.
const POD_HEADER: &str = "[[pods]]";

/// Parses the file one `[[pods]]` table at a time, adding each pod to the
/// list as it is read; `Ok(None)` if the file has to be parsed whole (no
/// such header, or a piece that does not parse alone). The parser builds a
/// document tree of all the text it is given: for a whole file of 100,000
/// pods that peaked near 500 MiB, and the pods kept ended up spread over
/// that heap, so every start and reload left the controller several times
/// larger than what it keeps. A pod at a time, the tree is one pod's.
///
/// Sound because a line that is exactly `[[pods]]` is a header unless it
/// sits inside a multi-line string, inline table or array, and a piece cut
/// inside one of those ends with it open, which does not parse. The text
/// before the first header must define nothing (a `pods = [...]` there
/// makes the file invalid as a whole), and pieces cannot clash because
/// `pods` is the only key a file may define (`deny_unknown_fields`: an
/// unknown table repeated under two pods would otherwise pass piece by
/// piece though the whole file repeats a key).
fn read_pod_by_pod<L: Default + Extend<PodInfo>>(text: &str) -> Result<Option<L>, String> {
    // The parser skips a byte-order mark; so must the search for headers.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut starts = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == POD_HEADER {
            starts.push(offset);
        }
        offset += line.len();
    }
    let Some(&first) = starts.first() else {
        return Ok(None);
    };
    if !toml::from_str::<toml::Table>(&text[..first]).is_ok_and(|t| t.is_empty()) {
        return Ok(None);
    }
    let mut pods = L::default();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let Ok(piece) = toml::from_str::<PodsFile>(&text[start..end]) else {
            return Ok(None);
        };
        add_checked(&mut pods, piece.pods)?;
    }
    Ok(Some(pods))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_loads_with_its_volume_names() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/pods.example.toml");
        let text = std::fs::read_to_string(&path).expect("example");
        let pods = parse_pods(&path, &text).expect("valid");
        assert_eq!(pods[0].csi_volumes, Some(vec!["kcred".to_string()]));
        assert_eq!(pods[1].csi_volumes, None, "not listed: not checked");
    }

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

    fn by_pieces(text: &str) -> Option<Vec<PodInfo>> {
        read_pod_by_pod(text).expect("valid pods")
    }

    fn whole(text: &str) -> Vec<PodInfo> {
        toml::from_str::<PodsFile>(text).expect("valid").pods
    }

    #[test]
    fn pod_by_pod_reads_what_the_whole_file_says() {
        let text = "# pods of the demo\r\n\r\n[[pods]]\r\nnamespace = \"web\"\r\nname = \"web-0\"\r\nuid = \"1\"\r\n\
            [pods.annotations]\r\n\"kcred.io/keytabs\" = \"HTTP/web\"\r\n\
            \n  [[pods]]  \nnamespace = \"db\"\nname = \"db-0\"\nuid = \"2\"\nfs_group = 7\n\
            [[pods]] # a comment keeps this header in the piece before\nnamespace = \"db\"\nname = \"db-1\"\nuid = \"3\"\n";
        let pods = by_pieces(text).expect("parsed pod by pod");
        assert_eq!(pods.len(), 3);
        assert_eq!(pods[0].annotations["kcred.io/keytabs"], "HTTP/web");
        assert_eq!(pods, whole(text));
        assert_eq!(
            parse_pods(Path::new("pods.toml"), text).expect("valid"),
            pods
        );
    }

    #[test]
    fn a_header_inside_a_multi_line_string_is_read_as_the_string() {
        let text = "[[pods]]\nnamespace = \"web\"\nname = \"web-0\"\nuid = \"1\"\n\
            annotations = { \"kcred.io/note\" = \"\"\"\n[[pods]]\nnamespace = \"x\"\n\"\"\" }\n";
        assert_eq!(by_pieces(text), None, "a piece ends inside the string");
        let pods = parse_pods(Path::new("pods.toml"), text).expect("valid");
        assert_eq!(pods.len(), 1);
        assert!(pods[0].annotations["kcred.io/note"].contains("[[pods]]"));
    }

    #[test]
    fn what_the_whole_file_refuses_is_refused() {
        let text = "pods = []\n[[pods]]\nnamespace = \"web\"\nname = \"web-0\"\nuid = \"1\"\n";
        assert_eq!(by_pieces(text), None, "the preamble defines pods");
        parse_pods(Path::new("pods.toml"), text).expect_err("pods defined twice");
        // Also what keeps the pieces from clashing: see `read_pod_by_pod`.
        let unknown = "[[pods]]\nnamespace = \"web\"\nname = \"web-0\"\nuid = \"1\"\n[other]\n";
        let err = parse_pods(Path::new("pods.toml"), unknown).expect_err("unknown table");
        assert!(err.to_string().contains("other"), "{err}");
    }

    #[test]
    fn a_byte_order_mark_does_not_stop_the_split() {
        let text = "\u{feff}[[pods]]\nnamespace = \"web\"\nname = \"web-0\"\nuid = \"1\"\n";
        assert_eq!(by_pieces(text), Some(whole(text)));
    }

    #[test]
    fn a_file_without_headers_is_parsed_whole() {
        let text = "pods = [{ namespace = \"web\", name = \"web-0\", uid = \"1\" }]\n";
        assert_eq!(by_pieces(text), None);
        assert_eq!(
            parse_pods(Path::new("pods.toml"), text)
                .expect("valid")
                .len(),
            1
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
