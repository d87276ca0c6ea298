//! The access-control settings: which credentials the service takes, checked at start-up so
//! that nothing locks everyone out or silently checks nothing, and the upload secret, which is
//! never shown.

use std::fmt;
use std::sync::Arc;

use clap::Args;
use clap::builder::BoolishValueParser;
use subtle::ConstantTimeEq;

use super::{Access, Route};

/// Google's signing keys for ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

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

    /// Service accounts allowed to deliver queued units to `/work` and `/work/dead-letter`
    /// (the push subscriptions' OIDC account), comma-separated; checked like `/transcode`'s,
    /// with the same audience. Nobody, while TRIGGER_AUDIENCE is set and this is not.
    #[arg(
        long,
        env = "WORK_ALLOWED_EMAILS",
        value_delimiter = ',',
        requires = "trigger_audience"
    )]
    pub work_allowed_emails: Vec<String>,

    /// Where the keys that sign ID tokens are published (JWKS).
    #[arg(long, env = "OIDC_JWKS_URL", default_value = GOOGLE_JWKS_URL)]
    pub oidc_jwks_url: String,

    /// Bearer secret `/upload` accepts (besides an allowed ID token); at least 16 characters.
    /// Give it by environment (Secret Manager in production): a flag shows in the process list.
    #[arg(long, env = "UPLOAD_TOKEN", hide_env_values = true, value_parser = UploadToken::parse)]
    pub upload_token: Option<UploadToken>,

    /// Whether `/video-status/{id}` and `/thumbnail/{id}.jpg` are open to anyone; when false
    /// they need the credentials of `/transcode` or the upload token.
    #[arg(long, env = "OPEN_STATUS", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub open_status: bool,

    /// Whether `/metrics` (and the operator page `/jobs`, `/jobs.json`) is open to anyone; when
    /// false it needs the credentials of `/transcode` or the upload token.
    #[arg(long, env = "OPEN_METRICS", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub open_metrics: bool,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            trigger_audience: None,
            trigger_allowed_emails: Vec::new(),
            work_allowed_emails: Vec::new(),
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

    pub(super) fn allowed_emails(&self) -> impl Iterator<Item = &str> {
        trimmed(&self.trigger_allowed_emails)
    }

    /// Who may deliver units to `/work`.
    pub(super) fn work_emails(&self) -> impl Iterator<Item = &str> {
        trimmed(&self.work_allowed_emails)
    }
}

fn trimmed(emails: &[String]) -> impl Iterator<Item = &str> {
    emails.iter().map(|e| e.trim()).filter(|e| !e.is_empty())
}

/// What each route requires, for the start-up log; never the secret itself.
impl fmt::Display for AccessSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = Access::new(self);
        let routes = [
            ("transcode", Route::Trigger),
            ("work", Route::Work),
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
    pub(super) fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for UploadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UploadToken(<redacted>)")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn settings(args: &[&str]) -> AccessSettings {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            access: AccessSettings,
        }
        let all = std::iter::once("test").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(all).unwrap().access
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
}
