//! A string that never shows itself: redacted in `Debug`, `Display` and `Serialize`.

use std::fmt;

/// What a secret prints as, everywhere.
pub const REDACTED: &str = "[redacted]";

/// A secret value (Telavox token, broker password, registry password).
///
/// The only way to read it is [`Secret::expose`], so every place that sends a
/// secret over the wire is easy to find with grep.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Removes credentials from a URL before it is logged (`user:pass@`, and
/// query parameters that look like tokens).
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if !url.username().is_empty() || url.password().is_some() {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                let _ = url.set_username(REDACTED);
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let lower = k.to_ascii_lowercase();
                        let secretish = ["token", "key", "secret", "password", "auth"]
                            .iter()
                            .any(|s| lower.contains(s));
                        let v = if secretish {
                            REDACTED.to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => "[unparsable url]".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_itself() {
        let s = Secret::new("tok-123");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{REDACTED}\"")
        );
        assert_eq!(s.expose(), "tok-123");
    }

    #[test]
    fn urls_lose_their_credentials() {
        let r = redact_url("nats://alice:pw@127.0.0.1:4222/?token=abc&x=1");
        assert!(
            !r.contains("alice") && !r.contains("pw@") && !r.contains("abc"),
            "{r}"
        );
        assert!(r.contains("x=1"), "{r}");
    }
}
