//! A kubelet stand-in: computes volume ids and target paths as kubelet
//! does and calls the driver's CSI socket with the same requests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use kcred_proto::csi::v1::identity_client::IdentityClient;
use kcred_proto::csi::v1::node_client::NodeClient;
use kcred_proto::csi::v1::volume_capability::{AccessMode, AccessType, MountVolume, access_mode};
use kcred_proto::csi::v1::{
    NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

/// A pod as the tests describe it.
#[derive(Debug, Clone)]
pub struct TestPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Node it is bound to.
    pub node: String,
    /// Annotations.
    pub annotations: Vec<(String, String)>,
    /// The pod's fsGroup.
    pub fs_group: Option<u32>,
    /// The pod's runAsUser and runAsGroup: by default the role account of
    /// its namespace in the test policies (web 1500, db 1600, storm 2000).
    pub run_as: Option<(u32, u32)>,
}

/// The role account ids of the test policies' namespaces.
fn role_ids(namespace: &str) -> Option<(u32, u32)> {
    match namespace {
        "web" => Some((1500, 1500)),
        "db" => Some((1600, 1600)),
        "storm" => Some((2000, 2000)),
        _ => None,
    }
}

impl TestPod {
    /// A pod without annotations; add them with [`TestPod::annotate`].
    pub fn new(namespace: &str, name: &str, node: &str) -> Self {
        TestPod {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!(
                "{:x}",
                Sha256::digest(format!("{namespace}/{name}").as_bytes())
            )[..32]
                .to_string(),
            node: node.into(),
            annotations: vec![],
            fs_group: None,
            run_as: role_ids(namespace),
        }
    }

    /// Adds an annotation (`kcred.io/keytabs`, `kcred.io/tickets`, ...).
    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }

    /// A pod asking for keytabs of `principals` (comma-joined).
    pub fn with_keytabs(namespace: &str, name: &str, node: &str, principals: &str) -> Self {
        Self::new(namespace, name, node).annotate("kcred.io/keytabs", principals)
    }

    /// `web-0` .. `web-{n-1}` in namespace `web` on `node`, each asking for
    /// the keytab of `HTTP/web.example.com` (one credential shared by many
    /// volumes).
    pub fn web_replicas(n: usize, node: &str) -> Vec<Self> {
        (0..n)
            .map(|i| Self::with_keytabs("web", &format!("web-{i}"), node, "HTTP/web.example.com"))
            .collect()
    }

    /// The pod as a node names it in a fetch (service account `default`).
    pub fn pod_ref(&self) -> kcred_proto::kcred::v1::PodRef {
        kcred_proto::kcred::v1::PodRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            service_account: "default".into(),
        }
    }

    /// The controller's view of this pod.
    pub fn info(&self) -> kcred_controller::pods::PodInfo {
        kcred_controller::pods::PodInfo {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            node_name: self.node.clone(),
            service_account: "default".into(),
            annotations: self.annotations.iter().cloned().collect(),
            fs_group: self.fs_group,
            run_as_user: self.run_as.map(|(u, _)| u),
            run_as_group: self.run_as.map(|(_, g)| g),
            ..Default::default()
        }
    }
}

/// Talks CSI to the driver, like kubelet.
pub struct Kubelet {
    root: PathBuf,
    channel: Channel,
}

impl Kubelet {
    /// Connects to the driver socket; `root` is the kubelet directory.
    pub async fn connect(socket: &Path, root: &Path) -> anyhow::Result<Self> {
        let socket = socket.to_path_buf();
        let channel = Endpoint::try_from("http://[::1]:50051")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await?;
        Ok(Kubelet {
            root: root.to_path_buf(),
            channel,
        })
    }

    /// Connects once a just-started driver listens, or fails after
    /// `timeout` with the last error. The socket's file appears at bind, a
    /// moment before the driver listens: a connection in between is
    /// refused, so waiting for the file alone is not enough.
    pub async fn connect_when_ready(
        socket: &Path,
        root: &Path,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let error = match Self::connect(socket, root).await {
                Ok(k) => return Ok(k),
                Err(e) => e,
            };
            if std::time::Instant::now() > deadline {
                return Err(error.context(format!("no driver listening on {}", socket.display())));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// CSI Node client.
    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }

    /// CSI Identity client.
    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }

    /// Kubelet's volume id for the pod's inline CSI volume `volume`.
    pub fn volume_id(pod: &TestPod, volume: &str) -> String {
        kcred_proto::inline_volume_id(&pod.uid, volume)
    }

    /// Kubelet's target path for an inline CSI volume.
    pub fn target_path(&self, pod: &TestPod, volume: &str) -> PathBuf {
        self.root
            .join("pods")
            .join(&pod.uid)
            .join("volumes/kubernetes.io~csi")
            .join(volume)
            .join("mount")
    }

    /// The publish request kubelet sends (and creates the parent directory,
    /// as kubelet does).
    pub fn publish_request(&self, pod: &TestPod, volume: &str) -> NodePublishVolumeRequest {
        let target = self.target_path(pod, volume);
        if let Some(parent) = target.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let ctx: HashMap<String, String> = [
            ("csi.storage.k8s.io/pod.name", pod.name.as_str()),
            ("csi.storage.k8s.io/pod.namespace", pod.namespace.as_str()),
            ("csi.storage.k8s.io/pod.uid", pod.uid.as_str()),
            ("csi.storage.k8s.io/serviceAccount.name", "default"),
            ("csi.storage.k8s.io/ephemeral", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        NodePublishVolumeRequest {
            volume_id: Self::volume_id(pod, volume),
            publish_context: HashMap::new(),
            staging_target_path: String::new(),
            target_path: target.display().to_string(),
            volume_capability: Some(VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume {
                    fs_type: String::new(),
                    mount_flags: vec![],
                    volume_mount_group: String::new(),
                })),
                access_mode: Some(AccessMode {
                    mode: access_mode::Mode::SingleNodeWriter as i32,
                }),
            }),
            readonly: false,
            secrets: HashMap::new(),
            volume_context: ctx,
        }
    }

    /// Publishes `volume` for `pod`; returns the target path.
    pub async fn publish(&self, pod: &TestPod, volume: &str) -> Result<PathBuf, tonic::Status> {
        self.publish_with_tokens(pod, volume, &[]).await
    }

    /// Publishes `volume` for `pod` passing the pod's bound tokens as
    /// kubelet does with the CSIDriver's tokenRequests: `(audience, token,
    /// expirationTimestamp)` in `csi.storage.k8s.io/serviceAccount.tokens`.
    pub async fn publish_with_tokens(
        &self,
        pod: &TestPod,
        volume: &str,
        tokens: &[(&str, &str, &str)],
    ) -> Result<PathBuf, tonic::Status> {
        let mut req = self.publish_request(pod, volume);
        if !tokens.is_empty() {
            let map: serde_json::Map<String, serde_json::Value> = tokens
                .iter()
                .map(|(aud, token, exp)| {
                    (
                        aud.to_string(),
                        serde_json::json!({"token": token, "expirationTimestamp": exp}),
                    )
                })
                .collect();
            req.volume_context.insert(
                "csi.storage.k8s.io/serviceAccount.tokens".into(),
                serde_json::Value::Object(map).to_string(),
            );
        }
        let target = PathBuf::from(&req.target_path);
        self.node().node_publish_volume(req).await?;
        Ok(target)
    }

    /// Unpublishes `volume` of `pod`.
    pub async fn unpublish(&self, pod: &TestPod, volume: &str) -> Result<(), tonic::Status> {
        self.node()
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: Self::volume_id(pod, volume),
                target_path: self.target_path(pod, volume).display().to_string(),
            })
            .await?;
        Ok(())
    }
}
