//! Google Cloud Storage through the official `google-cloud-storage` client: `gs://bucket[/prefix]`.
//! Only object reads and writes (JSON API) are used, so the job path works against emulators too;
//! deletes and listings go through the JSON API directly, because the client offers them only
//! over gRPC (which emulators do not speak).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_auth::credentials::{self, Credentials};
use google_cloud_gax::error::Error as GcsError;
use google_cloud_storage::client::Storage;
use google_cloud_storage::model_ext::ReadRange;
use google_cloud_storage::streaming_source::{Payload, StreamingSource};
use tokio::io::AsyncWriteExt;

use super::{
    ByteStream, ObjectMeta, SignedUpload, Store, StoreError, UploadTerms, Version, validate_key,
};
use limited::Limited;
use retry::LoggedRetries;

mod json_api;
mod limited;
mod retry;
mod signed;

const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";

/// How a store reaches Cloud Storage.
#[derive(Clone, Debug, Default)]
pub struct GcsOptions {
    /// An emulator's base URL (`http://127.0.0.2`); then credentials are anonymous. `None`: Google,
    /// with Application Default Credentials.
    pub endpoint: Option<String>,
    /// How long one call keeps retrying transient faults (429, 5xx, resets, timeouts).
    pub retry_budget: Duration,
}

#[derive(Debug)]
pub struct GcsStore {
    client: Storage,
    credentials: Credentials,
    http: reqwest::Client,
    endpoint: String,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    /// How long a direct JSON API call keeps retrying (the client's calls have their own policy).
    retry_budget: Duration,
    /// Signs direct-upload URLs; `Err` says why this instance cannot (asked only then).
    signer: Result<google_cloud_auth::signer::Signer, String>,
}

impl GcsStore {
    /// A store for `gs://bucket[/prefix]`.
    pub async fn new(spec: &str, options: &GcsOptions) -> Result<Self, String> {
        let (bucket, prefix) = parse_spec(spec)?;
        let credentials = match &options.endpoint {
            Some(_) => credentials::anonymous::Builder::new().build(),
            None => credentials::Builder::default()
                .build()
                .map_err(|e| format!("no Google credentials for `{spec}`: {e}"))?,
        };
        let endpoint = options
            .endpoint
            .clone()
            .unwrap_or_else(|| GOOGLE_ENDPOINT.to_string());
        let mut builder = Storage::builder()
            .with_credentials(credentials.clone())
            .with_retry_policy(LoggedRetries::new(options.retry_budget))
            .with_backoff_policy(retry::backoff());
        if let Some(endpoint) = &options.endpoint {
            // Emulators mishandle single-shot (multipart) uploads; resumable ones work everywhere.
            builder = builder
                .with_endpoint(endpoint.clone())
                .with_resumable_upload_threshold(0_usize);
        }
        let client = builder
            .build()
            .await
            .map_err(|e| format!("cannot open `{spec}`: {e}"))?;
        Ok(Self {
            client,
            credentials,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?,
            endpoint,
            bucket,
            prefix,
            retry_budget: options.retry_budget,
            signer: signed::default_signer(),
        })
    }

    fn resource(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    fn object(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn url(&self, key: &str) -> String {
        format!("gs://{}/{}{key}", self.bucket, self.prefix)
    }

    /// Sorts a failed call (after its retries) into what the job can say about it.
    fn error(&self, key: &str, e: GcsError) -> StoreError {
        let url = self.url(key);
        match e.http_status_code() {
            Some(404) => StoreError::NotFound(url),
            Some(412) => StoreError::Changed(url),
            Some(401 | 403) => StoreError::Denied(format!("{url}: {e}")),
            _ => StoreError::Remote(format!("{url}: {e}")),
        }
    }

    /// Writes `key` whole. Writing the same bytes again is harmless, so it may be retried.
    async fn write<P>(&self, key: &str, payload: impl Into<Payload<P>>) -> Result<(), StoreError>
    where
        P: StreamingSource + google_cloud_storage::streaming_source::Seek + Send + Sync + 'static,
    {
        let meta = ObjectMeta::for_key(key);
        self.client
            .write_object(self.resource(), self.object(key)?, payload)
            .set_content_type(meta.content_type)
            .set_cache_control(meta.cache_control)
            .with_idempotency(true)
            .send_unbuffered()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }
}

/// `gs://bucket[/prefix]` → (bucket, "" or "prefix/").
fn parse_spec(spec: &str) -> Result<(String, String), String> {
    let rest = spec
        .strip_prefix("gs://")
        .ok_or_else(|| format!("`{spec}` does not start with gs://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=222).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !valid_bucket {
        return Err(format!("`{bucket}` in `{spec}` is not a bucket name"));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Ok((bucket.into(), String::new()));
    }
    validate_key(prefix).map_err(|e| format!("`{spec}`: {e}"))?;
    Ok((bucket.into(), format!("{prefix}/")))
}

#[async_trait]
impl Store for GcsStore {
    fn describe(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.prefix)
            .trim_end_matches('/')
            .to_string()
    }

    fn bucket(&self) -> Option<&str> {
        Some(&self.bucket)
    }

    fn key_of_object(&self, name: &str) -> Option<String> {
        let key = name.strip_prefix(&self.prefix)?;
        (!key.is_empty()).then(|| key.to_string())
    }

    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.get_versioned(key).await?.map(|(bytes, _)| bytes))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        let read = self
            .client
            .read_object(self.resource(), self.object(key)?)
            .send()
            .await;
        let mut response = match read {
            Ok(response) => response,
            Err(e) if e.http_status_code() == Some(404) => return Ok(None),
            Err(e) => return Err(self.error(key, e)),
        };
        let generation = response.object().generation;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| self.error(key, e))?);
        }
        Ok(Some((bytes.into(), generation)))
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.write(key, bytes).await
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Bytes,
        only_if: Version,
    ) -> Result<Version, StoreError> {
        let meta = ObjectMeta::for_key(key);
        // One single-shot request with its checksum up front. (fake-gcs-server checks
        // preconditions only on single-shot uploads, and mangles one whose checksum trails.)
        let object = self
            .client
            .write_object(self.resource(), self.object(key)?, bytes.clone())
            .set_content_type(meta.content_type)
            .set_cache_control(meta.cache_control)
            .set_if_generation_match(only_if)
            .with_known_crc32c(crc32c::crc32c(&bytes))
            .with_resumable_upload_threshold(usize::MAX)
            .send_unbuffered()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(object.generation)
    }

    async fn put_stream(&self, key: &str, body: ByteStream, limit: u64) -> Result<u64, StoreError> {
        let over = Arc::new(AtomicBool::new(false));
        let source = Limited {
            body: std::sync::Mutex::new(body),
            limit,
            seen: 0,
            over: over.clone(),
        };
        let meta = ObjectMeta::for_key(key);
        // Not seekable: the client keeps one resumable chunk in memory until it is acknowledged.
        // A stream that fails or goes over the limit never finalises the upload, so nothing is kept.
        let written = self
            .client
            .write_object(self.resource(), self.object(key)?, source)
            .set_content_type(meta.content_type)
            .set_cache_control(meta.cache_control)
            .with_idempotency(true)
            .send_buffered()
            .await;
        match written {
            Ok(object) => Ok(object.size as u64),
            Err(_) if over.load(Ordering::Relaxed) => Err(StoreError::TooLarge(limit)),
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        let source = tokio::fs::File::open(file).await?;
        self.write(key, source).await?;
        tokio::fs::remove_file(file).await?;
        Ok(())
    }

    async fn download(&self, key: &str, to: &Path, max_bytes: u64) -> Result<u64, StoreError> {
        let mut response = self
            .client
            .read_object(self.resource(), self.object(key)?)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        let size = response.object().size.max(0) as u64;
        super::check_room(self.url(key), size, to, max_bytes)?;
        let mut file = tokio::fs::File::create(to).await?;
        while let Some(chunk) = response.next().await {
            file.write_all(&chunk.map_err(|e| self.error(key, e))?)
                .await?;
        }
        file.flush().await?;
        Ok(size)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        // A bucket away for a moment is retried as the client's own calls are: backoff from
        // 0.5 s, doubling to 16 s, within the retry budget.
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            match self.size_once(key).await {
                Err(StoreError::Remote(why)) if started.elapsed() + delay < self.retry_budget => {
                    tracing::warn!("Cloud Storage metadata read failed, retrying: {why}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(16));
                }
                answer => return answer,
            }
        }
    }

    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let read = self
            .client
            .read_object(self.resource(), self.object(key)?)
            .set_read_range(ReadRange::segment(offset, len))
            .send()
            .await;
        let mut response = match read {
            Ok(response) => response,
            // Past the end: nothing to read.
            Err(e) if e.http_status_code() == Some(416) => return Ok(Bytes::new()),
            Err(e) => return Err(self.error(key, e)),
        };
        let mut bytes = Vec::with_capacity(len.min(1 << 24) as usize);
        while let Some(chunk) = response.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| self.error(key, e))?);
        }
        bytes.truncate(len as usize);
        Ok(bytes.into())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let url = self.json_api_url(key)?;
        let headers = self.auth_headers(key).await?;
        let answer = self
            .http
            .delete(url)
            .headers(headers)
            .send()
            .await
            .map_err(|e| StoreError::Remote(format!("deleting {}: {e}", self.url(key))))?;
        match answer.status().as_u16() {
            200..300 | 404 => Ok(()),
            401 | 403 => Err(StoreError::Denied(format!("deleting {}", self.url(key)))),
            code => Err(StoreError::Remote(format!(
                "deleting {}: HTTP {code}",
                self.url(key)
            ))),
        }
    }

    async fn list(&self, folder: &str) -> Result<Vec<String>, StoreError> {
        self.list_once(folder).await
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.put(".ready", Bytes::from_static(b"ok")).await
    }

    async fn signed_upload(
        &self,
        key: &str,
        terms: &UploadTerms,
    ) -> Result<Option<SignedUpload>, StoreError> {
        self.sign_upload(key, terms).await.map(Some)
    }
}

#[cfg(test)]
mod tests;
