//! W3C trace context (`traceparent`, `tracestate`) carried across streams.

use std::fmt;
use std::str::FromStr;

use super::MessageId;

/// A parsed `traceparent`: `00-<trace id>-<parent span id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, never all zero.
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// The default for an entry that carries none: a trace rooted at the entry's own id, so a
    /// producer that knows nothing of tracing still gets one trace id per command.
    pub fn rooted_at(id: &MessageId) -> Self {
        let bytes = id.to_bytes();
        let mut parent_id = [0u8; 8];
        parent_id.copy_from_slice(&bytes[8..]);
        parent_id[0] |= 1; // never all zero
        TraceParent {
            trace_id: bytes,
            parent_id,
            flags: 1,
        }
    }

    /// The trace id in lower-case hex, as logs and trace backends show it.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

fn unhex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{what} must be {} hex digits", N * 2));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| format!("{what}: {e}"))?;
    if out.iter().all(|b| *b == 0) {
        return Err(format!("{what} must not be all zero"));
    }
    Ok(out)
}

impl fmt::Display for TraceParent {
    /// Every entry an agent writes carries one, so it is put together on the stack.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = *b"00-________________________________-________________-__";
        hex::encode_to_slice(self.trace_id, &mut out[3..35]).map_err(|_| fmt::Error)?;
        hex::encode_to_slice(self.parent_id, &mut out[36..52]).map_err(|_| fmt::Error)?;
        hex::encode_to_slice([self.flags], &mut out[53..55]).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for TraceParent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('-').collect();
        let [version, trace, parent, flags] = parts[..] else {
            return Err("expected `00-<32 hex>-<16 hex>-<2 hex>`".into());
        };
        if version != "00" {
            return Err(format!("unsupported version `{version}`"));
        }
        let flags =
            u8::from_str_radix(flags, 16).map_err(|_| "flags must be 2 hex digits".to_string())?;
        Ok(TraceParent {
            trace_id: unhex(trace, "trace id")?,
            parent_id: unhex(parent, "parent id")?,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_w3c_example() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed: TraceParent = text.parse().unwrap();
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn rejects_zero_and_short_ids() {
        assert!(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                .parse::<TraceParent>()
                .is_err()
        );
        assert!(
            "00-4bf92f35-00f067aa0ba902b7-01"
                .parse::<TraceParent>()
                .is_err()
        );
        assert!("garbage".parse::<TraceParent>().is_err());
    }

    #[test]
    fn rooted_trace_is_valid() {
        let tp = TraceParent::rooted_at(&MessageId::new());
        assert_eq!(tp.to_string().parse::<TraceParent>().unwrap(), tp);
    }
}
