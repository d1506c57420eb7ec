//! Discovery: what clients ask before anything else (`/version`, the
//! legacy `/api`, `/apis` groups and each group version's resources).
//!
//! Only the legacy (unaggregated) documents are served; kubectl asks for
//! aggregated discovery first and falls back to these when the answer is
//! plain `application/json`.

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ServerAddressByClientCIDR,
};
use k8s_openapi::apimachinery::pkg::version::Info;

use crate::status::json_response;

/// The Kubernetes version the server claims (the API kcred is built against).
pub const MINOR: &str = "33";

/// `GET /version`.
pub async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &Info {
            major: "1".into(),
            minor: MINOR.into(),
            git_version: format!("v1.{MINOR}.0-kcred-test"),
            git_commit: "0000000000000000000000000000000000000000".into(),
            git_tree_state: "clean".into(),
            build_date: "2026-01-01T00:00:00Z".into(),
            go_version: "go1.24".into(),
            compiler: "gc".into(),
            platform: "linux/amd64".into(),
            ..Default::default()
        },
    )
}

/// `GET /api`.
pub async fn api() -> Response {
    json_response(
        StatusCode::OK,
        &APIVersions {
            versions: vec!["v1".into()],
            server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
                client_cidr: "0.0.0.0/0".into(),
                server_address: "127.0.0.1".into(),
            }],
        },
    )
}

fn resource(
    name: &str,
    kind: &str,
    namespaced: bool,
    verbs: &[&str],
    short: &[&str],
) -> APIResource {
    APIResource {
        name: name.into(),
        singular_name: kind.to_lowercase(),
        namespaced,
        kind: kind.into(),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        short_names: Some(short.iter().map(|v| v.to_string()).collect()),
        ..Default::default()
    }
}

const OBJECT_VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// `GET /api/v1`.
pub async fn core_v1() -> Response {
    json_response(
        StatusCode::OK,
        &APIResourceList {
            group_version: "v1".into(),
            resources: vec![
                resource("pods", "Pod", true, &OBJECT_VERBS, &["po"]),
                resource("nodes", "Node", false, &OBJECT_VERBS, &["no"]),
            ],
        },
    )
}

fn group(name: &str) -> APIGroup {
    let v = GroupVersionForDiscovery {
        group_version: format!("{name}/v1"),
        version: "v1".into(),
    };
    APIGroup {
        name: name.into(),
        versions: vec![v.clone()],
        preferred_version: Some(v),
        server_address_by_client_cidrs: None,
    }
}

/// `GET /apis`.
pub async fn groups() -> Response {
    json_response(
        StatusCode::OK,
        &APIGroupList {
            groups: vec![
                group("authentication.k8s.io"),
                group("admissionregistration.k8s.io"),
            ],
        },
    )
}

/// `GET /apis/authentication.k8s.io/v1`.
pub async fn authentication_v1() -> Response {
    json_response(
        StatusCode::OK,
        &APIResourceList {
            group_version: "authentication.k8s.io/v1".into(),
            resources: vec![resource(
                "tokenreviews",
                "TokenReview",
                false,
                &["create"],
                &[],
            )],
        },
    )
}

/// `GET /apis/admissionregistration.k8s.io/v1`.
pub async fn admissionregistration_v1() -> Response {
    json_response(
        StatusCode::OK,
        &APIResourceList {
            group_version: "admissionregistration.k8s.io/v1".into(),
            resources: vec![
                resource(
                    "mutatingwebhookconfigurations",
                    "MutatingWebhookConfiguration",
                    false,
                    &OBJECT_VERBS,
                    &[],
                ),
                resource(
                    "validatingwebhookconfigurations",
                    "ValidatingWebhookConfiguration",
                    false,
                    &OBJECT_VERBS,
                    &[],
                ),
            ],
        },
    )
}
