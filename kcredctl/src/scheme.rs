//! Telling a wrong URL scheme from a dead controller: an `http://` URL
//! against a TLS port (or `https://` against a plain one) otherwise fails
//! with an obscure protocol error on the first call.
//!
//! The probe opens one TCP connection and sends the HTTP/2 client preface.
//! A plain HTTP/2 server answers with a SETTINGS frame (an HTTP/1 server
//! with a status line); a TLS server answers with a TLS alert, since the
//! preface is not a TLS record. Anything else proves nothing, and the
//! connection proceeds as asked.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the port answered the probe with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// A TLS record (alert or handshake).
    Tls,
    /// HTTP without TLS (an HTTP/2 frame or an HTTP/1 status line).
    PlainHttp,
    /// No answer, or one that proves nothing.
    Unknown,
}

/// Classifies the first bytes a server sent back to the preface.
pub fn classify(answer: &[u8]) -> Speaks {
    match answer {
        // TLS record header: alert (21) or handshake (22), version 3.x.
        [0x15 | 0x16, 0x03, ..] => Speaks::Tls,
        _ if answer.starts_with(b"HTTP/") => Speaks::PlainHttp,
        // HTTP/2 frame header: 24-bit length, then type 4 (SETTINGS).
        [_, _, _, 0x04, ..] => Speaks::PlainHttp,
        _ => Speaks::Unknown,
    }
}

/// The advice when `url`'s scheme does not match what `host:port` speaks,
/// `None` when it matches or the probe proves nothing.
pub async fn mismatch(url: &str, host: &str, port: u16, wait: Duration) -> Option<String> {
    let https = url.starts_with("https://");
    let speaks = classify(&probe(host, port, wait).await.unwrap_or_default());
    match (https, speaks) {
        (false, Speaks::Tls) => Some(format!(
            "the controller at {url} speaks TLS: use https://{} (and --ca-cert)",
            url.trim_start_matches("http://")
        )),
        (true, Speaks::PlainHttp) => Some(format!(
            "the controller at {url} speaks plain HTTP, without TLS: use http://{} \
             (or give the controller a [tls] table)",
            url.trim_start_matches("https://")
        )),
        _ => None,
    }
}

/// The first bytes (at most 16) the server sends after the preface.
async fn probe(host: &str, port: u16, wait: Duration) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect((host, port)).await.ok()?;
        stream.write_all(H2_PREFACE).await.ok()?;
        let mut buf = [0u8; 16];
        let mut n = 0;
        while n < 5 {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(m) => n += m,
            }
        }
        Some(buf[..n].to_vec())
    };
    tokio::time::timeout(wait, exchange).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_alerts_and_http_answers_are_told_apart() {
        assert_eq!(
            classify(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]),
            Speaks::Tls
        );
        assert_eq!(
            classify(&[0, 0, 0x12, 0x04, 0, 0, 0, 0, 0]),
            Speaks::PlainHttp
        );
        assert_eq!(classify(b"HTTP/1.1 400 Bad Request\r\n"), Speaks::PlainHttp);
        assert_eq!(classify(b""), Speaks::Unknown);
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Speaks::Unknown);
    }
}
