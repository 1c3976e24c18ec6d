//! Flat stream fields: reading them with errors that name the field, and writing them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use super::WireError;

/// One stream entry's fields as Redis holds them: names and raw values, in order.
pub type Fields = Vec<(String, Vec<u8>)>;

/// Takes fields out of an entry one by one; what is left over are the unknown fields.
/// An entry has a dozen fields or so, so a scan beats building a map for every entry.
#[derive(Debug)]
pub(crate) struct FieldReader {
    fields: Fields,
}

impl FieldReader {
    /// Later duplicates of a field name win, as `HSET`-style producers expect.
    pub fn new(fields: Fields) -> Self {
        Self { fields }
    }

    /// The raw bytes of a field, which may be binary (only `data` is allowed to be).
    pub fn bytes(&mut self, name: &str) -> Option<Vec<u8>> {
        let last = self.fields.iter().rposition(|(n, _)| n == name)?;
        let (_, value) = self.fields.remove(last);
        // Earlier duplicates lose to the last one and are dropped with it.
        self.fields.retain(|(n, _)| n != name);
        Some(value)
    }

    /// A text field; absent or empty reads as `None`.
    pub fn text(&mut self, name: &str) -> Result<Option<String>, WireError> {
        match self.bytes(name) {
            None => Ok(None),
            Some(raw) if raw.is_empty() => Ok(None),
            Some(raw) => String::from_utf8(raw)
                .map(Some)
                .map_err(|_| WireError::NotUtf8 { field: name.into() }),
        }
    }

    /// A text field the entry kind cannot do without.
    pub fn required(&mut self, name: &'static str) -> Result<String, WireError> {
        self.text(name)?
            .ok_or(WireError::MissingField { field: name })
    }

    /// A field parsed with [`FromStr`]; the error carries the value and the parser's reason.
    pub fn parse<T>(&mut self, name: &str) -> Result<Option<T>, WireError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.text(name)?
            .map(|raw| {
                raw.trim()
                    .parse()
                    .map_err(|e| WireError::invalid(name, format!("`{raw}`: {e}")))
            })
            .transpose()
    }

    /// A required field parsed with [`FromStr`].
    pub fn parse_required<T>(&mut self, name: &'static str) -> Result<T, WireError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse(name)?
            .ok_or(WireError::MissingField { field: name })
    }

    /// Everything not taken yet: the unknown fields, kept so nothing a producer wrote is dropped.
    /// An unknown name written twice keeps its last value, as a taken one does.
    pub fn rest(self) -> Result<BTreeMap<String, String>, WireError> {
        let mut rest = BTreeMap::new();
        for (name, raw) in self.fields.into_iter().rev() {
            if rest.contains_key(&name) {
                continue;
            }
            match String::from_utf8(raw) {
                Ok(text) => rest.insert(name, text),
                Err(_) => return Err(WireError::NotUtf8 { field: name }),
            };
        }
        Ok(rest)
    }
}

/// Builds an entry's fields in a stable order.
#[derive(Debug, Default)]
pub(crate) struct FieldWriter {
    fields: Fields,
}

impl FieldWriter {
    /// Appends a field.
    pub fn put(&mut self, name: &str, value: impl Into<Vec<u8>>) -> &mut Self {
        self.fields.push((name.to_owned(), value.into()));
        self
    }

    /// Appends a field only when it has a value (raw bytes).
    pub fn put_opt(&mut self, name: &str, value: Option<Vec<u8>>) -> &mut Self {
        if let Some(value) = value {
            self.put(name, value);
        }
        self
    }

    /// Appends a field written with [`Display`].
    pub fn show(&mut self, name: &str, value: impl Display) -> &mut Self {
        self.put(name, value.to_string())
    }

    /// Appends a field only when it has a value.
    pub fn opt(&mut self, name: &str, value: Option<impl Display>) -> &mut Self {
        if let Some(value) = value {
            self.show(name, value);
        }
        self
    }

    /// Appends unknown fields that were kept on decoding.
    pub fn extensions(&mut self, extensions: &BTreeMap<String, String>) -> &mut Self {
        for (name, value) in extensions {
            self.put(name, value.as_bytes());
        }
        self
    }

    /// The finished fields.
    pub fn finish(self) -> Fields {
        self.fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(pairs: &[(&str, &[u8])]) -> FieldReader {
        FieldReader::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn errors_name_the_field() {
        let mut r = reader(&[("maxattempts", b"lots"), ("source", b"\xff\xfe")]);
        let err = r.parse::<u32>("maxattempts").unwrap_err();
        assert_eq!(err.field(), Some("maxattempts"));
        assert!(err.to_string().contains("`lots`"), "{err}");
        assert_eq!(
            r.text("source").unwrap_err(),
            WireError::NotUtf8 {
                field: "source".into()
            }
        );
        assert_eq!(
            r.required("type").unwrap_err(),
            WireError::MissingField { field: "type" }
        );
    }

    #[test]
    fn the_last_duplicate_wins_and_none_is_left_over() {
        let mut r = reader(&[
            ("x", b"1"),
            ("type", b"a"),
            ("type", b"b"),
            ("y", b"9"),
            ("x", b"2"),
        ]);
        assert_eq!(r.required("type").unwrap(), "b");
        assert_eq!(
            r.rest().unwrap(),
            BTreeMap::from([
                ("x".to_string(), "2".to_string()),
                ("y".to_string(), "9".to_string())
            ])
        );
    }

    #[test]
    fn an_earlier_duplicate_is_not_read_at_all() {
        let r = reader(&[("x", b"\xff"), ("x", b"ok")]);
        assert_eq!(
            r.rest().unwrap(),
            BTreeMap::from([("x".to_string(), "ok".to_string())])
        );
    }

    proptest::proptest! {
        /// Whatever the names and order, the reader agrees with collecting into a map
        /// (where a later duplicate overwrites an earlier one).
        #[test]
        fn reads_like_a_map_where_the_last_duplicate_wins(
            pairs in proptest::collection::vec(("[a-d]", "[a-z]{0,3}"), 0..12),
            taken in "[a-d]",
        ) {
            let fields: Fields = pairs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect();
            let mut model: BTreeMap<String, String> = pairs.into_iter().collect();
            let mut r = FieldReader::new(fields);
            let got = r.bytes(&taken).map(|v| String::from_utf8(v).unwrap());
            proptest::prop_assert_eq!(got, model.remove(&taken));
            proptest::prop_assert_eq!(r.rest().unwrap(), model);
        }
    }

    #[test]
    fn rest_keeps_unknown_fields() {
        let mut r = reader(&[("type", b"a.b"), ("tenant", b"acme")]);
        r.required("type").unwrap();
        assert_eq!(
            r.rest().unwrap(),
            BTreeMap::from([("tenant".to_string(), "acme".to_string())])
        );
    }
}
