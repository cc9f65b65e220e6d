//! API keys: who may use the API when authentication is on (`STEMSEP_AUTH=keys`).
//!
//! A client presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Keys are held
//! as [`SecretString`]s (never printed, wiped on drop) and compared in constant time, so neither
//! logs nor response timing give a key away. A key is known to the rest of the server only by its
//! position in `STEMSEP_API_KEYS` ([`KeyId`]), which the rate limiter and the logs use.

use std::fmt;
use std::str::FromStr;

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Shortest key accepted: anything shorter is guessable.
pub const MIN_KEY_LEN: usize = 16;

/// Whether requests need a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Anyone who reaches the server may use it (the lab's setting, and `make run`'s).
    Off,
    /// Every route but `/`, `/healthz` and `/metrics` needs one of `STEMSEP_API_KEYS`.
    Keys,
}

/// A key's position in `STEMSEP_API_KEYS`, from 1: how logs and rate limits name a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub usize);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key #{}", self.0)
    }
}

/// The accepted keys (comma-separated in `STEMSEP_API_KEYS`).
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<SecretString>);

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys, redacted)", self.0.len())
    }
}

impl FromStr for ApiKeys {
    type Err = std::convert::Infallible;
    /// Splits on commas, ignoring blanks. Never fails, so that no parser error message can
    /// echo a key; [`ApiKeys::check`] judges them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ApiKeys(
            s.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| SecretString::from(k.to_owned()))
                .collect(),
        ))
    }
}

impl ApiKeys {
    /// Every key must be at least [`MIN_KEY_LEN`] characters of visible ASCII (what fits in a
    /// header without escaping); the message names the key by position only.
    pub fn check(&self) -> Result<(), String> {
        for (i, k) in self.0.iter().enumerate() {
            let k = k.expose_secret();
            if k.len() < MIN_KEY_LEN || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "STEMSEP_API_KEYS: key {} must be at least {MIN_KEY_LEN} visible ASCII characters",
                    i + 1
                ));
            }
        }
        Ok(())
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Which key `presented` is, if any. Every key is compared, each in constant time, so the
    /// time taken says nothing about how close a guess came.
    pub fn identify(&self, presented: &str) -> Option<KeyId> {
        let mut found = None;
        for (i, key) in self.0.iter().enumerate() {
            let same: bool = key
                .expose_secret()
                .as_bytes()
                .ct_eq(presented.as_bytes())
                .into();
            if same {
                found = Some(KeyId(i + 1));
            }
        }
        found
    }
}

/// The key a request presents: `Authorization: Bearer <key>` (scheme case-insensitive) or
/// `X-API-Key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some((scheme, token)) = v.trim().split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(token.trim());
            }
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    const A: &str = "alpha-0123456789abcdef";
    const B: &str = "bravo-0123456789abcdef";

    #[test]
    fn keys_parse_and_identify() {
        let keys: ApiKeys = format!(" {A} ,, {B}").parse().unwrap();
        assert_eq!(keys.len(), 2);
        keys.check().unwrap();
        assert_eq!(keys.identify(A), Some(KeyId(1)));
        assert_eq!(keys.identify(B), Some(KeyId(2)));
        assert_eq!(keys.identify(&A[..A.len() - 1]), None);
        assert_eq!(keys.identify(""), None);
        let e = format!("{A},short").parse::<ApiKeys>().unwrap().check();
        assert!(
            e.as_ref()
                .is_err_and(|e| e.contains("key 2") && !e.contains("short")),
            "{e:?}"
        );
        assert!(format!("{A}\u{7f}")
            .parse::<ApiKeys>()
            .unwrap()
            .check()
            .is_err());
        assert!("".parse::<ApiKeys>().unwrap().is_empty());
        assert!(!format!("{keys:?}").contains("alpha"));
    }

    #[test]
    fn keys_are_read_from_either_header() {
        let headers = |name: &'static str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
            h
        };
        assert_eq!(
            presented_key(&headers("authorization", &format!("Bearer {A}"))),
            Some(A)
        );
        assert_eq!(
            presented_key(&headers("authorization", &format!("bearer  {A} "))),
            Some(A)
        );
        assert_eq!(presented_key(&headers("x-api-key", A)), Some(A));
        assert_eq!(
            presented_key(&headers("authorization", &format!("Basic {A}"))),
            None
        );
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }
}
