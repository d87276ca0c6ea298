//! Which signing keys the JWKS publishes, so a token naming any other key is refused without a
//! fetch. `google-cloud-auth`'s verifier fetches the whole JWKS again for every `kid` it has not
//! cached, and checks run one at a time (see `Access`): a flood of tokens with made-up `kid`s
//! would be one fetch each, holding up every real caller. Here they cost at most one fetch a
//! minute; Google publishes a key well before it signs with it, so a fresh list without the
//! token's `kid` means the key is not Google's.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

/// How long a list of published keys is trusted to be complete.
const FRESH_FOR: Duration = Duration::from_secs(60);
/// Longest a fetch of the list may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token's key cannot be accepted.
#[derive(Debug, PartialEq)]
pub enum KeyError {
    /// The token names no key, or one the JWKS does not publish: the caller's fault.
    Unknown(String),
    /// The list could not be fetched: may pass.
    Unavailable(String),
}

/// The `kid`s of the last JWKS seen, when it was last fetched, and why that fetch failed if it
/// did (until the next one, an unknown `kid` is then "retry later", not "not Google's").
pub struct PublishedKeys {
    url: String,
    kids: HashSet<String>,
    fetched: Option<Instant>,
    failed: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
}

impl PublishedKeys {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            kids: HashSet::new(),
            fetched: None,
            failed: None,
        }
    }

    /// `Ok` when the token's `kid` is published, fetching the list again if it is stale.
    pub async fn check(&mut self, token: &str) -> Result<(), KeyError> {
        let kid = kid_of(token)?;
        if self.kids.contains(&kid) {
            return Ok(());
        }
        if self.fetched.is_none_or(|at| at.elapsed() >= FRESH_FOR) {
            self.fetched = Some(Instant::now());
            match self.fetch().await {
                Ok(kids) => (self.kids, self.failed) = (kids, None),
                Err(why) => self.failed = Some(why),
            }
        }
        match (self.kids.contains(&kid), &self.failed) {
            (true, _) => Ok(()),
            (false, Some(why)) => Err(KeyError::Unavailable(why.clone())),
            (false, None) => Err(KeyError::Unknown(format!(
                "the token is signed with key `{}`, which is not published",
                kid.escape_default()
            ))),
        }
    }

    async fn fetch(&self) -> Result<HashSet<String>, String> {
        let unavailable = |e: reqwest::Error| format!("fetching {}: {e}", self.url);
        let set: JwkSet = reqwest::Client::new()
            .get(&self.url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        Ok(set.keys.into_iter().filter_map(|k| k.kid).collect())
    }
}

/// The `kid` in a JWT's header, read without checking anything else.
fn kid_of(token: &str) -> Result<String, KeyError> {
    let not_jwt = || KeyError::Unknown("the bearer token is not a JWT".into());
    let header = token.split('.').next().ok_or_else(not_jwt)?;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| not_jwt())?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| not_jwt())?;
    header["kid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| KeyError::Unknown("the token names no signing key (`kid`)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header);
        format!("{b64}.e30.sig")
    }

    #[test]
    fn the_kid_is_read_from_the_header() {
        assert_eq!(
            kid_of(&token(r#"{"alg":"RS256","kid":"k1"}"#)),
            Ok("k1".into())
        );
        for bad in [
            token(r#"{"alg":"RS256"}"#),
            "garbage".into(),
            token("not json"),
        ] {
            assert!(matches!(kid_of(&bad), Err(KeyError::Unknown(_))), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_known_kid_needs_no_fetch_and_an_unreachable_list_may_pass() {
        let mut keys = PublishedKeys::new("http://127.0.0.1:9/certs");
        keys.kids.insert("k1".into());
        keys.fetched = Some(Instant::now());
        assert_eq!(keys.check(&token(r#"{"kid":"k1"}"#)).await, Ok(()));
        // Fresh list, unknown kid: refused without a fetch (port 9 would fail it otherwise).
        let unknown = keys.check(&token(r#"{"kid":"k2"}"#)).await;
        assert!(matches!(unknown, Err(KeyError::Unknown(_))), "{unknown:?}");
        keys.fetched = None;
        let stale = keys.check(&token(r#"{"kid":"k2"}"#)).await;
        assert!(matches!(stale, Err(KeyError::Unavailable(_))), "{stale:?}");
        // The failed fetch is not repeated within the minute, and still says "retry later".
        let again = keys.check(&token(r#"{"kid":"k3"}"#)).await;
        assert!(matches!(again, Err(KeyError::Unavailable(_))), "{again:?}");
        assert_eq!(keys.check(&token(r#"{"kid":"k1"}"#)).await, Ok(()));
    }
}
