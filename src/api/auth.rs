//! Who may call what. Off by default (a laptop needs no credentials); in production `/transcode`
//! takes only Google-signed OIDC ID tokens from allowed service accounts (Cloud Run invocations,
//! Pub/Sub push, Eventarc), `/upload` takes the same or the `UPLOAD_TOKEN` secret, and
//! `/video-status` and `/metrics` can be closed to need either. Checked here as defence in depth
//! even when Cloud Run's IAM has checked the caller first.

mod keys;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;
use clap::builder::BoolishValueParser;
use futures_util::StreamExt;
use google_cloud_auth::credentials::idtoken::verifier::{self, Verifier};
use google_cloud_auth::errors::CredentialsError;
use subtle::ConstantTimeEq;

use super::ApiError;
use keys::{KeyError, PublishedKeys};

/// Google's signing keys for ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// Longest a token check may take (fetching the keys included) before the caller gets 503.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Body bytes read and dropped after a refusal, at most, and for how long.
const DRAIN_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Access-control settings of the service. Setting none leaves every route open.
#[derive(Clone, Debug, Args)]
pub struct AccessSettings {
    /// Audience ID tokens must carry (the service's URL, or the push subscription's audience);
    /// setting it makes `/transcode` require a Google-signed OIDC ID token.
    #[arg(long, env = "TRIGGER_AUDIENCE", requires = "trigger_allowed_emails")]
    pub trigger_audience: Option<String>,

    /// Service accounts (the token's verified `email` claim) allowed to call, comma-separated.
    #[arg(
        long,
        env = "TRIGGER_ALLOWED_EMAILS",
        value_delimiter = ',',
        requires = "trigger_audience"
    )]
    pub trigger_allowed_emails: Vec<String>,

    /// Where the keys that sign ID tokens are published (JWKS).
    #[arg(long, env = "OIDC_JWKS_URL", default_value = GOOGLE_JWKS_URL)]
    pub oidc_jwks_url: String,

    /// Bearer secret `/upload` accepts (besides an allowed ID token); at least 16 characters.
    /// Give it by environment (Secret Manager in production): a flag shows in the process list.
    #[arg(long, env = "UPLOAD_TOKEN", hide_env_values = true, value_parser = UploadToken::parse)]
    pub upload_token: Option<UploadToken>,

    /// Whether `/video-status/{id}` is open to anyone; when false it needs the credentials of
    /// `/transcode` or the upload token.
    #[arg(long, env = "OPEN_STATUS", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub open_status: bool,

    /// Whether `/metrics` is open to anyone; when false it needs the credentials of
    /// `/transcode` or the upload token.
    #[arg(long, env = "OPEN_METRICS", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub open_metrics: bool,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            trigger_audience: None,
            trigger_allowed_emails: Vec::new(),
            oidc_jwks_url: GOOGLE_JWKS_URL.into(),
            upload_token: None,
            open_status: true,
            open_metrics: true,
        }
    }
}

impl AccessSettings {
    /// Refuses settings that would lock everyone out or silently check nothing.
    pub fn check(&self) -> Result<(), String> {
        if let Some(token) = &self.upload_token {
            token.check()?;
        }
        if self.trigger_audience.is_some() && self.allowed_emails().next().is_none() {
            return Err("TRIGGER_AUDIENCE is set but TRIGGER_ALLOWED_EMAILS names nobody".into());
        }
        if !(self.oidc_jwks_url.starts_with("https://")
            || self.oidc_jwks_url.starts_with("http://"))
        {
            return Err(format!(
                "OIDC_JWKS_URL `{}` is not an http(s) URL",
                self.oidc_jwks_url
            ));
        }
        let closed = [
            ("OPEN_STATUS", self.open_status),
            ("OPEN_METRICS", self.open_metrics),
        ];
        for (name, open) in closed {
            if !open && self.trigger_audience.is_none() && self.upload_token.is_none() {
                return Err(format!(
                    "{name}=false needs TRIGGER_AUDIENCE or UPLOAD_TOKEN, or nobody could call it"
                ));
            }
        }
        Ok(())
    }

    fn allowed_emails(&self) -> impl Iterator<Item = &str> {
        self.trigger_allowed_emails
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
    }
}

/// What each route requires, for the start-up log; never the secret itself.
impl fmt::Display for AccessSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = Access::new(self);
        let routes = [
            ("transcode", Route::Trigger),
            ("upload", Route::Upload),
            ("status", Route::Status),
            ("metrics", Route::Metrics),
        ];
        for (i, (name, route)) in routes.into_iter().enumerate() {
            let rule = access.rule(route);
            let needs = match (rule.id_token, rule.upload_token) {
                (false, false) => "open",
                (true, false) => "ID token",
                (false, true) => "upload token",
                (true, true) => "ID token or upload token",
            };
            write!(f, "{}{name}: {needs}", if i == 0 { "" } else { "; " })?;
        }
        Ok(())
    }
}

/// The `/upload` bearer secret. Its `Debug` never shows it, and it is compared in constant time.
#[derive(Clone)]
pub struct UploadToken(Arc<str>);

impl UploadToken {
    /// Takes any value: clap would echo a refused value in its error, so [`Self::check`]
    /// judges it later, without showing it.
    fn parse(value: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self(value.into()))
    }

    fn check(&self) -> Result<(), String> {
        let weak = self.0.chars().count() < 16
            || self.0.chars().any(|c| c.is_whitespace() || c.is_control());
        match weak {
            true => Err("UPLOAD_TOKEN must be at least 16 characters, without spaces".into()),
            false => Ok(()),
        }
    }

    /// Whether `presented` is the secret. Only the length can be learnt from the timing.
    fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for UploadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UploadToken(<redacted>)")
    }
}

/// The routes that can be closed.
#[derive(Clone, Copy, Debug)]
pub enum Route {
    Trigger,
    Upload,
    Status,
    Metrics,
}

/// The credentials a route accepts; none accepted means it is open.
#[derive(Clone, Copy, Debug)]
struct Rule {
    id_token: bool,
    upload_token: bool,
}

/// The checks, built once from the settings; the verifier caches Google's keys.
pub struct Access {
    settings: AccessSettings,
    /// One check at a time: the verifier's key cache refuses, rather than waits for, a
    /// concurrent lookup (its lock is taken with `try_write`), which would turn valid tokens
    /// into 401s under load. A check of a cached key takes well under a millisecond.
    tokens: Option<tokio::sync::Mutex<TokenCheck>>,
}

/// What checks an ID token: the published keys first, then the verifier.
struct TokenCheck {
    keys: PublishedKeys,
    verifier: Verifier,
}

impl Access {
    pub fn new(settings: &AccessSettings) -> Self {
        let tokens = settings.trigger_audience.as_ref().map(|audience| {
            tokio::sync::Mutex::new(TokenCheck {
                keys: PublishedKeys::new(&settings.oidc_jwks_url),
                verifier: verifier::Builder::new([audience.clone()])
                    .with_jwks_url(settings.oidc_jwks_url.clone())
                    .build(),
            })
        });
        Self {
            settings: settings.clone(),
            tokens,
        }
    }

    fn rule(&self, route: Route) -> Rule {
        let id_token = self.tokens.is_some();
        let upload_token = self.settings.upload_token.is_some();
        match route {
            Route::Trigger => Rule {
                id_token,
                upload_token: false,
            },
            Route::Upload => Rule {
                id_token,
                upload_token,
            },
            Route::Status if self.settings.open_status => Rule::OPEN,
            Route::Metrics if self.settings.open_metrics => Rule::OPEN,
            Route::Status | Route::Metrics => Rule {
                id_token,
                upload_token,
            },
        }
    }

    /// Lets the request through, or says why not: 401 for a missing or invalid credential,
    /// 403 for a valid ID token of a caller not on the allow-list.
    pub async fn check(&self, route: Route, headers: &HeaderMap) -> Result<(), ApiError> {
        let rule = self.rule(route);
        if !rule.id_token && !rule.upload_token {
            return Ok(());
        }
        let token = bearer(headers)?;
        if rule.upload_token
            && let Some(secret) = &self.settings.upload_token
            && secret.matches(token)
        {
            return Ok(());
        }
        match (&self.tokens, rule.id_token) {
            (Some(tokens), true) => self.check_id_token(tokens, token).await,
            _ => Err(ApiError::Unauthorized(
                "the bearer token is not valid".into(),
            )),
        }
    }

    async fn check_id_token(
        &self,
        tokens: &tokio::sync::Mutex<TokenCheck>,
        token: &str,
    ) -> Result<(), ApiError> {
        let verified = tokio::time::timeout(VERIFY_TIMEOUT, async {
            let mut check = tokens.lock().await;
            check.keys.check(token).await?;
            Ok(check.verifier.verify(token).await)
        })
        .await
        .map_err(|_| {
            ApiError::Unavailable("timed out fetching the keys that sign ID tokens".into())
        })?
        .map_err(|e| match e {
            KeyError::Unknown(why) => ApiError::Unauthorized(why),
            KeyError::Unavailable(why) => {
                tracing::error!("cannot fetch the ID token keys: {why}");
                ApiError::Unavailable("cannot check the ID token now; retry later".into())
            }
        })?;
        let claims = verified.map_err(|e| match is_transient(&e) {
            true => {
                tracing::error!("cannot fetch the ID token keys: {e:#}");
                ApiError::Unavailable("cannot check the ID token now; retry later".into())
            }
            false => ApiError::Unauthorized(format!("the ID token is not valid: {e}")),
        })?;
        let email = claims.get("email").and_then(|e| e.as_str());
        let verified_email = claims.get("email_verified").and_then(|v| v.as_bool()) == Some(true);
        match email {
            Some(email)
                if verified_email
                    && self
                        .settings
                        .allowed_emails()
                        .any(|allowed| allowed.eq_ignore_ascii_case(email)) =>
            {
                Ok(())
            }
            Some(email) if verified_email => Err(ApiError::Forbidden(format!(
                "`{email}` is not allowed to call this service"
            ))),
            Some(email) => Err(ApiError::Forbidden(format!(
                "the token's email `{email}` is not verified"
            ))),
            None => Err(ApiError::Forbidden("the ID token names no email".into())),
        }
    }
}

impl Rule {
    const OPEN: Rule = Rule {
        id_token: false,
        upload_token: false,
    };
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("this route needs `Authorization: Bearer`".into()))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "the Authorization header is not `Bearer <token>`".into(),
        )),
    }
}

/// Whether fetching the keys failed for a reason that may pass (network, 5xx).
fn is_transient(error: &verifier::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<CredentialsError>() {
            return e.is_transient();
        }
        source = e.source();
    }
    false
}

/// A route's guard: the checks and which route they are for.
#[derive(Clone)]
pub struct Guard {
    pub access: Arc<Access>,
    pub route: Route,
}

/// Middleware: the request goes on only if its credentials satisfy the route. Refusals are
/// logged with their reason, never with the token.
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let Err(error) = guard.access.check(guard.route, request.headers()).await else {
        return next.run(request).await;
    };
    let route = format!("{:?}", guard.route).to_lowercase();
    tracing::warn!(%route, "refused: {error}");
    metrics::counter!("transcoder_auth_refusals_total", "route" => route).increment(1);
    let version = request.version();
    drain(request.into_body());
    let mut response = error.into_response();
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads and drops what the refused client is still sending (up to a cap), so an HTTP/1.1
/// client in the middle of an upload reads its 401 instead of a broken pipe.
fn drain(body: Body) {
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut left = DRAIN_BYTES;
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                left = left.saturating_sub(chunk.len());
                if left == 0 {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, read).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> AccessSettings {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            access: AccessSettings,
        }
        let all = std::iter::once("test").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(all).unwrap().access
    }

    fn authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_upload_token_never_shows() {
        let secret = "s3cret-s3cret-s3cret";
        let access = settings(&["--upload-token", secret]);
        assert!(!format!("{access:?}").contains(secret));
        assert!(!access.to_string().contains(secret));
        for weak in ["short", "has a space in it somewhere"] {
            let error = settings(&["--upload-token", weak]).check().unwrap_err();
            assert!(!error.contains(weak), "{error}");
        }
    }

    #[test]
    fn settings_that_lock_out_or_check_nothing_are_refused() {
        assert!(settings(&[]).check().is_ok());
        assert!(settings(&["--open-status", "false"]).check().is_err());
        assert!(settings(&["--open-metrics", "no"]).check().is_err());
        let token = [
            "--upload-token",
            "0123456789abcdef",
            "--open-status",
            "false",
        ];
        assert!(settings(&token).check().is_ok());
        let blank = [
            "--trigger-audience",
            "https://x",
            "--trigger-allowed-emails",
            " ,",
        ];
        assert!(settings(&blank).check().is_err());
        let jwks = [
            "--trigger-audience",
            "a",
            "--trigger-allowed-emails",
            "e@x",
            "--oidc-jwks-url",
            "file:/x",
        ];
        assert!(settings(&jwks).check().is_err());
    }

    #[tokio::test]
    async fn routes_open_by_default_and_the_upload_token_is_checked() {
        let open = Access::new(&settings(&[]));
        for route in [Route::Trigger, Route::Upload, Route::Status, Route::Metrics] {
            assert!(open.check(route, &HeaderMap::new()).await.is_ok());
        }
        let secret = "0123456789abcdef";
        let closed = Access::new(&settings(&[
            "--upload-token",
            secret,
            "--open-metrics",
            "false",
        ]));
        let right = authorization(&format!("bearer {secret}"));
        let wrong = authorization("Bearer 0123456789abcdeX");
        assert!(closed.check(Route::Upload, &right).await.is_ok());
        assert!(closed.check(Route::Metrics, &right).await.is_ok());
        assert!(closed.check(Route::Status, &HeaderMap::new()).await.is_ok());
        for headers in [
            wrong,
            HeaderMap::new(),
            authorization(&format!("Basic {secret}")),
        ] {
            let refused = closed.check(Route::Upload, &headers).await;
            assert!(
                matches!(refused, Err(ApiError::Unauthorized(_))),
                "{refused:?}"
            );
        }
    }
}
