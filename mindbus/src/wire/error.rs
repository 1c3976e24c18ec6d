//! Why a stream entry could not be decoded or encoded.

/// A precise decoding or encoding failure: it always names the field and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A field the entry kind requires is absent.
    #[error("missing required field `{field}`")]
    MissingField {
        /// The absent field's name.
        field: &'static str,
    },
    /// A field is present but its value does not parse.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The offending field's name.
        field: String,
        /// What was wrong with the value, including the value where it helps.
        reason: String,
    },
    /// A field other than `data` holds bytes that are not UTF-8.
    #[error("field `{field}` is not valid UTF-8")]
    NotUtf8 {
        /// The offending field's name.
        field: String,
    },
    /// The entry as a whole is over a documented limit (fields or bytes).
    #[error("{0}")]
    TooLarge(String),
    /// A value could not be encoded with the requested content type.
    #[error("cannot encode `data` as {content_type}: {reason}")]
    Encode {
        /// The content type that was asked for.
        content_type: &'static str,
        /// The serializer's message.
        reason: String,
    },
}

impl WireError {
    /// Shorthand for [`WireError::InvalidField`].
    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// The name of the field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::MissingField { field } => Some(field),
            Self::InvalidField { field, .. } | Self::NotUtf8 { field } => Some(field),
            Self::Encode { .. } => Some("data"),
            Self::TooLarge(_) => None,
        }
    }
}
