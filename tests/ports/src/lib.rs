//! Loopback ports for servers a test starts in another process (a KDC, a
//! controller, etcd), which must be told their port before they bind it.
//!
//! A port found by binding port 0 and closing again comes from the
//! kernel's ephemeral range. Until the server binds it, the kernel may hand
//! it out again: as the source port of any outgoing connection, or to
//! another test's probe. The server then fails with "address already in
//! use", a failure that depends on what else runs at that moment.
//!
//! These ports come from outside that range, so no connection or probe
//! takes them. Each is handed out once per process, and only after a bind
//! shows it free.

use std::io;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Below this, ports belong to well-known services.
const LOWEST: u16 = 10_000;

/// Kubernetes' NodePort range: on a host running kube-proxy, a connection
/// to one of these on loopback can be redirected though nothing listens.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30_000..=32_767;

/// Where the kernel picks ephemeral ports, when it cannot be read.
const EPHEMERAL_DEFAULT: (u16, u16) = (32_768, 60_999);

/// How many ports this process has taken (the next one is the one after).
static TAKEN: AtomicU32 = AtomicU32::new(0);

/// A loopback TCP port free now and handed out to no one else in this
/// process.
pub fn tcp() -> io::Result<u16> {
    take(false)
}

/// A loopback port free on both TCP and UDP (a KDC listens on both).
pub fn tcp_and_udp() -> io::Result<u16> {
    take(true)
}

fn take(udp: bool) -> io::Result<u16> {
    static PORTS: OnceLock<Vec<u16>> = OnceLock::new();
    let ports = PORTS.get_or_init(|| candidates(ephemeral_range()));
    if ports.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "the ephemeral port range leaves no port for test servers",
        ));
    }
    static START: OnceLock<usize> = OnceLock::new();
    let start = *START.get_or_init(|| start_offset(ports.len()));
    for _ in 0..ports.len() {
        let n = TAKEN.fetch_add(1, Ordering::Relaxed) as usize;
        let port = ports[(start + n) % ports.len()];
        if free(port, udp) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free loopback port outside the ephemeral range",
    ))
}

/// The ports from [`LOWEST`] up outside `ephemeral` and [`NODE_PORTS`],
/// in order.
fn candidates((low, high): (u16, u16)) -> Vec<u16> {
    (LOWEST..=u16::MAX)
        .filter(|p| !(low..=high).contains(p) && !NODE_PORTS.contains(p))
        .collect()
}

/// `/proc/sys/net/ipv4/ip_local_port_range`.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(str::parse::<u16>);
            match (it.next(), it.next()) {
                (Some(Ok(low)), Some(Ok(high))) if low <= high => Some((low, high)),
                _ => None,
            }
        })
        .unwrap_or(EPHEMERAL_DEFAULT)
}

/// Where this process starts in the candidates (chosen once): apart from
/// other test processes running at the same time, which each start
/// somewhere else.
fn start_offset(len: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = (u64::from(std::process::id()) << 32 | u64::from(nanos))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 32) as usize % len
}

fn free(port: u16, udp: bool) -> bool {
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    let udp_ok = !udp || UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
    tcp.is_ok() && udp_ok
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let mut seen = HashSet::new();
        for i in 0..200 {
            let port = if i % 2 == 0 { tcp() } else { tcp_and_udp() }.expect("a port");
            assert!(port >= LOWEST, "{port}");
            assert!(!(low..=high).contains(&port), "{port} is in {low}-{high}");
            assert!(!NODE_PORTS.contains(&port), "{port} is a NodePort");
            assert!(seen.insert(port), "{port} handed out twice");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("still free");
        }
    }

    #[test]
    fn candidates_leave_out_the_ephemeral_range() {
        let c = candidates((32_768, 60_999));
        assert_eq!(c.first(), Some(&LOWEST));
        assert!(c.contains(&29_999) && c.contains(&61_000) && c.contains(&65_535));
        assert!(!c.contains(&30_000) && !c.contains(&32_767));
        assert!(!c.contains(&32_768) && !c.contains(&60_999));
        assert!(candidates((1_024, 65_535)).is_empty());
    }
}
