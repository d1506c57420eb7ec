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

/// `PATCH` on one object: JSON merge patch (RFC 7386), or a strategic
/// merge patch as far as [`strategic_merge_patch`] models it.
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
        if content_type == "application/strategic-merge-patch+json" {
            strategic_merge_patch(&mut value, &patch);
        } else {
            merge_patch(&mut value, &patch);
        }
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

/// A strategic merge patch, as far as `kubectl apply` needs it: like a
/// merge patch, except that lists of objects keyed by `name` (containers,
/// env, volumes, ports) merge element by element, and `$` directives
/// (`$setElementOrder`, `$retainKeys`, `$patch`) are ignored. So
/// re-applying a manifest keeps what admission webhooks added to such
/// lists, as the API server does.
pub fn strategic_merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    let named = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k) {
                    strategic_merge_patch(existing, v);
                } else {
                    let mut fresh = Value::Null;
                    strategic_merge_patch(&mut fresh, v);
                    t.insert(k.clone(), fresh);
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if !p.is_empty() && p.iter().chain(t.iter()).all(|e| named(e).is_some()) =>
        {
            for item in p {
                match t.iter_mut().find(|e| named(e) == named(item)) {
                    Some(existing) => strategic_merge_patch(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (target, patch) => {
            let mut patch = patch.clone();
            strip_directives(&mut patch);
            *target = patch;
        }
    }
}

fn strip_directives(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
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

#[cfg(test)]
mod tests {
    use super::strategic_merge_patch;
    use serde_json::json;

    #[test]
    fn reapplying_keeps_what_admission_added_to_named_lists() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}, {"name": "KRB5_KTNAME", "value": "/k"}]},
            {"name": "sidecar", "image": "s:1"},
        ]}});
        let before = pod.clone();
        // What kubectl apply sends when the live lists are longer.
        strategic_merge_patch(
            &mut pod,
            &json!({"spec": {"$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{"$setElementOrder/env": [{"name": "A"}], "name": "app"}]}}),
        );
        assert_eq!(pod, before);
        strategic_merge_patch(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "app", "image": "a:2"}]}, "metadata": {"labels": {"x": "y"}}}),
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], "a:2");
        assert_eq!(
            pod["spec"]["containers"][0]["env"][1]["name"],
            "KRB5_KTNAME"
        );
        assert_eq!(pod["spec"]["containers"][1]["name"], "sidecar");
        assert_eq!(pod["metadata"]["labels"]["x"], "y");
    }
}
