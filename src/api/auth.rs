//! Who may call what. Off by default (a laptop needs no credentials); in production `/transcode`
//! takes only Google-signed OIDC ID tokens from allowed service accounts (Cloud Run invocations,
//! Pub/Sub push, Eventarc), `/upload` takes the same or the `UPLOAD_TOKEN` secret, and
//! `/video-status` and `/metrics` can be closed to need either. Checked here as defence in depth
//! even when Cloud Run's IAM has checked the caller first.

mod keys;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use google_cloud_auth::credentials::idtoken::verifier::{self, Verifier};
use google_cloud_auth::errors::CredentialsError;

use super::ApiError;
use keys::{KeyError, PublishedKeys};
pub use settings::{AccessSettings, GOOGLE_JWKS_URL, UploadToken};

/// Longest a token check may take (fetching the keys included) before the caller gets 503.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Body bytes read and dropped after a refusal, at most, and for how long.
const DRAIN_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The routes that can be closed.
#[derive(Clone, Copy, Debug)]
pub enum Route {
    Trigger,
    /// `/work`: queued units, from the push subscriptions' account.
    Work,
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
            Route::Trigger | Route::Work => Rule {
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
            (Some(tokens), true) => self.check_id_token(tokens, token, route).await,
            _ => Err(ApiError::Unauthorized(
                "the bearer token is not valid".into(),
            )),
        }
    }

    async fn check_id_token(
        &self,
        tokens: &tokio::sync::Mutex<TokenCheck>,
        token: &str,
        route: Route,
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
                        .allowed(route)
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

impl Access {
    /// Whose ID tokens `route` takes: `/work` has its own list.
    fn allowed(&self, route: Route) -> Box<dyn Iterator<Item = &str> + '_> {
        match route {
            Route::Work => Box::new(self.settings.work_emails()),
            _ => Box::new(self.settings.allowed_emails()),
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
    error.into_refusal(version)
}

/// Reads and drops what the refused client is still sending (up to a cap), so an HTTP/1.1
/// client in the middle of an upload reads its 401 instead of a broken pipe.
pub(in crate::api) fn drain(body: Body) {
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
    use settings::tests::settings;

    fn authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
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
