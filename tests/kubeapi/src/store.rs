//! Objects, resource versions and the event history watches replay.
//!
//! Like etcd behind a real API server, one counter numbers every change
//! of every kind; a list reports the counter as its `resourceVersion` and
//! a watch from version N replays the changes after N, then follows live
//! ones. [`Store::compact`] forgets the history (etcd compaction): a watch
//! from before that point gets `410 Gone` and must re-list.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ListableResource, Metadata, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::status::ApiError;

/// An object's key: namespace (empty for cluster-scoped kinds) and name.
pub type Key = (String, String);

/// A kind the server stores.
pub trait Stored:
    Resource
    + ListableResource
    + Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Send
    + Sync
    + 'static
{
    /// Whether objects live in a namespace.
    const NAMESPACED: bool;
    /// This kind's objects.
    fn table(objects: &mut Objects) -> &mut BTreeMap<Key, Self>;
}

impl Stored for Pod {
    const NAMESPACED: bool = true;
    fn table(objects: &mut Objects) -> &mut BTreeMap<Key, Self> {
        &mut objects.pods
    }
}

impl Stored for Node {
    const NAMESPACED: bool = false;
    fn table(objects: &mut Objects) -> &mut BTreeMap<Key, Self> {
        &mut objects.nodes
    }
}

impl Stored for MutatingWebhookConfiguration {
    const NAMESPACED: bool = false;
    fn table(objects: &mut Objects) -> &mut BTreeMap<Key, Self> {
        &mut objects.mutating
    }
}

impl Stored for ValidatingWebhookConfiguration {
    const NAMESPACED: bool = false;
    fn table(objects: &mut Objects) -> &mut BTreeMap<Key, Self> {
        &mut objects.validating
    }
}

/// Every object, by kind.
#[derive(Default)]
pub struct Objects {
    pods: BTreeMap<Key, Pod>,
    nodes: BTreeMap<Key, Node>,
    mutating: BTreeMap<Key, MutatingWebhookConfiguration>,
    validating: BTreeMap<Key, ValidatingWebhookConfiguration>,
}

/// One change, ready to send to watchers.
#[derive(Debug)]
pub struct Change {
    /// The resource version the change created.
    pub rv: u64,
    /// Kind (URL path segment: `pods`, `nodes`).
    pub plural: &'static str,
    /// Namespace of the object (empty for cluster-scoped kinds).
    pub namespace: String,
    /// The watch event, one JSON line with its newline.
    pub line: Vec<u8>,
}

/// What a watch from a version starts with.
pub enum Replay {
    /// The changes after that version (possibly none), then live ones.
    From(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>),
    /// That version is compacted away.
    Expired(ApiError),
}

struct Inner {
    rv: u64,
    /// Changes after this version are all in `history`.
    compacted: u64,
    objects: Objects,
    history: VecDeque<Arc<Change>>,
}

/// The server's state.
pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                compacted: 1,
                objects: Objects::default(),
                history: VecDeque::new(),
            }),
            changes: broadcast::channel(4096).0,
        }
    }
}

/// Kinds of change, as watch events name them.
#[derive(Debug, Clone, Copy)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted (the object as it was last).
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One watch event line: `{"type": ..., "object": ...}` and a newline.
pub fn event_line(kind: &str, object: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({ "type": kind, "object": object }))
        .unwrap_or_default();
    line.push(b'\n');
    line
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    pub fn get<K: Stored>(&self, namespace: &str, name: &str) -> Option<K> {
        K::table(&mut self.lock().objects)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a kind (in `namespace` if given) and the version they
    /// were read at.
    pub fn list<K: Stored>(&self, namespace: Option<&str>) -> (Vec<K>, u64) {
        let mut inner = self.lock();
        let rv = inner.rv;
        let items = K::table(&mut inner.objects)
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, o)| o.clone())
            .collect();
        (items, rv)
    }

    /// Creates `object`; fails if its name is taken.
    pub fn create<K: Stored>(&self, mut object: K) -> Result<K, ApiError> {
        let key = key_of(&object);
        let mut inner = self.lock();
        if K::table(&mut inner.objects).contains_key(&key) {
            return Err(ApiError::already_exists(K::URL_PATH_SEGMENT, &key.1));
        }
        let meta = object.metadata_mut();
        // The server names every object's incarnation, whatever was sent.
        meta.uid = Some(new_uid());
        meta.creation_timestamp.get_or_insert_with(now);
        meta.generation = Some(1);
        self.commit(&mut inner, key, Some(object), EventType::Added)
            .ok_or_else(|| ApiError::internal("created object vanished"))
    }

    /// Replaces an existing object through `change`; its UID and creation
    /// time stay.
    pub fn update<K: Stored>(
        &self,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut K) -> Result<(), ApiError>,
    ) -> Result<K, ApiError> {
        let key = (namespace.to_string(), name.to_string());
        let mut inner = self.lock();
        let Some(old) = K::table(&mut inner.objects).get(&key).cloned() else {
            return Err(ApiError::not_found(K::URL_PATH_SEGMENT, name));
        };
        let mut new = old.clone();
        change(&mut new)?;
        let (o, n) = (old.metadata(), new.metadata_mut());
        n.uid = o.uid.clone();
        n.creation_timestamp = o.creation_timestamp.clone();
        n.name = o.name.clone();
        n.namespace = o.namespace.clone();
        n.generation = o.generation;
        self.commit(&mut inner, key, Some(new), EventType::Modified)
            .ok_or_else(|| ApiError::internal("updated object vanished"))
    }

    /// Deletes an object; returns it as it was last.
    pub fn delete<K: Stored>(&self, namespace: &str, name: &str) -> Result<K, ApiError> {
        let key = (namespace.to_string(), name.to_string());
        let mut inner = self.lock();
        let Some(old) = K::table(&mut inner.objects).get(&key).cloned() else {
            return Err(ApiError::not_found(K::URL_PATH_SEGMENT, name));
        };
        self.commit::<K>(&mut inner, key, None, EventType::Deleted);
        let mut gone = old;
        gone.metadata_mut().resource_version = Some(inner.rv.to_string());
        Ok(gone)
    }

    /// Stores (or removes) one object under a new resource version and
    /// tells watchers.
    fn commit<K: Stored>(
        &self,
        inner: &mut Inner,
        key: Key,
        object: Option<K>,
        event: EventType,
    ) -> Option<K> {
        inner.rv += 1;
        let rv = inner.rv;
        let table = K::table(&mut inner.objects);
        let shown = match object {
            Some(mut o) => {
                o.metadata_mut().resource_version = Some(rv.to_string());
                table.insert(key.clone(), o.clone());
                o
            }
            None => {
                let mut o = table.remove(&key)?;
                o.metadata_mut().resource_version = Some(rv.to_string());
                o
            }
        };
        let change = Arc::new(Change {
            rv,
            plural: K::URL_PATH_SEGMENT,
            namespace: key.0,
            line: event_line(event.as_str(), &shown),
        });
        inner.history.push_back(Arc::clone(&change));
        // No watcher is fine: the history keeps the change.
        let _ = self.changes.send(change);
        Some(shown)
    }

    /// Forgets every change so far: watches from any earlier version
    /// get 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.compacted = inner.rv;
        inner.history.clear();
    }

    /// The changes after `rv` and a subscription to later ones, taken
    /// together so nothing falls between them.
    pub fn replay_from(&self, rv: u64) -> Replay {
        let inner = self.lock();
        if rv < inner.compacted {
            return Replay::Expired(ApiError::expired(rv, inner.compacted));
        }
        let past = inner
            .history
            .iter()
            .filter(|c| c.rv > rv)
            .cloned()
            .collect();
        Replay::From(past, self.changes.subscribe())
    }

    /// Every object of a kind as `ADDED` events, the version they were
    /// read at, and a subscription to later changes (a watch without a
    /// version starts this way).
    pub fn snapshot<K: Stored>(
        &self,
        namespace: Option<&str>,
    ) -> (Vec<Vec<u8>>, u64, broadcast::Receiver<Arc<Change>>) {
        let mut inner = self.lock();
        let rv = inner.rv;
        let lines = K::table(&mut inner.objects)
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, o)| event_line("ADDED", o))
            .collect();
        (lines, rv, self.changes.subscribe())
    }
}

fn key_of<K: Stored>(object: &K) -> Key {
    let meta = object.metadata();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The current time as object metadata carries it.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(0);
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default(),
    )
}

/// A random UID in the API server's format.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
