//! The one error type handlers return; it alone maps failures to HTTP status codes and the JSON
//! body `{"error": {"code", "message"}}`. Internal details go to the log, not the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::jobs::AdmitError;
use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// No credential, or one that is not valid (answered with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid credential of a caller that is not allowed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the upload is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<AdmitError> for ApiError {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::Busy(_) => ApiError::Busy {
                message: e.to_string(),
                retry_after: 30,
            },
            AdmitError::Draining | AdmitError::Queue(_) => ApiError::Unavailable(e.to_string()),
            AdmitError::Conflict(_) | AdmitError::Made(_) => ApiError::Conflict(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge(limit) => ApiError::TooLarge(limit),
            StoreError::BadKey(_) => ApiError::BadRequest(e.to_string()),
            StoreError::NotFound(_) => ApiError::NotFound(e.to_string()),
            StoreError::Changed(_) => ApiError::Conflict(e.to_string()),
            // The bucket is briefly unavailable or the disk is full: the caller may try again.
            StoreError::Remote(_) | StoreError::NoRoom { .. } => {
                ApiError::Unavailable(e.to_string())
            }
            // The service's own permissions are wrong: the operator's problem, in the log.
            StoreError::Denied(_) | StoreError::Io(_) => {
                ApiError::Unexpected(anyhow::Error::new(e))
            }
        }
    }
}

impl ApiError {
    /// The answer to a request refused while its body may still be arriving: on HTTP/1 the
    /// connection closes after it, since the rest of the body is read away, not used.
    pub fn into_refusal(self, version: axum::http::Version) -> Response {
        let mut response = self.into_response();
        if version < axum::http::Version::HTTP_2 {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            ApiError::Unexpected(e) => {
                tracing::error!("internal error: {e:#}");
                "internal error; see the service's logs".to_string()
            }
            other => other.to_string(),
        };
        let body = Json(json!({"error": {"code": code, "message": message}}));
        let mut response = (status, body).into_response();
        match self {
            ApiError::Busy { retry_after, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="video-transcoder""#),
                );
            }
            _ => {}
        }
        response
    }
}
