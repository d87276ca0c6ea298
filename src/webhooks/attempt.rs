//! One delivery attempt to one receiver, bounded against hostile ones: 10 s in all, no
//! redirects followed, at most 64 KiB of the answer read.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Client, StatusCode};

use super::address::PublicOnly;
use super::event::{SIGNATURE_HEADER, signature};

/// The most one attempt takes, connecting and reading the answer included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of an answer's body that is read (the rest is dropped with the connection).
pub const MAX_ANSWER_BYTES: usize = 64 << 10;

/// How one attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx: the event is delivered.
    Delivered(u16),
    /// A 4xx other than 408 and 429: the receiver will not take this event; no more retries.
    Refused(String),
    /// Anything else (5xx, 408, 429, a redirect, a timeout, no connection): tried again later.
    Failed(String),
}

impl Outcome {
    /// The metric's `result` label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "delivered",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// The HTTP client of every attempt.
pub fn client(allow_private: bool) -> reqwest::Result<Client> {
    let builder = Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // Straight to the receiver, whose resolved address is what the check below sees.
        .no_proxy()
        .user_agent(concat!("video-transcoder/", env!("CARGO_PKG_VERSION")));
    match allow_private {
        true => builder.build(),
        false => builder.dns_resolver(PublicOnly).build(),
    }
}

/// POSTs `body` to `url`, signed with `secret` at the current time.
pub async fn send(client: &Client, url: &str, body: &str, secret: &[u8]) -> Outcome {
    let t = chrono::Utc::now().timestamp();
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, signature(secret, t, body.as_bytes()))
        .body(body.to_string())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => return Outcome::Failed(describe(&e)),
    };
    let status = response.status();
    let answer = read_some(response).await;
    let snippet: String = String::from_utf8_lossy(&answer).chars().take(200).collect();
    match status {
        s if s.is_success() => Outcome::Delivered(s.as_u16()),
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            Outcome::Failed(format!("HTTP {status}: {snippet}"))
        }
        s if s.is_client_error() => Outcome::Refused(format!("HTTP {status}: {snippet}")),
        s if s.is_redirection() => {
            Outcome::Failed(format!("HTTP {status} (redirects are not followed)"))
        }
        _ => Outcome::Failed(format!("HTTP {status}: {snippet}")),
    }
}

/// At most [`MAX_ANSWER_BYTES`] of the answer, whatever arrives before the attempt's deadline.
async fn read_some(response: reqwest::Response) -> Vec<u8> {
    let mut body = response.bytes_stream();
    let mut kept = Vec::new();
    while kept.len() < MAX_ANSWER_BYTES {
        match body.next().await {
            Some(Ok(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(MAX_ANSWER_BYTES);
    kept
}

/// A failed request in a line: the error and its causes (reqwest's own text is terse).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if e.is_timeout() {
        text.push_str(" (timed out)");
    }
    text
}
