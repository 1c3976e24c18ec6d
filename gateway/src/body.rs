//! JSON request bodies: at most `max_body_bytes` (413), nested at most `max_json_depth`
//! (422), and every problem named by its field (422).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::AppError;

/// A body parsed as `T` after the size and depth checks, with the SHA-256 of its bytes
/// (what an `Idempotency-Key` is held to).
#[derive(Debug)]
pub struct JsonBody<T>(pub T, pub BodyHash);

/// The SHA-256 of a request body, in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyHash(pub String);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let limit = state.config().max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::TooLarge(format!("the body is larger than {limit} bytes"))
            } else {
                AppError::Invalid(format!("cannot read the body: {e}"))
            }
        })?;
        let hash = BodyHash(hex::encode(Sha256::digest(&bytes)));
        parse(&bytes, state.config().max_json_depth).map(|body| JsonBody(body, hash))
    }
}

/// Parses `bytes` as `T`, refusing JSON nested deeper than `max_depth`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], max_depth: usize) -> Result<T, AppError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| AppError::Invalid(format!("the body is not valid JSON: {e}")))?;
    if depth(&value) > max_depth {
        return Err(AppError::Invalid(format!(
            "the body is nested deeper than {max_depth} levels"
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        if path == "." {
            AppError::Invalid(message)
        } else {
            AppError::Invalid(format!("{path}: {message}"))
        }
    })
}

/// How many array items `value` holds, over all its arrays however deep.
pub fn array_items(value: &Value) -> usize {
    let mut items = 0;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(list) => {
                items += list.len();
                stack.extend(list);
            }
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    items
}

/// How deeply a value nests (a scalar is 1), without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        #[serde(rename = "type")]
        ty: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn error(json: &str) -> String {
        parse::<Body>(json.as_bytes(), 4).unwrap_err().to_string()
    }

    #[test]
    fn problems_name_the_field() {
        assert!(error(r#"{"type": 1}"#).starts_with("type:"));
        assert!(error(r#"{"type": "a", "inner": {"n": -1}}"#).starts_with("inner.n:"));
        assert!(error(r#"{"type": "a", "attempt": 2}"#).contains("unknown field `attempt`"));
        assert!(error("{").contains("not valid JSON"));
        assert!(error(r#"{"type": "a", "inner": {"n": [[[1]]]}}"#).contains("deeper than 4"));
    }

    #[test]
    fn array_items_are_counted_at_every_depth() {
        let value: Value = serde_json::from_str(r#"{"a": [1, [2, 3]], "b": {"c": [4]}}"#).unwrap();
        assert_eq!(array_items(&value), 5);
        assert_eq!(array_items(&Value::Null), 0);
    }
}
