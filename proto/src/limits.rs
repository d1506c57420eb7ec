//! How many entries a request's repeated fields may carry. The codec
//! checks them on the wire, before a message is decoded
//! ([`crate::codec`]); the services check them again on what they are
//! handed, with the same words.
//!
//! An empty entry takes two bytes to send and a hundred or more to hold
//! once decoded, so a message within gRPC's 4 MiB limit could otherwise
//! make the receiver allocate 50 to 80 times its size, for anyone who can
//! reach the port: the caller is only authenticated once the message is
//! decoded.

/// Volumes in one `FetchBundles` call at most. A rotation of a role with
/// thousands of volumes on a node is still a handful of calls; the
/// request (a pod token of a few KiB per volume) stays far under gRPC's
/// 4 MiB message limit; one slow batch holds back at most this many
/// refreshes; and the batch's audit group (a record per volume and
/// credential) is one durable write of bounded size.
pub const MAX_BATCH: usize = 256;

/// Volume ids one heartbeat may list at most (far above what a node
/// mounts).
pub const MAX_HELD: usize = 10_000;

/// Why a `FetchBundles` call with `n` volumes is refused, if it is.
pub fn batch_too_large(n: usize) -> Option<String> {
    (n > MAX_BATCH).then(|| format!("volumes: {n} volumes in one call, at most {MAX_BATCH}"))
}

/// Why a heartbeat listing `n` volume ids is refused, if it is.
pub fn heartbeat_too_large(n: usize) -> Option<String> {
    (n > MAX_HELD).then(|| format!("volume_ids lists {n} volumes; at most {MAX_HELD} are allowed"))
}
