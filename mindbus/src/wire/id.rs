//! Message ids: a CloudEvents `id` is any non-empty string, so producers in other languages
//! keep their own (`order-42`); MindBus's own ids are UUIDv7s written as text.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use uuid::Uuid;

/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// An entry's `id` (and a result's or event's `correlationid`): 1 to [`MAX_ID_BYTES`] bytes
/// of text with no control characters. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Arc<str>);

impl MessageId {
    /// A new UUIDv7 id.
    pub fn new() -> Self {
        Uuid::now_v7().into()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a UUID, when it is one (every id MindBus makes is).
    pub fn as_uuid(&self) -> Option<Uuid> {
        self.0.parse().ok()
    }

    /// 16 bytes standing for the id: its own when it is a UUID, else those of
    /// UUIDv5(URL namespace, id), so every language derives the same (e.g. a trace id).
    pub fn to_bytes(&self) -> [u8; 16] {
        self.as_uuid()
            .unwrap_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_URL, self.0.as_bytes()))
            .into_bytes()
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for MessageId {
    fn from(id: Uuid) -> Self {
        Self(Arc::from(id.to_string()))
    }
}

impl FromStr for MessageId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("an id must not be empty".into());
        }
        if s.len() > MAX_ID_BYTES {
            return Err(format!(
                "an id has at most {MAX_ID_BYTES} bytes, not {}",
                s.len()
            ));
        }
        if s.chars().any(char::is_control) {
            return Err("an id must not hold control characters".into());
        }
        Ok(Self(Arc::from(s)))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for MessageId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MessageId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_BYTES,
            "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
            "description": "Any text of 1 to 256 bytes without control characters; MindBus's own ids are UUIDv7s."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_text_is_an_id_within_the_limits() {
        for good in ["order-42", "018bcfe5-6800-7f26-8052-2ca74f908c68", "x"] {
            assert_eq!(good.parse::<MessageId>().unwrap().as_str(), good);
        }
        let long = "a".repeat(MAX_ID_BYTES + 1);
        for bad in ["", "a\nb", "tab\there", long.as_str()] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_uuid_id_stands_for_itself_and_others_hash() {
        let uuid = Uuid::now_v7();
        let id = MessageId::from(uuid);
        assert_eq!(id.as_uuid(), Some(uuid));
        assert_eq!(id.to_bytes(), uuid.into_bytes());
        let other: MessageId = "order-42".parse().unwrap();
        assert_eq!(other.as_uuid(), None);
        assert_eq!(
            other.to_bytes(),
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"order-42").into_bytes()
        );
    }
}
