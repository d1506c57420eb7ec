//! Failures as the API server reports them: a `Status` object with the
//! HTTP code, a machine-readable reason and a message kubectl prints.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusDetails};

/// A failed request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    code: u16,
    reason: String,
    message: String,
    kind: Option<(String, String)>,
}

impl ApiError {
    /// 404: `kind` (plural) `name` does not exist.
    pub fn not_found(plural: &str, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound".into(),
            message: format!("{plural} \"{name}\" not found"),
            kind: Some((plural.into(), name.into())),
        }
    }

    /// 409: an object of that name exists.
    pub fn already_exists(plural: &str, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists".into(),
            message: format!("{plural} \"{name}\" already exists"),
            kind: Some((plural.into(), name.into())),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            code: 400,
            reason: "BadRequest".into(),
            message: message.into(),
            kind: None,
        }
    }

    /// 410: the resource version asked for is compacted away.
    pub fn expired(asked: u64, oldest: u64) -> Self {
        ApiError {
            code: 410,
            reason: "Expired".into(),
            message: format!("too old resource version: {asked} ({oldest})"),
            kind: None,
        }
    }

    /// 401: no or a wrong bearer token.
    pub fn unauthorized() -> Self {
        ApiError {
            code: 401,
            reason: "Unauthorized".into(),
            message: "Unauthorized".into(),
            kind: None,
        }
    }

    /// An admission webhook refused the object: the webhook's code (at
    /// least 400) and reason, and its message after the webhook's name, as
    /// the real server words it.
    pub fn denied_by_webhook(webhook: &str, code: u16, reason: &str, message: &str) -> Self {
        let denied = format!("admission webhook \"{webhook}\" denied the request");
        let message = match (message, reason) {
            ("", "") => format!("{denied} without explanation"),
            ("", r) => format!("{denied}: {r}"),
            (m, _) => format!("{denied}: {m}"),
        };
        ApiError {
            code: code.max(400),
            reason: reason.into(),
            message,
            kind: None,
        }
    }

    /// 500: a webhook could not be called (failurePolicy Fail).
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            code: 500,
            reason: "InternalError".into(),
            message: message.into(),
            kind: None,
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code)),
            reason: Some(self.reason.clone()).filter(|r| !r.is_empty()),
            message: Some(self.message.clone()),
            status: Some("Failure".into()),
            details: self.kind.as_ref().map(|(kind, name)| StatusDetails {
                kind: Some(kind.clone()),
                name: Some(name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.status())
    }
}

/// A JSON body with its content type.
pub fn json_response(code: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = (code, bytes).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
