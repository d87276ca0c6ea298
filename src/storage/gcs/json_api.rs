//! Direct calls to Cloud Storage's JSON API, for what the client does not do against every
//! emulator: an object's size (metadata), deletes and listings.

use google_cloud_auth::credentials;

use super::{GcsStore, StoreError};

impl GcsStore {
    /// The JSON API's URL of `key`'s object (metadata, deletes).
    pub(super) fn json_api_url(&self, key: &str) -> Result<reqwest::Url, StoreError> {
        let mut url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| StoreError::Remote(format!("{}: {e}", self.endpoint)))?;
        url.path_segments_mut()
            .map_err(|()| StoreError::Remote(self.endpoint.clone()))?
            .extend(["storage", "v1", "b", &self.bucket, "o", &self.object(key)?]);
        Ok(url)
    }

    /// One try at the object's size, from the JSON API's metadata (a ranged read's headers need
    /// not carry the whole size: emulators leave it out).
    pub(super) async fn size_once(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let answer = self
            .http
            .get(self.json_api_url(key)?)
            .headers(self.auth_headers(key).await?)
            .send()
            .await
            .map_err(|e| StoreError::Remote(format!("{}: {e}", self.url(key))))?;
        match answer.status().as_u16() {
            404 => return Ok(None),
            401 | 403 => return Err(StoreError::Denied(self.url(key))),
            200..300 => {}
            code => {
                return Err(StoreError::Remote(format!(
                    "{}: HTTP {code}",
                    self.url(key)
                )));
            }
        }
        #[derive(serde::Deserialize)]
        struct Metadata {
            size: String,
        }
        let body = answer
            .bytes()
            .await
            .map_err(|e| StoreError::Remote(format!("{}: {e}", self.url(key))))?;
        let metadata: Metadata = serde_json::from_slice(&body)
            .map_err(|e| StoreError::Remote(format!("{}: {e}", self.url(key))))?;
        let size = metadata.size.parse().map_err(|_| {
            StoreError::Remote(format!("{}: size `{}`", self.url(key), metadata.size))
        })?;
        Ok(Some(size))
    }

    /// The credentials' headers for a direct JSON API call.
    pub(super) async fn auth_headers(
        &self,
        key: &str,
    ) -> Result<reqwest::header::HeaderMap, StoreError> {
        match self
            .credentials
            .headers(axum::http::Extensions::new())
            .await
        {
            Ok(credentials::CacheableResource::New { data, .. }) => Ok(data),
            Ok(credentials::CacheableResource::NotModified) => Ok(Default::default()),
            Err(e) => Err(StoreError::Denied(format!("{}: {e}", self.url(key)))),
        }
    }
}

impl GcsStore {
    /// Every key under `folder`, page by page from the JSON API's object listing (one try per
    /// page: the caller polls again later).
    pub(super) async fn list_once(&self, folder: &str) -> Result<Vec<String>, StoreError> {
        let folder = format!("{}/", folder.trim_end_matches('/'));
        let prefix = format!("{}{folder}", self.prefix);
        let mut url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| StoreError::Remote(format!("{}: {e}", self.endpoint)))?;
        url.path_segments_mut()
            .map_err(|()| StoreError::Remote(self.endpoint.clone()))?
            .extend(["storage", "v1", "b", &self.bucket, "o"]);
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            items: Vec<Item>,
            next_page_token: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            name: String,
        }
        let failed = |e: &dyn std::fmt::Display| {
            StoreError::Remote(format!("listing {}: {e}", self.url(&folder)))
        };
        let (mut keys, mut token) = (Vec::new(), None::<String>);
        loop {
            let mut page_url = url.clone();
            page_url
                .query_pairs_mut()
                .append_pair("prefix", &prefix)
                .append_pair("fields", "items(name),nextPageToken");
            if let Some(token) = &token {
                page_url.query_pairs_mut().append_pair("pageToken", token);
            }
            let answer = self
                .http
                .get(page_url)
                .headers(self.auth_headers(&folder).await?)
                .send()
                .await
                .map_err(|e| failed(&e))?;
            match answer.status().as_u16() {
                200..300 => {}
                401 | 403 => return Err(StoreError::Denied(self.url(&folder))),
                code => return Err(failed(&format!("HTTP {code}"))),
            }
            let body = answer.bytes().await.map_err(|e| failed(&e))?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| failed(&e))?;
            keys.extend(
                page.items
                    .into_iter()
                    .filter_map(|item| item.name.strip_prefix(&self.prefix).map(str::to_string)),
            );
            match page.next_page_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }
}
