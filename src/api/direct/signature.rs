//! The signature of a local upload URL: HMAC-SHA256 over the video and the expiry, with a
//! 256-bit key made once and kept in the input store (`.upload-url-key`, never published), so
//! every instance on the same store accepts the URLs any of them handed out.

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use std::io::Read;

use crate::storage::{Store, StoreError};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Where the key is kept in the input store.
const KEY: &str = ".upload-url-key";

/// Signs and checks local upload URLs.
pub struct UploadSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for UploadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadSigner(..)")
    }
}

impl UploadSigner {
    /// The store's key, made (from the system's random source) if it has none yet; when two
    /// instances start at once, the first write wins and both use it.
    pub async fn for_store(store: &dyn Store) -> Result<Self, StoreError> {
        if let Some(key) = store.get(KEY).await? {
            return Self::from_stored(&key);
        }
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        match store.put_if(KEY, Bytes::from(hex::encode(key)), 0).await {
            Ok(_) => {
                if let Some(path) = store.local_path(KEY) {
                    // Only this service's user reads it.
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(Self { key: key.to_vec() })
            }
            Err(StoreError::Changed(_)) => {
                let stored = store.get(KEY).await?.ok_or_else(|| {
                    StoreError::NotFound(format!("{} in {}", KEY, store.describe()))
                })?;
                Self::from_stored(&stored)
            }
            Err(e) => Err(e),
        }
    }

    fn from_stored(text: &[u8]) -> Result<Self, StoreError> {
        let key = hex::decode(text.trim_ascii())
            .ok()
            .filter(|k| k.len() >= 32)
            .ok_or_else(|| StoreError::BadKey(format!("{KEY} does not hold a key")))?;
        Ok(Self { key })
    }

    fn mac(&self, video_id: &str, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("PUT\n{video_id}\n{expires}").as_bytes());
        mac
    }

    /// The URL's `signature`: hex of HMAC-SHA256(key, "PUT\n<videoId>\n<expires>").
    pub fn sign(&self, video_id: &str, expires: u64) -> String {
        hex::encode(self.mac(video_id, expires).finalize().into_bytes())
    }

    /// Whether `signature` is the one for this video and expiry (compared in constant time).
    pub fn verify(&self, video_id: &str, expires: u64, signature: &str) -> bool {
        match hex::decode(signature) {
            Ok(bytes) => self.mac(video_id, expires).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn instances_on_one_store_share_the_key_and_signatures_bind_video_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::LocalStore::new(dir.path()).unwrap();
        let first = UploadSigner::for_store(&store).await.unwrap();
        let second = UploadSigner::for_store(&store).await.unwrap();
        let signature = first.sign("v1", 100);
        assert!(second.verify("v1", 100, &signature));
        assert!(!second.verify("v2", 100, &signature));
        assert!(!second.verify("v1", 101, &signature));
        assert!(!second.verify("v1", 100, "zz"));
        let other = tempfile::tempdir().unwrap();
        let other = crate::storage::LocalStore::new(other.path()).unwrap();
        let stranger = UploadSigner::for_store(&other).await.unwrap();
        assert!(!stranger.verify("v1", 100, &signature));
    }
}
