//! The gateway's one error type: each variant is one HTTP answer. Internal errors are logged
//! and answered without a word about internals.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// What went wrong, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No API key, or one that is not known (401).
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthorized,
    /// The key may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The key's rate limit is reached; try again after the duration (429).
    #[error("rate limit reached; retry after {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    /// The key holds as much as it may at once (event streams, running runs) (429).
    #[error("{0}")]
    OverQuota(String),
    /// The request is malformed; the message names the field (422).
    #[error("{0}")]
    Invalid(String),
    /// The body is larger than allowed (413).
    #[error("{0}")]
    TooLarge(String),
    /// No such command or run, or none this key may see (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (a run already over) (409).
    #[error("{0}")]
    Conflict(String),
    /// A part of the system did not answer in time, or too many streams are open (503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (500); the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A machine-readable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// e.g. `unauthorized`, `forbidden`, `rate_limited`, `over_quota`, `invalid`, `too_large`, `not_found`,
    /// `conflict`, `unavailable`, `internal`.
    pub code: String,
    pub message: String,
}

impl AppError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AppError::OverQuota(_) => (StatusCode::TOO_MANY_REQUESTS, "over_quota"),
            AppError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<mindbus::Error> for AppError {
    fn from(e: mindbus::Error) -> Self {
        AppError::Internal(e.into())
    }
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> Self {
        AppError::Internal(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(cause) = &self {
            tracing::error!(error = %format!("{cause:#}"), "request failed");
        }
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: self.to_string(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let AppError::RateLimited(wait) = self {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
