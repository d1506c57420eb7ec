//! Accepting connections so that anyone able to reach the port cannot take
//! the controller down by opening connections and doing nothing with them.
//!
//! - **Per source**: at most `max_unauthenticated_per_source` connections
//!   from one IP address that have not yet made an authenticated call; more
//!   are closed at once. Authenticated connections do not count, so nodes
//!   behind one NAT address are not limited by it.
//! - **Overall**: at most `max_connections` open connections, well below
//!   the file descriptor limit (the replay cache, the store, kadmin and
//!   kinit need descriptors too). When full, the oldest connection that has
//!   not authenticated is closed to make room; authenticated connections
//!   are never closed for a newcomer. Only when every connection is
//!   authenticated is the newcomer refused.
//! - **Per node**: at most `max_connections_per_node` authenticated
//!   connections speak for one node; when a node opens one more, its
//!   oldest is closed (a driver holds one per controller, and a node
//!   reconnecting after a network cut must win over its stale ones). A
//!   node whose keys were stolen cannot fill the controller's slots and
//!   shut every other node out.
//! - **Idle before authentication**: a connection that has made no
//!   authenticated call `unauthenticated_idle` after it was accepted is
//!   closed (the TLS handshake has its own, shorter deadline, in tonic).
//! - Accepted sockets get `TCP_NODELAY` (tonic sets it only on listeners it
//!   binds itself): small gRPC frames are not held back by Nagle's
//!   algorithm waiting for a delayed ACK (a 40 ms stall per call).
//! - When `accept` itself fails for lack of resources (`EMFILE`...) the
//!   loop backs off instead of spinning.
//! - The accept queue is [`BACKLOG`] long ([`bind`]): every node connects
//!   at once after a restart or a failover.
//!
//! Whenever the controller is full (the overall cap reached, or `accept`
//! failing for lack of resources) it notes the moment
//! ([`Connections::last_saturated`]): node loss is judged only over time
//! the controller itself could serve (see [`crate::nodes::leases`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::locks::lock;

/// The accept queue's length asked of the kernel, which caps it at
/// `net.core.somaxconn`. With the 128 the standard library asks for, a few
/// hundred nodes connecting at once (a restart, a failover) overflow it:
/// the kernel drops the handshakes it cannot queue, and some of those
/// connections end reset (the 4,000-pod storm bench lost publishes that
/// way).
pub const BACKLOG: u32 = 4096;

/// Binds the node API's listener on `addr` with a [`BACKLOG`]-long accept
/// queue. Needs a Tokio runtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted controller rebinds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// What a call on a TLS connection proved, remembered for the
/// connection's lifetime (see [`crate::auth`] for why that is as safe as
/// checking every call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proven {
    /// A Kerberos principal, from a verified token.
    Principal(String),
    /// The DNS names of the client certificate the connection's TLS
    /// handshake verified (fixed for the connection: TLS 1.3 has no
    /// renegotiation, and rustls supports none).
    Certificate(Arc<[String]>),
}

/// The accept side's limits.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimits {
    /// Most open connections.
    pub max_connections: usize,
    /// Most connections from one IP address not yet authenticated.
    pub max_unauthenticated_per_source: usize,
    /// Most authenticated connections speaking for one node.
    pub max_connections_per_node: usize,
    /// Longest time a connection may stay without an authenticated call.
    pub unauthenticated_idle: Duration,
}

/// One accepted connection's standing.
struct Conn {
    id: u64,
    authenticated: AtomicBool,
    /// Whether it may remember a proven principal (see [`Connections::admit`]).
    cacheable: bool,
    /// What a call on this connection proved (TLS only).
    principal: std::sync::OnceLock<Proven>,
    /// The node its first authenticated node call spoke for, and when (in
    /// the order of first node calls).
    node: std::sync::OnceLock<(Arc<str>, u64)>,
    closed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Conn {
    /// Closes the connection from outside: its next read or write fails.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }
}

#[derive(Default)]
struct Table {
    open: HashMap<SocketAddr, Arc<Conn>>,
    unauthenticated_by_source: HashMap<IpAddr, usize>,
    /// Each node's authenticated connections, in the order of their
    /// first node call (oldest first).
    by_node: HashMap<Arc<str>, BTreeMap<u64, NodeConn>>,
    next_id: u64,
    next_node_call: u64,
}

/// One of a node's connections: the connection itself, not its address
/// (the address of a connection not yet cleaned up may be another's).
struct NodeConn {
    peer: SocketAddr,
    conn: Arc<Conn>,
}

impl Table {
    fn release_node(&mut self, conn: &Conn) {
        let Some((node, seq)) = conn.node.get() else {
            return;
        };
        if let Some(held) = self.by_node.get_mut(node) {
            held.remove(seq);
            if held.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    fn release_source(&mut self, ip: IpAddr) {
        if let Some(n) = self.unauthenticated_by_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.unauthenticated_by_source.remove(&ip);
            }
        }
    }
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its source holds the most unauthenticated connections allowed.
    PerSource,
    /// Every slot is held by an authenticated connection.
    Full,
}

/// Every open connection, shared by the accept loop and the handlers
/// (which mark connections authenticated).
pub struct Connections {
    limits: AcceptLimits,
    table: Mutex<Table>,
    last_saturated: Mutex<Option<Instant>>,
    refused: AtomicU64,
    evicted: AtomicU64,
}

impl Connections {
    /// No connection yet.
    pub fn new(limits: AcceptLimits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            table: Mutex::new(Table::default()),
            last_saturated: Mutex::new(None),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> AcceptLimits {
        self.limits
    }

    /// Takes a slot for a connection from `peer`, closing the oldest
    /// unauthenticated connection if the controller is full.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Slot, Refused> {
        let mut t = lock(&self.table);
        let ip = peer.ip();
        let from_source = t.unauthenticated_by_source.get(&ip).copied().unwrap_or(0);
        if from_source >= self.limits.max_unauthenticated_per_source {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::PerSource);
        }
        if t.open.len() >= self.limits.max_connections {
            self.mark_saturated();
            let victim = t
                .open
                .iter()
                .filter(|(_, c)| !c.authenticated.load(Ordering::Acquire))
                .min_by_key(|(_, c)| c.id)
                .map(|(a, _)| *a);
            let Some(addr) = victim else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Full);
            };
            if let Some(c) = t.open.remove(&addr) {
                c.close();
                t.release_source(addr.ip());
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        t.next_id += 1;
        // The kernel frees an address only once its socket is closed; an
        // entry still here is a connection whose end has not been handled
        // yet. The two could be confused by address, so the newcomer never
        // remembers a proven identity: every call on it is checked.
        let cacheable = !t.open.contains_key(&peer);
        let conn = Arc::new(Conn {
            id: t.next_id,
            authenticated: AtomicBool::new(false),
            cacheable,
            principal: std::sync::OnceLock::new(),
            node: std::sync::OnceLock::new(),
            closed: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        // The connection it replaces no longer owns the entry, so its end
        // will not give back its count against the source: given back now.
        if let Some(old) = t.open.insert(peer, Arc::clone(&conn))
            && !old.authenticated.load(Ordering::Acquire)
        {
            t.release_source(ip);
        }
        *t.unauthenticated_by_source.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            conns: Arc::clone(self),
            peer,
            conn,
        })
    }

    /// The connection from `peer` made an authenticated call: it is no
    /// longer idle, evictable, nor counted against its source.
    pub fn authenticated(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        Self::mark_authenticated(&mut lock(&self.table), peer);
    }

    /// Marks the open connection from `peer` authenticated (once: it then
    /// stops counting against its source), and returns it.
    fn mark_authenticated(t: &mut Table, peer: SocketAddr) -> Option<Arc<Conn>> {
        let c = t.open.get(&peer).map(Arc::clone)?;
        if !c.authenticated.swap(true, Ordering::AcqRel) {
            t.release_source(peer.ip());
        }
        Some(c)
    }

    /// As [`Self::authenticated`], for a call that spoke for `node`: the
    /// connection counts as one of the node's (the first node it spoke
    /// for), and the node's oldest is closed if it now holds more than
    /// `max_connections_per_node`.
    pub fn authenticated_node(&self, peer: Option<SocketAddr>, node: &str) {
        let Some(peer) = peer else { return };
        let mut t = lock(&self.table);
        let Some(c) = Self::mark_authenticated(&mut t, peer) else {
            return;
        };
        if c.node.get().is_some() {
            return;
        }
        let name: Arc<str> = match t.by_node.get_key_value(node) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(node),
        };
        t.next_node_call += 1;
        let seq = t.next_node_call;
        let _ = c.node.set((Arc::clone(&name), seq));
        let held = t.by_node.entry(name).or_default();
        held.insert(seq, NodeConn { peer, conn: c });
        if held.len() <= self.limits.max_connections_per_node {
            return;
        }
        let Some((_, oldest)) = held.pop_first() else {
            return;
        };
        oldest.conn.close();
        self.evicted.fetch_add(1, Ordering::Relaxed);
        if t.open
            .get(&oldest.peer)
            .is_some_and(|o| Arc::ptr_eq(o, &oldest.conn))
        {
            t.open.remove(&oldest.peer);
        }
        tracing::debug!(node, peer = %oldest.peer, "a node's oldest connection closed: it opened more than limits.max_connections_per_node");
    }

    /// Remembers what the TLS connection from `peer` proved: the entry
    /// lives exactly as long as the connection (see [`crate::auth`] for why
    /// that is as safe as a check per call). Whether the connection now
    /// holds it (a connection whose address was still taken never does).
    pub fn prove(&self, peer: Option<SocketAddr>, proven: Proven) -> bool {
        let Some(peer) = peer else { return false };
        match lock(&self.table).open.get(&peer) {
            Some(c) if c.cacheable => c.principal.get_or_init(|| proven.clone()) == &proven,
            _ => false,
        }
    }

    /// What the open connection from `peer` proved, if anything.
    pub fn proven(&self, peer: Option<SocketAddr>) -> Option<Proven> {
        let peer = peer?;
        lock(&self.table)
            .open
            .get(&peer)
            .and_then(|c| c.principal.get().cloned())
    }

    /// Notes that the controller could not take more connections.
    pub fn mark_saturated(&self) {
        *lock(&self.last_saturated) = Some(Instant::now());
    }

    /// The last moment the controller was full, if ever.
    pub fn last_saturated(&self) -> Option<Instant> {
        *lock(&self.last_saturated)
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        lock(&self.table).open.len()
    }

    /// Connections closed at once, and connections evicted, so far.
    pub fn refused_and_evicted(&self) -> (u64, u64) {
        (
            self.refused.load(Ordering::Relaxed),
            self.evicted.load(Ordering::Relaxed),
        )
    }
}

/// A connection's place in [`Connections`], given back on drop.
pub struct Slot {
    conns: Arc<Connections>,
    peer: SocketAddr,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = lock(&self.conns.table);
        let ours = t
            .open
            .get(&self.peer)
            .is_some_and(|c| Arc::ptr_eq(c, &self.conn));
        if ours {
            t.open.remove(&self.peer);
            if !self.conn.authenticated.load(Ordering::Acquire) {
                t.release_source(self.peer.ip());
            }
        }
        t.release_node(&self.conn);
    }
}

/// An accepted stream that fails once its connection is closed from
/// outside (evicted) or stays unauthenticated too long.
pub struct Tracked<S> {
    inner: S,
    slot: Slot,
    idle_deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> Tracked<S> {
    fn new(inner: S, slot: Slot) -> Self {
        let idle = slot.conns.limits.unauthenticated_idle;
        Tracked {
            inner,
            slot,
            idle_deadline: Some(Box::pin(tokio::time::sleep(idle))),
        }
    }

    /// Why the connection must end now, if it must.
    fn ended(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let conn = &self.slot.conn;
        if conn.closed.load(Ordering::Acquire) {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed to make room",
            ));
        }
        {
            // Every read and write polls here: clone the waker only when
            // it changed.
            let mut waker = lock(&conn.waker);
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        if conn.authenticated.load(Ordering::Acquire) {
            self.idle_deadline = None;
        } else if let Some(d) = &mut self.idle_deadline
            && d.as_mut().poll(cx).is_ready()
        {
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "no authenticated call in time",
            ));
        }
        None
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.ended(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.ended(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The inner stream's connection info: with tonic's TLS on top, requests
/// carry `TlsConnectInfo<TcpConnectInfo>`, so `remote_addr()` and
/// `peer_certs()` (mTLS) work as with tonic's own listener.
impl<S: Connected> Connected for Tracked<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Pause after `accept` failed for lack of resources.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener as tonic's incoming stream of [`Tracked`] connections.
pub struct Incoming {
    listener: TcpListener,
    conns: Arc<Connections>,
    backoff: Option<Pin<Box<Sleep>>>,
    last_warning: Option<Instant>,
}

impl Incoming {
    /// Accepts on `listener` within `conns`' limits.
    pub fn new(listener: TcpListener, conns: Arc<Connections>) -> Self {
        Incoming {
            listener,
            conns,
            backoff: None,
            last_warning: None,
        }
    }

    /// At most one warning every 10 s: a flood must not flood the log.
    fn warn(&mut self, what: &str, detail: &dyn std::fmt::Display) {
        let due = self
            .last_warning
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10));
        if due {
            self.last_warning = Some(Instant::now());
            let (refused, evicted) = self.conns.refused_and_evicted();
            tracing::warn!(open = self.conns.open(), refused, evicted, %detail, "{what}");
        }
    }
}

/// `accept` errors that mean the process or system is out of something.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if [23, 24, 105, 12].contains(&code) // ENFILE, EMFILE, ENOBUFS, ENOMEM
    )
}

impl Stream for Incoming {
    type Item = io::Result<Tracked<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = &mut this.backoff {
                if b.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.backoff = None;
            }
            let (stream, peer) = match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(accepted)) => accepted,
                Poll::Ready(Err(e)) if out_of_resources(&e) => {
                    this.conns.mark_saturated();
                    this.warn("cannot accept connections: out of resources", &e);
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                    continue;
                }
                // The peer gave up before we got to it, and the like.
                Poll::Ready(Err(_)) => continue,
            };
            match this.conns.admit(peer) {
                Ok(slot) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    return Poll::Ready(Some(Ok(Tracked::new(stream, slot))));
                }
                Err(why) => {
                    drop(stream);
                    let detail = format!("{peer}: {why:?}");
                    this.warn("connections refused at the connection limits", &detail);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: usize) -> AcceptLimits {
        AcceptLimits {
            max_connections: total,
            max_unauthenticated_per_source: per_source,
            max_connections_per_node: 3,
            unauthenticated_idle: Duration::from_secs(30),
        }
    }

    /// More nodes connect at once than the standard library's queue of 128
    /// holds: each waits in the queue until accepted, none is lost (the
    /// kernel drops the handshakes it cannot queue).
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_accept_queue() {
        let burst = 200;
        // The kernel caps the queue at `net.core.somaxconn` (4,096 since
        // Linux 5.4): below the burst, this cannot tell 128 from more.
        let somaxconn: Option<usize> = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if somaxconn.is_none_or(|n| n < burst) {
            eprintln!("SKIP: net.core.somaxconn is {somaxconn:?}, below {burst}");
            return;
        }
        let listener = bind(addr("127.0.0.1:0")).expect("bind");
        let to = listener.local_addr().expect("address");
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..burst {
            connects.spawn(async move {
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(to)).await
            });
        }
        // Held open, sending nothing, until counted.
        let mut clients = Vec::new();
        while let Some(done) = connects.join_next().await {
            if let Ok(Ok(Ok(stream))) = done {
                clients.push(stream);
            }
        }
        let mut accepted = 0;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
        {
            accepted += 1;
        }
        assert_eq!(
            accepted,
            burst,
            "connections accepted of a burst of {burst} ({} connected)",
            clients.len()
        );
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_holds_a_bounded_number_of_unauthenticated_connections() {
        let c = Connections::new(limits(100, 2));
        let _a = c.admit(addr("10.0.0.1:1")).unwrap();
        let b = c.admit(addr("10.0.0.1:2")).unwrap();
        assert_eq!(c.admit(addr("10.0.0.1:3")).err(), Some(Refused::PerSource));
        assert!(
            c.admit(addr("10.0.0.2:1")).is_ok(),
            "other sources unaffected"
        );
        // Authenticated connections do not count against their source.
        c.authenticated(Some(addr("10.0.0.1:2")));
        let _c = c.admit(addr("10.0.0.1:3")).unwrap();
        drop(b);
        assert_eq!(c.open(), 2);
    }

    /// A connection whose end is not handled yet when its address comes
    /// back (reset, then reconnected from the same port) still gives back
    /// its count: the source is not shut out after a few such races.
    #[test]
    fn an_address_reused_before_its_connection_ended_keeps_the_count_right() {
        let c = Connections::new(limits(100, 2));
        for _ in 0..5 {
            let old = c.admit(addr("10.0.0.1:1")).unwrap();
            let new = c.admit(addr("10.0.0.1:1")).unwrap();
            drop(old);
            drop(new);
        }
        assert_eq!(c.open(), 0);
        let _a = c.admit(addr("10.0.0.1:2")).expect("the source's first");
        let _b = c.admit(addr("10.0.0.1:3")).expect("and its second");
    }

    #[test]
    fn when_full_the_oldest_unauthenticated_connection_makes_room() {
        let c = Connections::new(limits(2, 10));
        let node = c.admit(addr("10.0.0.9:1")).unwrap();
        c.authenticated(Some(addr("10.0.0.9:1")));
        let idle = c.admit(addr("10.0.0.1:1")).unwrap();
        assert!(c.last_saturated().is_none());
        let _new = c.admit(addr("10.0.0.2:1")).unwrap();
        assert!(idle.conn.closed.load(Ordering::Acquire), "evicted");
        assert!(!node.conn.closed.load(Ordering::Acquire), "never the node");
        assert!(c.last_saturated().is_some());
        c.authenticated(Some(addr("10.0.0.2:1")));
        assert_eq!(
            c.admit(addr("10.0.0.3:1")).err(),
            Some(Refused::Full),
            "only authenticated connections left"
        );
        drop(idle);
        assert_eq!(c.open(), 2, "an evicted slot is not released twice");
    }

    #[test]
    fn a_node_holds_a_bounded_number_of_connections_and_its_oldest_goes_first() {
        let c = Connections::new(limits(100, 10));
        let slots: Vec<Slot> = (1..=4)
            .map(|port| {
                let peer = addr(&format!("10.0.0.1:{port}"));
                let slot = c.admit(peer).unwrap();
                c.authenticated_node(Some(peer), "node-a");
                slot
            })
            .collect();
        let closed: Vec<bool> = slots
            .iter()
            .map(|s| s.conn.closed.load(Ordering::Acquire))
            .collect();
        assert_eq!(closed, [true, false, false, false], "the oldest closed");
        assert_eq!((c.open(), c.refused_and_evicted().1), (3, 1));
        // Later calls on a connection count it once.
        c.authenticated_node(Some(addr("10.0.0.1:4")), "node-a");
        assert_eq!(c.open(), 3);
        // Another node, and admins' connections, are not affected.
        let other = addr("10.0.0.2:1");
        let _other = c.admit(other).unwrap();
        c.authenticated_node(Some(other), "node-b");
        let admin = addr("10.0.0.3:1");
        let _admin = c.admit(admin).unwrap();
        c.authenticated(Some(admin));
        assert_eq!((c.open(), c.refused_and_evicted().1), (5, 1));
        // Closed connections give their place back; nothing is kept for a
        // node without connections.
        drop(slots);
        assert_eq!(c.open(), 2);
        assert!(!lock(&c.table).by_node.contains_key("node-a"));
    }

    #[test]
    fn a_nodes_oldest_is_its_first_to_call_and_is_closed_by_connection_not_address() {
        let c = Connections::new(AcceptLimits {
            max_connections_per_node: 2,
            ..limits(100, 10)
        });
        let (a, b, d) = (addr("10.0.0.1:1"), addr("10.0.0.1:2"), addr("10.0.0.1:3"));
        let slot_a = c.admit(a).unwrap();
        let slot_b = c.admit(b).unwrap();
        // Accepted first, authenticated last: not the oldest.
        c.authenticated_node(Some(b), "node-a");
        let slot_d = c.admit(d).unwrap();
        c.authenticated_node(Some(d), "node-a");
        c.authenticated_node(Some(a), "node-a");
        assert!(slot_b.conn.closed.load(Ordering::Acquire), "b called first");
        assert!(!slot_a.conn.closed.load(Ordering::Acquire));
        assert!(!slot_d.conn.closed.load(Ordering::Acquire));

        // d's address taken by a new connection (node-b's) before d's end
        // was handled: closing d must leave the newcomer alone.
        let newcomer = c.admit(d).unwrap();
        c.authenticated_node(Some(d), "node-b");
        let e = addr("10.0.0.1:4");
        let _slot_e = c.admit(e).unwrap();
        c.authenticated_node(Some(e), "node-a");
        assert!(slot_d.conn.closed.load(Ordering::Acquire), "d was next");
        assert!(!newcomer.conn.closed.load(Ordering::Acquire));
        assert!(
            lock(&c.table)
                .open
                .get(&d)
                .is_some_and(|o| Arc::ptr_eq(o, &newcomer.conn)),
            "the newcomer keeps its place"
        );
    }
}
