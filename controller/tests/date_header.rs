//! A node's connection must not grow the controller's HTTP/2 header table
//! with every answer: each answer's `date` goes out as a literal never to
//! be indexed, read here from the bytes the controller sends.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Files, Running};
use kcred_proto::kcred::v1::HeartbeatRequest;
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `date` in HPACK's static table (RFC 7541, appendix A).
const DATE: u64 = 33;

#[derive(Debug, PartialEq)]
enum Field {
    /// Added to the receiver's table.
    Indexed(u64),
    /// Sent once, not added.
    NotIndexed(u64),
    /// Sent once, never to be added by anyone on the way.
    NeverIndexed(u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_dated_without_growing_the_header_table() {
    let f = Files::new("");
    let c = Running::start(&f.config).await;
    let (relay, sent) = relay_to(c.addr).await;
    let mut client = NodeCredentialsClient::connect(format!("http://{relay}"))
        .await
        .unwrap();
    for _ in 0..3 {
        client
            .heartbeat(HeartbeatRequest {
                node_name: "node-1".into(),
                volume_ids: vec![],
            })
            .await
            .unwrap();
    }
    drop(client);
    c.stop().await;

    let fields = header_fields(&sent.lock().unwrap());
    let dates: Vec<&Field> = fields
        .iter()
        .filter(|f| {
            matches!(
                f,
                Field::Indexed(DATE) | Field::NotIndexed(DATE) | Field::NeverIndexed(DATE)
            )
        })
        .collect();
    assert_eq!(dates, [&Field::NeverIndexed(DATE); 3], "{fields:?}");
}

/// A loopback relay to `to` for one connection; what `to` sends is kept.
async fn relay_to(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&sent);
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(to).await.unwrap();
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
            let _ = server_tx.shutdown().await;
        });
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = server_rx.read(&mut buf).await {
            if n == 0 || client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
            kept.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (addr, sent)
}

/// The literal fields with a static name (how h2 sends `date`) of every
/// HEADERS frame in `bytes`, a server's side of an HTTP/2 connection.
fn header_fields(mut bytes: &[u8]) -> Vec<Field> {
    let mut fields = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let (kind, flags) = (bytes[3], bytes[4]);
        let mut payload = &bytes[9..9 + len];
        bytes = &bytes[9 + len..];
        if kind != 0x1 {
            continue;
        }
        let mut pad = 0;
        if flags & 0x8 != 0 {
            pad = usize::from(payload[0]);
            payload = &payload[1..];
        }
        if flags & 0x20 != 0 {
            payload = &payload[5..];
        }
        fields.extend(hpack_fields(&payload[..payload.len() - pad]));
    }
    fields
}

/// How a literal field is kept, from its name's index.
type Literal = fn(u64) -> Field;

fn hpack_fields(mut block: &[u8]) -> Vec<Field> {
    let mut fields = Vec::new();
    while let Some(&first) = block.first() {
        let (prefix, field): (u8, Option<Literal>) = match first {
            b if b & 0x80 != 0 => (7, None),
            b if b & 0xC0 == 0x40 => (6, Some(Field::Indexed)),
            b if b & 0xE0 == 0x20 => (5, None),
            b if b & 0xF0 == 0x10 => (4, Some(Field::NeverIndexed)),
            _ => (4, Some(Field::NotIndexed)),
        };
        let name = integer(&mut block, prefix);
        let Some(field) = field else {
            continue;
        };
        if name == 0 {
            skip_string(&mut block);
        }
        skip_string(&mut block);
        if name != 0 {
            fields.push(field(name));
        }
    }
    fields
}

/// An HPACK integer with a `prefix`-bit prefix (RFC 7541, 5.1).
fn integer(block: &mut &[u8], prefix: u8) -> u64 {
    let max = (1u64 << prefix) - 1;
    let mut value = u64::from(block[0]) & max;
    *block = &block[1..];
    if value == max {
        let mut shift = 0;
        loop {
            let b = block[0];
            *block = &block[1..];
            value += u64::from(b & 0x7F) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    value
}

fn skip_string(block: &mut &[u8]) {
    let len = integer(block, 7) as usize;
    *block = &block[len..];
}
