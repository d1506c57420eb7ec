//! The etcd backend: records as keys `<prefix><table>/<name>` in an etcd
//! cluster that several controllers share.
//!
//! The store's interface is synchronous (callers run it on blocking
//! threads, as they do redb's fsyncs), while the etcd client is async. The
//! backend owns a small runtime of its own: each call is sent there and
//! waited for with a deadline, so it works from any thread, inside another
//! runtime or not. Any failure (no leader, no answer in time, auth) is a
//! [`StoreError::Db`]: the caller stops issuing instead of guessing.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp,
};
use zeroize::Zeroizing;

use super::backend::StoreBackend;
use super::etcd_members::{self, never_sent, watch_members};
use super::{StoreError, Table};

/// Values per etcd transaction (etcd refuses more than `--max-txn-ops`,
/// 128 by default).
const TXN_OPS: usize = 100;
/// Keys per page when listing a table.
const PAGE: i64 = 500;

/// How to reach etcd.
pub struct EtcdOptions {
    /// Client URLs of the members.
    pub endpoints: Vec<String>,
    /// Key prefix, ending in `/`.
    pub prefix: String,
    /// CA of the members' certificates (PEM), for https endpoints.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM).
    pub identity_pem: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    /// etcd user and password.
    pub user: Option<(String, Zeroizing<String>)>,
    /// Longest wait for one request.
    pub timeout: Duration,
}

impl EtcdOptions {
    /// Plain-text endpoints, no auth (tests, and etcd on a trusted loopback).
    pub fn plain(endpoints: Vec<String>, prefix: &str) -> Self {
        EtcdOptions {
            endpoints,
            prefix: prefix.to_string(),
            ca_pem: None,
            identity_pem: None,
            user: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A connection to an etcd cluster.
pub struct Etcd {
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    prefix: String,
    timeout: Duration,
    endpoints: String,
    /// Resends allowed for a request that never left.
    resends: usize,
}

fn etcd_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(format!("etcd {what}: {e}"))
}

/// Sends `request` (through `f`) until it is answered or fails after
/// reaching etcd, or `timeout` passes: a request that never left (its
/// member refused the connection) goes again, to another member, at most
/// `resends` times with a doubling pause, so an etcd that refuses
/// everywhere fails the request quickly instead of being asked in a loop.
async fn retrying<T, R, F, Fut>(
    client: Client,
    timeout: Duration,
    resends: usize,
    request: R,
    f: F,
) -> Result<T, Failure>
where
    R: Clone,
    F: Fn(Client, R) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = FIRST_RESEND_PAUSE;
    let mut left = resends;
    loop {
        match tokio::time::timeout_at(deadline, f(client.clone(), request.clone())).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e))
                if left > 0 && never_sent(&e) && tokio::time::Instant::now() + pause < deadline =>
            {
                left -= 1;
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Ok(Err(e)) => return Err(Failure::Etcd(e)),
            Err(_) => return Err(Failure::Timeout),
        }
    }
}

/// Pause before the first resend of a request that never left.
const FIRST_RESEND_PAUSE: Duration = Duration::from_millis(10);

/// Resends allowed per request: enough that a request keeps finding a live
/// member while one in three refuses (the balancer picks at random) until
/// the member watcher takes the dead one out.
fn resends_for(members: usize) -> usize {
    2 * members + 1
}

/// Why a request failed.
enum Failure {
    Etcd(etcd_client::Error),
    Timeout,
}

impl Failure {
    fn into_store(self, what: &str, timeout: Duration) -> StoreError {
        match self {
            Failure::Etcd(e) => etcd_err(what, e),
            Failure::Timeout => {
                etcd_err(what, format!("no answer within {} ms", timeout.as_millis()))
            }
        }
    }
}

/// Runs `fut` on `runtime` and waits for it (it bounds its own time).
fn run_on<T, Fut>(runtime: &tokio::runtime::Runtime, what: &str, fut: Fut) -> Result<T, StoreError>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    // On a Tokio worker (a caller that did not use spawn_blocking), let the
    // runtime move its other tasks elsewhere while this one waits.
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let answer = if multi_thread {
        tokio::task::block_in_place(|| rx.recv())
    } else {
        rx.recv()
    };
    answer.unwrap_or_else(|_| Err(etcd_err(what, "client runtime stopped")))
}

impl Etcd {
    /// Connects and checks that the cluster answers (with a leader) before
    /// returning: a controller never starts on an etcd it cannot reach.
    pub fn connect(opts: EtcdOptions) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kcred-etcd")
            .enable_all()
            .build()
            .map_err(|e| etcd_err("runtime", e))?;
        let mut options = ConnectOptions::new()
            .with_timeout(opts.timeout)
            .with_connect_timeout(opts.timeout)
            .with_keep_alive(Duration::from_secs(5), opts.timeout)
            .with_require_leader(true);
        if let Some((user, password)) = &opts.user {
            options = options.with_user(user.clone(), password.as_str());
        }
        if let Some(ca) = &opts.ca_pem {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &opts.identity_pem {
                tls = tls.identity(Identity::from_pem(cert, key.as_slice()));
            }
            options = options.with_tls(tls);
        }
        let endpoints = opts.endpoints.join(",");
        let (eps, connect_with, timeout) = (opts.endpoints.clone(), options.clone(), opts.timeout);
        let client = run_on(&runtime, "connect", async move {
            tokio::time::timeout(timeout, Client::connect(eps, Some(connect_with)))
                .await
                .map_err(|_| Failure::Timeout)
                .and_then(|r| r.map_err(Failure::Etcd))
                .map_err(|f| f.into_store("connect", timeout))
        })
        .map_err(|e| StoreError::Db(format!("{endpoints}: {e}")))?;
        if opts.endpoints.len() > 1 {
            runtime.spawn(watch_members(
                client.clone(),
                opts.endpoints.clone(),
                options,
                opts.timeout.min(etcd_members::PROBE_EVERY),
            ));
        }
        let etcd = Etcd {
            runtime: Some(runtime),
            client,
            prefix: opts.prefix,
            timeout: opts.timeout,
            endpoints,
            resends: resends_for(opts.endpoints.len()),
        };
        etcd.count(Table::Authority)
            .map_err(|e| StoreError::Db(format!("{}: {e}", etcd.endpoints)))?;
        Ok(etcd)
    }

    fn run<T, R, F, Fut>(&self, what: &str, request: R, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        R: Clone + Send + 'static,
        F: Fn(Client, R) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| etcd_err(what, "client closed"))?;
        let (client, timeout, name) = (self.client.clone(), self.timeout, what.to_string());
        let resends = self.resends;
        run_on(runtime, what, async move {
            retrying(client, timeout, resends, request, f)
                .await
                .map_err(|e| e.into_store(&name, timeout))
        })
    }

    /// Runs an async etcd call on the client's own runtime and awaits it
    /// from any runtime, at most the request timeout: cluster coordination
    /// (locks, the shared budget, node heartbeats) is async, unlike the
    /// record interface. A call that never reached etcd is sent again, as
    /// in [`StoreBackend`] calls.
    pub(crate) async fn call<T, R, F, Fut>(
        &self,
        what: &str,
        request: R,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        R: Clone + Send + 'static,
        F: Fn(Client, R) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let handle = self
            .handle()
            .ok_or_else(|| etcd_err(what, "client closed"))?;
        let task = handle.spawn(retrying(
            self.client.clone(),
            self.timeout,
            self.resends,
            request,
            f,
        ));
        match task.await {
            Ok(r) => r.map_err(|e| e.into_store(what, self.timeout)),
            Err(_) => Err(etcd_err(what, "client runtime stopped")),
        }
    }

    /// The runtime the client lives on, for long-running coordination
    /// tasks (the leader election's lease).
    pub(crate) fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|r| r.handle().clone())
    }

    /// A client for coordination tasks spawned on [`Self::handle`].
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// A key outside the record tables, under the installation's prefix.
    pub(crate) fn raw_key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn table_prefix(&self, table: Table) -> String {
        format!("{}{}/", self.prefix, table.name())
    }

    fn key(&self, table: Table, name: &str) -> String {
        format!("{}{name}", self.table_prefix(table))
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl StoreBackend for Etcd {
    fn get(&self, table: Table, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(table, name);
        let mut resp = self.run(
            "get",
            key,
            |mut c, key| async move { c.get(key, None).await },
        )?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| kv.value().to_vec()))
    }

    fn put(&self, table: Table, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let (key, value) = (self.key(table, name), value.to_vec());
        self.run("put", (key, value), |mut c, (key, value)| async move {
            c.put(key, value, None).await
        })
        .map(|_| ())
    }

    fn put_if_absent(&self, table: Table, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let (key, value) = (self.key(table, name), value.to_vec());
        let resp = self.run("create", (key, value), |mut c, (key, value)| async move {
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value, None)]);
            c.txn(txn).await
        })?;
        Ok(resp.succeeded())
    }

    fn put_many(&self, table: Table, records: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for chunk in records.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(name, value)| TxnOp::put(self.key(table, name), value.clone(), None))
                .collect();
            self.run("txn", ops, |mut c, ops| async move {
                c.txn(Txn::new().and_then(ops)).await
            })?;
        }
        Ok(())
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = self.table_prefix(table);
        let end = prefix_end(&prefix);
        let mut start = prefix.clone().into_bytes();
        let mut out = Vec::new();
        loop {
            let (from, to) = (start.clone(), end.clone());
            let mut resp = self.run("list", (from, to), |mut c, (from, to)| async move {
                c.get(
                    from,
                    Some(GetOptions::new().with_range(to).with_limit(PAGE)),
                )
                .await
            })?;
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            start = last.key().to_vec();
            start.push(0);
            for kv in kvs {
                let name = kv
                    .key()
                    .strip_prefix(prefix.as_bytes())
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                out.push((name, kv.value().to_vec()));
            }
            if !more {
                break;
            }
        }
        Ok(out)
    }

    fn delete(&self, table: Table, name: &str) -> Result<(), StoreError> {
        let key = self.key(table, name);
        self.run("delete", key, |mut c, key| async move {
            c.delete(key, None).await
        })
        .map(|_| ())
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        let prefix = self.table_prefix(table);
        let resp = self.run("count", prefix, |mut c, prefix| async move {
            c.get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
        })?;
        Ok(u64::try_from(resp.count()).unwrap_or(0))
    }

    fn describe(&self) -> String {
        format!("etcd {} under {}", self.endpoints, self.prefix)
    }

    fn reads_locally(&self) -> bool {
        false
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a Tokio worker may not do; the
        // last reference may well be dropped on one.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_prefix_range_ends_after_every_key_in_it() {
        assert_eq!(
            prefix_end("/kcred/keytabs_v1/"),
            b"/kcred/keytabs_v10".to_vec()
        );
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
