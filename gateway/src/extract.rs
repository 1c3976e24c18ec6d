//! Path and query extractors whose rejections are 422s naming the parameter, in the same
//! error body as every other answer.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::str::FromStr;

use crate::error::AppError;

/// The `{id}` path parameter: a command id (any [`MessageId`]) or a run id (a UUID).
#[derive(Debug, Clone)]
pub struct IdPath<T>(pub T);

impl<S: Send + Sync, T> FromRequestParts<S> for IdPath<T>
where
    T: FromStr,
    T::Err: Display,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::Invalid(format!("id: {e}")))?;
        raw.parse()
            .map(IdPath)
            .map_err(|e| AppError::Invalid(format!("id: `{raw}` is not valid: {e}")))
    }
}

/// The `{id}` path parameter of `POST /v1/commands/{role}`, a role name.
#[derive(Debug, Clone)]
pub struct RolePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RolePath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(role) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::Invalid(format!("role: {e}")))?;
        mindbus::keys::validate_role(&role).map_err(AppError::Invalid)?;
        Ok(RolePath(role))
    }
}

/// The query string, parsed as `T`.
#[derive(Debug, Clone)]
pub struct QueryOf<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryOf<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| QueryOf(q))
            .map_err(|e| AppError::Invalid(format!("query: {}", e.body_text())))
    }
}
