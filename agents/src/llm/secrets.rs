//! The provider keys of this process, and scrubbing them out of any text a provider sent
//! back: an error body that echoes the `Authorization` header, a URL with a `key=`
//! parameter, a stream that repeats a header. Every error text a provider call produces (a
//! result's error, an event, a log line) goes through [`Scrubber::scrub`] before it is cut
//! short or used.

use secrecy::{ExposeSecret, SecretString};

/// What replaces a key.
const REDACTED: &str = "[redacted]";

/// Removes every configured key from text.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    keys: Vec<SecretString>,
}

impl Scrubber {
    /// A scrubber of `keys`, each as set and trimmed (a server may echo it trimmed); empty
    /// ones are ignored.
    pub fn new(keys: Vec<SecretString>) -> Self {
        let mut keys: Vec<SecretString> = keys
            .iter()
            .flat_map(|k| {
                let key = k.expose_secret();
                [key.to_owned(), key.trim().to_owned()]
            })
            .filter(|k| !k.is_empty())
            .map(SecretString::from)
            .collect();
        // Longest first, so a key that contains another is removed whole.
        keys.sort_by_key(|k| std::cmp::Reverse(k.expose_secret().len()));
        Self { keys }
    }

    /// `text` with every key replaced by `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for key in &self.keys {
            let key = key.expose_secret();
            if out.contains(key) {
                out = out.replace(key, REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_scrubbed_wherever_it_is() {
        let scrubber = Scrubber::new(vec![
            SecretString::from("sk-live-123"),
            SecretString::from("sk-live-123456"),
            SecretString::from(""),
        ]);
        let text = "Invalid API key: Bearer sk-live-123456 (url ?key=sk-live-123)";
        assert_eq!(
            scrubber.scrub(text),
            "Invalid API key: Bearer [redacted] (url ?key=[redacted])"
        );
        assert_eq!(scrubber.scrub("nothing here"), "nothing here");
    }
}
