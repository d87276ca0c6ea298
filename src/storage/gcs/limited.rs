//! An upload body with a size limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use google_cloud_storage::streaming_source::StreamingSource;

use crate::storage::ByteStream;

/// An upload body that stops at `limit` bytes and says so. (The client wants a `Sync` source; the
/// mutex provides that and is never locked, as `next` has `&mut self`.)
pub(super) struct Limited {
    pub(super) body: std::sync::Mutex<ByteStream>,
    pub(super) limit: u64,
    pub(super) seen: u64,
    pub(super) over: Arc<AtomicBool>,
}

impl StreamingSource for Limited {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        let body = self.body.get_mut().unwrap_or_else(|e| e.into_inner());
        let chunk = body.next().await?;
        if let Ok(chunk) = &chunk {
            self.seen += chunk.len() as u64;
            if self.seen > self.limit {
                self.over.store(true, Ordering::Relaxed);
                return Some(Err(std::io::Error::other("over the size limit")));
            }
        }
        Some(chunk)
    }
}
