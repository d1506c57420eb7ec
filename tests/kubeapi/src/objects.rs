//! The REST verbs every stored kind answers: list (or watch), get,
//! create, replace, merge-patch and delete.
//!
//! Routes give the namespace as `{ns}` (absent for cluster-scoped kinds
//! and all-namespace lists) and the object's name as `{name}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;

use crate::server::Shared;
use crate::status::{ApiError, json_response};
use crate::store::Stored;
use crate::watch::{WatchParams, WatchSource, watch};

/// Route parameters.
pub type Params = Path<HashMap<String, String>>;

/// The query string as a map (values are plain: versions, booleans,
/// numbers; selectors are ignored).
pub fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `GET` on a collection: a list, or a watch with `?watch=true`.
pub async fn list<K: Stored>(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    uri: Uri,
) -> Response {
    let q = query(&uri);
    let namespace = params.get("ns").cloned();
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        let resource_version = match q.get("resourceVersion").map(String::as_str) {
            None | Some("" | "0") => None,
            Some(v) => match v.parse() {
                Ok(v) => Some(v),
                Err(_) => {
                    return ApiError::bad_request(format!("invalid resourceVersion {v:?}"))
                        .into_response();
                }
            },
        };
        let params = WatchParams {
            resource_version,
            bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
            timeout: q
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs),
        };
        let src = WatchSource {
            store: &shared.store,
            cut: shared.cut.subscribe(),
            bookmark_every: shared.bookmark_every,
        };
        return watch::<K>(src, namespace, params);
    }
    let (items, rv) = shared.store.list::<K>(namespace.as_deref());
    let body = serde_json::json!({
        "apiVersion": K::API_VERSION,
        "kind": K::LIST_KIND,
        "metadata": ListMeta { resource_version: Some(rv.to_string()), ..Default::default() },
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

fn namespace_and_name(params: &HashMap<String, String>) -> (String, String) {
    (
        params.get("ns").cloned().unwrap_or_default(),
        params.get("name").cloned().unwrap_or_default(),
    )
}

/// `GET` on one object.
pub async fn get<K: Stored>(State(shared): State<Arc<Shared>>, Path(params): Params) -> Response {
    let (ns, name) = namespace_and_name(&params);
    match shared.store.get::<K>(&ns, &name) {
        Some(o) => json_response(StatusCode::OK, &o),
        None => ApiError::not_found(K::URL_PATH_SEGMENT, &name).into_response(),
    }
}

/// Parses a request body as `K`, checking its namespace against the URL.
pub fn parse_body<K: Stored>(namespace: &str, body: &[u8]) -> Result<K, ApiError> {
    let mut object: K = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("cannot decode {} body: {e}", K::KIND)))?;
    let meta = object.metadata_mut();
    if meta.name.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} \"\" is invalid: metadata.name: Required value",
            K::KIND
        )));
    }
    if K::NAMESPACED {
        match meta.namespace.as_deref() {
            None | Some("") => meta.namespace = Some(namespace.to_string()),
            Some(n) if n != namespace => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({n}) does not match the namespace sent on the request ({namespace})"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(object)
}

/// `POST` on a collection.
pub async fn create<K: Stored>(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    body: Bytes,
) -> Response {
    let (ns, _) = namespace_and_name(&params);
    let created = parse_body::<K>(&ns, &body).and_then(|o| shared.store.create(o));
    match created {
        Ok(o) => json_response(StatusCode::CREATED, &o),
        Err(e) => e.into_response(),
    }
}

/// `PUT` on one object.
pub async fn replace<K: Stored>(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    body: Bytes,
) -> Response {
    let (ns, name) = namespace_and_name(&params);
    let result = parse_body::<K>(&ns, &body).and_then(|new| {
        shared.store.update::<K>(&ns, &name, |o| {
            *o = new;
            Ok(())
        })
    });
    match result {
        Ok(o) => json_response(StatusCode::OK, &o),
        Err(e) => e.into_response(),
    }
}

/// `PATCH` on one object: JSON merge patch (RFC 7386). A strategic merge
/// patch is applied the same way, which is what it amounts to for maps
/// such as labels and annotations.
pub async fn patch<K: Stored>(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (ns, name) = namespace_and_name(&params);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !matches!(
        content_type,
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("patch type {content_type:?} is not supported by this test server"),
        )
            .into_response();
    }
    let patch: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return ApiError::bad_request(format!("invalid patch: {e}")).into_response(),
    };
    let result = shared.store.update::<K>(&ns, &name, |o| {
        let mut value = serde_json::to_value(&*o).map_err(|e| ApiError::internal(e.to_string()))?;
        merge_patch(&mut value, &patch);
        *o = serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request(format!("patched object is invalid: {e}")))?;
        Ok(())
    });
    match result {
        Ok(o) => json_response(StatusCode::OK, &o),
        Err(e) => e.into_response(),
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else
/// replaces.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(Default::default());
    }
    if let serde_json::Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
    }
}

/// `DELETE` on one object: gone at once (no finalizers, no grace).
pub async fn delete<K: Stored>(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
) -> Response {
    let (ns, name) = namespace_and_name(&params);
    match shared.store.delete::<K>(&ns, &name) {
        Ok(o) => json_response(StatusCode::OK, &o),
        Err(e) => e.into_response(),
    }
}
