//! V4 signed URLs for direct uploads into the bucket. The signer comes from Application
//! Default Credentials: on Cloud Run the metadata server's account, which signs through IAM's
//! signBlob (the account needs `roles/iam.serviceAccountTokenCreator` on itself; no key file);
//! with `GOOGLE_APPLICATION_CREDENTIALS` naming a service account key, locally with that key.

use std::time::Duration;

use google_cloud_auth::credentials;
use google_cloud_auth::signer::Signer;
use google_cloud_storage::builder::storage::SignedUrlBuilder;

use super::GcsStore;
use crate::storage::{SignedUpload, StoreError, UploadTerms};

/// Longest one signature may take (signBlob is a network call).
const SIGN_TIMEOUT: Duration = Duration::from_secs(10);

/// The signer of Application Default Credentials, or why there is none (a user's own login
/// cannot sign: only service accounts can).
pub(super) fn default_signer() -> Result<Signer, String> {
    credentials::Builder::default()
        .build_signer()
        .map_err(|e| format!("no credentials that can sign upload URLs: {e}"))
}

impl GcsStore {
    /// A PUT URL for `key`, signed for `terms`: the Content-Type and the size range are signed
    /// headers, so Cloud Storage refuses a request with another type or more bytes. The URL's
    /// host is this store's endpoint (an emulator's address in tests).
    pub(super) async fn sign_upload(
        &self,
        key: &str,
        terms: &UploadTerms,
    ) -> Result<SignedUpload, StoreError> {
        let signer = self
            .signer
            .as_ref()
            .map_err(|why| StoreError::Denied(why.clone()))?;
        let headers = vec![
            ("content-type".to_string(), terms.content_type.clone()),
            (
                "x-goog-content-length-range".to_string(),
                format!("0,{}", terms.max_bytes),
            ),
        ];
        let builder = headers.iter().fold(
            SignedUrlBuilder::for_object(self.resource(), self.object(key)?)
                .with_method(axum::http::Method::PUT)
                .with_expiration(terms.valid_for)
                .with_endpoint(self.endpoint.clone()),
            |builder, (name, value)| builder.with_header(name.clone(), value.clone()),
        );
        let url = tokio::time::timeout(SIGN_TIMEOUT, builder.sign_with(signer))
            .await
            .map_err(|_| {
                StoreError::Remote(format!(
                    "signing an upload URL for {}: timed out",
                    self.url(key)
                ))
            })?
            .map_err(|e| {
                StoreError::Remote(format!("signing an upload URL for {}: {e}", self.url(key)))
            })?;
        Ok(SignedUpload { url, headers })
    }
}
