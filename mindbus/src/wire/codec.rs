//! How `data` is encoded: one [`Codec`] trait, JSON and named-field MessagePack.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::WireError;

/// Encodes and decodes a value for the `data` field.
pub trait Codec {
    /// The `datacontenttype` this codec writes.
    const CONTENT_TYPE: ContentType;
    /// Encodes `value`.
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError>;
    /// Decodes `bytes`; the error names the `data` field.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError>;
}

/// `application/json`, the default.
#[derive(Debug, Clone, Copy)]
pub struct Json;

/// `application/msgpack`, with struct fields written by name so other languages can read them.
#[derive(Debug, Clone, Copy)]
pub struct MsgPack;

impl Codec for Json {
    const CONTENT_TYPE: ContentType = ContentType::Json;

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
        serde_json::to_vec(value).map_err(|e| encode_error(Self::CONTENT_TYPE, e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
        serde_json::from_slice(bytes)
            .map_err(|e| WireError::invalid("data", format!("not valid JSON: {e}")))
    }
}

impl Codec for MsgPack {
    const CONTENT_TYPE: ContentType = ContentType::MsgPack;

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
        rmp_serde::to_vec_named(value).map_err(|e| encode_error(Self::CONTENT_TYPE, e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
        rmp_serde::from_slice(bytes)
            .map_err(|e| WireError::invalid("data", format!("not valid MessagePack: {e}")))
    }
}

fn encode_error(content_type: ContentType, err: impl fmt::Display) -> WireError {
    WireError::Encode {
        content_type: content_type.as_str(),
        reason: err.to_string(),
    }
}

/// The closed set of `datacontenttype` values MindBus understands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `application/json` (the default when the field is absent).
    #[default]
    Json,
    /// `application/msgpack`.
    MsgPack,
}

impl ContentType {
    /// The MIME type as written in the `datacontenttype` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::MsgPack => "application/msgpack",
        }
    }

    /// Encodes `value` with this content type's codec.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, WireError> {
        match self {
            ContentType::Json => Json::encode(value),
            ContentType::MsgPack => MsgPack::encode(value),
        }
    }

    /// Decodes `bytes` with this content type's codec.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, WireError> {
        match self {
            ContentType::Json => Json::decode(bytes),
            ContentType::MsgPack => MsgPack::decode(bytes),
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContentType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Parameters such as `; charset=utf-8` are allowed and ignored.
        let mime = s.split(';').next().unwrap_or_default().trim();
        match mime.to_ascii_lowercase().as_str() {
            "application/json" => Ok(ContentType::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(ContentType::MsgPack)
            }
            _ => Err(format!(
                "`{s}` is not supported (use application/json or application/msgpack)"
            )),
        }
    }
}

/// `value` with every U+0000 replaced by U+FFFD, for stores that cannot hold it (Postgres
/// `jsonb` and `text`): replace rather than lose the row.
pub fn without_nul(value: Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{fffd}")),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('\0', "\u{fffd}"), without_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    #[derive(Serialize)]
    struct Named {
        text: String,
    }

    #[test]
    fn msgpack_writes_field_names() {
        let bytes = MsgPack::encode(&Named { text: "hi".into() }).unwrap();
        let back: Value = MsgPack::decode(&bytes).unwrap();
        assert_eq!(back, json!({"text": "hi"}));
    }

    #[test]
    fn broken_json_names_data() {
        let err = Json::decode::<Value>(b"{\"text\":").unwrap_err();
        assert_eq!(err.field(), Some("data"));
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn content_type_parses_parameters() {
        assert_eq!(
            "application/json; charset=utf-8".parse(),
            Ok(ContentType::Json)
        );
        assert_eq!("Application/MsgPack".parse(), Ok(ContentType::MsgPack));
        assert!("text/plain".parse::<ContentType>().is_err());
    }

    fn json_values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn both_codecs_round_trip(value in json_values()) {
            for ct in [ContentType::Json, ContentType::MsgPack] {
                let bytes = ct.encode(&value).unwrap();
                prop_assert_eq!(ct.decode::<Value>(&bytes).unwrap(), value.clone());
            }
        }
    }
}
