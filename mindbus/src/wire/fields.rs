//! Flat stream fields: reading them with errors that name the field, and writing them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use super::WireError;

/// One stream entry's fields as Redis holds them: names and raw values, in order.
pub type Fields = Vec<(String, Vec<u8>)>;

/// One text field of a raw entry (the last of duplicates, as decoding reads it), or `None`
/// when it is absent, empty or not UTF-8: for salvaging what can be read of an entry that
/// does not decode.
pub fn field_text<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    FieldReader::new(fields).str(name).ok().flatten()
}

/// Takes fields out of an entry one by one, borrowing them; what is left over are the
/// unknown fields. An entry has a dozen fields or so, so a scan beats building a map for
/// every entry, and borrowing means a value is copied only when it is kept (and `data` is
/// decoded straight from the entry).
#[derive(Debug)]
pub(crate) struct FieldReader<'a> {
    fields: &'a [(String, Vec<u8>)],
    /// Which fields are read already: a taken name and every earlier duplicate of it.
    taken: Vec<bool>,
}

impl<'a> FieldReader<'a> {
    /// Later duplicates of a field name win, as `HSET`-style producers expect.
    pub fn new(fields: &'a [(String, Vec<u8>)]) -> Self {
        Self {
            fields,
            taken: vec![false; fields.len()],
        }
    }

    /// The raw bytes of a field, which may be binary (only `data` is allowed to be).
    pub fn bytes(&mut self, name: &str) -> Option<&'a [u8]> {
        let mut last = None;
        for ((n, value), taken) in self.fields.iter().zip(&mut self.taken) {
            // Earlier duplicates lose to the last one and are taken with it.
            if !*taken && n == name {
                *taken = true;
                last = Some(value.as_slice());
            }
        }
        last
    }

    /// A text field, borrowed; absent or empty reads as `None`.
    fn str(&mut self, name: &str) -> Result<Option<&'a str>, WireError> {
        match self.bytes(name) {
            None | Some([]) => Ok(None),
            Some(raw) => std::str::from_utf8(raw)
                .map(Some)
                .map_err(|_| WireError::NotUtf8 { field: name.into() }),
        }
    }

    /// A text field; absent or empty reads as `None`.
    pub fn text(&mut self, name: &str) -> Result<Option<String>, WireError> {
        Ok(self.str(name)?.map(str::to_owned))
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
        self.str(name)?
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
        let untaken = self.fields.iter().zip(&self.taken).filter(|(_, t)| !**t);
        for ((name, raw), _) in untaken.rev() {
            if rest.contains_key(name) {
                continue;
            }
            match std::str::from_utf8(raw) {
                Ok(text) => rest.insert(name.clone(), text.to_owned()),
                Err(_) => {
                    return Err(WireError::NotUtf8 {
                        field: name.clone(),
                    });
                }
            };
        }
        Ok(rest)
    }
}

/// An entry's fields in one buffer: how the agents' writer holds what it sends, without an
/// allocation per field name and value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedFields {
    bytes: Vec<u8>,
    /// Where each field's name ends and its value ends, in `bytes`.
    ends: Vec<(usize, usize)>,
}

impl PackedFields {
    /// How many fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of every name and value together.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Names and values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let field = (
                &self.bytes[start..name_end],
                &self.bytes[name_end..value_end],
            );
            start = value_end;
            field
        })
    }

    /// The same fields, one allocation each.
    pub fn to_fields(&self) -> Fields {
        self.iter()
            .map(|(name, value)| (String::from_utf8_lossy(name).into_owned(), value.to_vec()))
            .collect()
    }

    fn push_name(&mut self, name: &str) {
        self.bytes.extend_from_slice(name.as_bytes());
        self.ends.push((self.bytes.len(), self.bytes.len()));
    }

    /// Ends the value of the field whose name was pushed last.
    fn end_value(&mut self) {
        if let Some(last) = self.ends.last_mut() {
            last.1 = self.bytes.len();
        }
    }
}

impl From<&Fields> for PackedFields {
    fn from(fields: &Fields) -> Self {
        let mut packed = Self::default();
        for (name, value) in fields {
            packed.push_name(name);
            packed.bytes.extend_from_slice(value);
            packed.end_value();
        }
        packed
    }
}

/// Builds an entry's fields in a stable order, into one buffer.
#[derive(Debug)]
pub(crate) struct FieldWriter {
    fields: PackedFields,
}

impl Default for FieldWriter {
    /// Room for the usual entry, so building one does not grow the buffer field by field.
    fn default() -> Self {
        Self {
            fields: PackedFields {
                bytes: Vec::with_capacity(512),
                ends: Vec::with_capacity(12),
            },
        }
    }
}

impl FieldWriter {
    /// Appends a field.
    pub fn put(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        self.fields.push_name(name);
        self.fields.bytes.extend_from_slice(value.as_ref());
        self.fields.end_value();
        self
    }

    /// Appends a field only when it has a value (raw bytes).
    pub fn put_opt(&mut self, name: &str, value: Option<Vec<u8>>) -> &mut Self {
        if let Some(value) = value {
            self.put(name, value);
        }
        self
    }

    /// Appends a field written with [`Display`], formatted in place.
    pub fn show(&mut self, name: &str, value: impl Display) -> &mut Self {
        use std::io::Write as _;
        self.fields.push_name(name);
        // Writing into a Vec cannot fail.
        let _ = write!(self.fields.bytes, "{value}");
        self.fields.end_value();
        self
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
            self.put(name, value);
        }
        self
    }

    /// The finished fields.
    pub fn finish(self) -> Fields {
        self.fields.to_fields()
    }

    /// The finished fields, in one buffer.
    pub fn finish_packed(self) -> PackedFields {
        self.fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &[u8])]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn errors_name_the_field() {
        let f = fields(&[("maxattempts", b"lots"), ("source", b"\xff\xfe")]);
        let mut r = FieldReader::new(&f);
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
        let f = fields(&[
            ("x", b"1"),
            ("type", b"a"),
            ("type", b"b"),
            ("y", b"9"),
            ("x", b"2"),
        ]);
        let mut r = FieldReader::new(&f);
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
        let f = fields(&[("x", b"\xff"), ("x", b"ok")]);
        let r = FieldReader::new(&f);
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
            let mut r = FieldReader::new(&fields);
            let got = r.bytes(&taken).map(|v| String::from_utf8(v.to_vec()).unwrap());
            proptest::prop_assert_eq!(got, model.remove(&taken));
            proptest::prop_assert_eq!(r.rest().unwrap(), model);
        }

        /// Packing keeps every field, empty names and values and binary values included,
        /// in order.
        #[test]
        fn packed_fields_keep_every_field_in_order(
            pairs in proptest::collection::vec(("[a-z]{0,4}", proptest::collection::vec(proptest::num::u8::ANY, 0..6)), 0..10),
        ) {
            let fields: Fields = pairs.into_iter().collect();
            let packed = PackedFields::from(&fields);
            proptest::prop_assert_eq!(packed.len(), fields.len());
            proptest::prop_assert_eq!(packed.to_fields(), fields.clone());
            let mut w = FieldWriter::default();
            for (name, value) in &fields {
                w.put(name, value);
            }
            proptest::prop_assert_eq!(w.finish_packed(), packed);
        }
    }

    #[test]
    fn shown_values_are_formatted_in_place() {
        let mut w = FieldWriter::default();
        w.show("attempt", 12)
            .opt("none", None::<u32>)
            .put("data", b"{}");
        let packed = w.finish_packed();
        let got: Vec<(&[u8], &[u8])> = packed.iter().collect();
        assert_eq!(
            got,
            vec![(&b"attempt"[..], &b"12"[..]), (&b"data"[..], &b"{}"[..])]
        );
    }

    #[test]
    fn rest_keeps_unknown_fields() {
        let f = fields(&[("type", b"a.b"), ("tenant", b"acme")]);
        let mut r = FieldReader::new(&f);
        r.required("type").unwrap();
        assert_eq!(
            r.rest().unwrap(),
            BTreeMap::from([("tenant".to_string(), "acme".to_string())])
        );
    }
}
