//! A unary reply under 1 KiB reaches a node as one TLS record: counted in
//! the bytes a real client receives from a real controller over TLS.
//! (`h2` used to write a message over 256 bytes apart from its frame, then
//! the trailers: two records, two `send`s, two wake-ups of the node.)

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use common::{Files, Running};
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::{FetchBundleRequest, PodRef};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
[tls]
names = ["controller.test"]
ca_export_file = "{DIR}/ca.crt"
"#;

const POLICY: &str = r#"
[[role_accounts]]
login = "websvc"
uid = 1500
gid = 1500
namespaces = ["web"]
keys = ["orders-db", "billing-db", "audit-db"]
"#;

const PODS: &str = r#"
[[pods]]
namespace = "web"
name = "web-0"
uid = "u0"
node_name = "node-1"
run_as_user = 1500
run_as_group = 1500
annotations = { "kcred.io/keys" = "orders-db,billing-db,audit-db" }
"#;

/// Counts the TLS records in what it reads (each a 5-byte header, then as
/// many bytes as the header says).
struct Counting {
    inner: TcpStream,
    records: Arc<AtomicUsize>,
    header: Vec<u8>,
    body_left: usize,
}

impl Counting {
    fn take(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let need = 5 - self.header.len();
            let n = need.min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 5 {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header.clear();
                self.records.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

impl AsyncRead for Counting {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled()[before..].to_vec();
            this.take(&read);
        }
        polled
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

async fn counted_channel(
    f: &Files,
    addr: SocketAddr,
    records: Arc<AtomicUsize>,
) -> tonic::transport::Channel {
    f.tls_endpoint(addr)
        .connect_with_connector(tower::service_fn(move |_| {
            let records = Arc::clone(&records);
            async move {
                let inner = TcpStream::connect(addr).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(Counting {
                    inner,
                    records,
                    header: Vec::new(),
                    body_left: 0,
                }))
            }
        }))
        .await
        .expect("node connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_under_a_kibibyte_is_one_tls_record() {
    const CALLS: usize = 20;
    let f = Files::new(CONFIG);
    std::fs::write(f.path("policy.toml"), POLICY).unwrap();
    std::fs::write(f.path("pods.toml"), PODS).unwrap();
    let c = Running::start(&f.config).await;
    let records = Arc::new(AtomicUsize::new(0));
    let mut node =
        NodeCredentialsClient::new(counted_channel(&f, c.addr, Arc::clone(&records)).await);
    let fetch = || FetchBundleRequest {
        node_name: "node-1".into(),
        pod: Some(PodRef {
            namespace: "web".into(),
            name: "web-0".into(),
            uid: "u0".into(),
            service_account: "default".into(),
        }),
        volume_id: "vol-0".into(),
        refresh: true,
        ..Default::default()
    };
    // The first call also carries the handshake's and HTTP/2's set-up.
    let bundle = node.fetch_bundle(fetch()).await.unwrap().into_inner();
    // At least this much, at most a few dozen bytes more once encoded.
    let size: usize = bundle
        .files
        .iter()
        .map(|f| f.name.len() + f.content.len())
        .sum();
    assert!(
        (300..900).contains(&size),
        "the reply (over {size} bytes) must lie where h2 wrote it in two pieces"
    );
    let before = records.load(Ordering::SeqCst);
    for _ in 0..CALLS {
        node.fetch_bundle(fetch()).await.unwrap();
    }
    let per_reply = records.load(Ordering::SeqCst) - before;
    assert!(
        (CALLS..=CALLS + 2).contains(&per_reply),
        "{per_reply} TLS records for {CALLS} replies"
    );
    drop(node);
    c.stop().await;
}
