//! Reading an object in place by ranged reads: a blocking `Read + Seek` view of it, for libav's
//! custom IO, that holds at most one read-ahead window in memory. On Cloud Run scratch is
//! memory, so a source read this way costs a few MiB instead of its whole size.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{Store, StoreError};

/// One object of a store, opened for blocking ranged reads from libav's threads.
#[derive(Debug)]
pub struct StoreObject {
    store: Arc<dyn Store>,
    key: String,
    size: u64,
    runtime: tokio::runtime::Handle,
    /// Bytes fetched so far by every reader of this object: a job's progress while reading.
    fetched: Arc<AtomicU64>,
    /// The last read that failed: libav sees only "I/O error", the job says what failed.
    failure: Mutex<Option<String>>,
}

impl StoreObject {
    /// Opens `key` of `store` (its size is asked once); `NotFound` if it does not exist. Reads
    /// run on the calling runtime, so readers must be used off its worker threads.
    pub async fn open(store: Arc<dyn Store>, key: &str) -> Result<Self, StoreError> {
        let size = store
            .size(key)
            .await?
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        Ok(Self {
            store,
            key: key.to_string(),
            size,
            runtime: tokio::runtime::Handle::current(),
            fetched: Arc::default(),
            failure: Mutex::default(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The count of bytes fetched from the store so far, shared with every reader.
    pub fn fetched(&self) -> Arc<AtomicU64> {
        self.fetched.clone()
    }

    /// Why the last failed read failed, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A reader from the start that fetches `window` bytes at a time and keeps only those.
    pub fn reader(self: &Arc<Self>, window: usize) -> ObjectReader {
        ObjectReader {
            object: self.clone(),
            window_size: window.max(1),
            pos: 0,
            start: 0,
            window: Bytes::new(),
        }
    }

    /// Blocks on one ranged read; must not run on an async worker thread.
    fn read_at(&self, offset: u64, len: u64) -> io::Result<Bytes> {
        let read = self.store.read_range(&self.key, offset, len);
        let bytes = self.runtime.block_on(read).map_err(|e| {
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            io::Error::other(e)
        })?;
        self.fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }
}

/// A `Read + Seek` cursor over a [`StoreObject`] with a bounded read-ahead window: a read
/// outside the window replaces it with the next `window_size` bytes from there.
#[derive(Debug)]
pub struct ObjectReader {
    object: Arc<StoreObject>,
    window_size: usize,
    pos: u64,
    /// Where `window` starts in the object.
    start: u64,
    window: Bytes,
}

impl ObjectReader {
    /// Bytes held in memory now (never more than the window size).
    pub fn buffered(&self) -> usize {
        self.window.len()
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.object.size;
        if buf.is_empty() || self.pos >= size {
            return Ok(0);
        }
        let end = self.start + self.window.len() as u64;
        if self.pos < self.start || self.pos >= end {
            self.window = Bytes::new(); // freed before the next one arrives
            let want = (size - self.pos).min(self.window_size as u64);
            let mut fetched = self.object.read_at(self.pos, want)?;
            fetched.truncate(self.window_size);
            self.window = fetched;
            self.start = self.pos;
            if self.window.is_empty() {
                return Ok(0); // the object shrank under us
            }
        }
        let at = (self.pos - self.start) as usize;
        let n = buf.len().min(self.window.len() - at);
        buf[..n].copy_from_slice(&self.window[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.object.size.checked_add_signed(d),
        };
        self.pos = pos
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;

    /// Random seeks and reads through a small window give the object's bytes, hold at most
    /// the window, and every fetched byte is counted.
    #[test]
    fn random_seeks_and_reads_equal_the_bytes() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0u32..1_000_003)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.path().join("clip.bin"), &bytes).unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()).unwrap());
        let object = runtime
            .block_on(StoreObject::open(store.clone(), "clip.bin"))
            .unwrap();
        let object = Arc::new(object);
        assert_eq!(object.size(), bytes.len() as u64);
        const WINDOW: usize = 64 * 1024;
        let mut reader = object.reader(WINDOW);
        let mut state = 12345u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % n
        };
        for _ in 0..500 {
            let to = next(bytes.len() as u64 + 100);
            let pos = match next(3) {
                0 => reader.seek(SeekFrom::Start(to)).unwrap(),
                1 => reader
                    .seek(SeekFrom::End(to as i64 - bytes.len() as i64))
                    .unwrap(),
                _ => {
                    let back = reader.stream_position().unwrap().min(next(5000)) as i64;
                    reader.seek(SeekFrom::Current(-back)).unwrap()
                }
            } as usize;
            let mut got = vec![0u8; next(200_000) as usize + 1];
            let mut filled = 0;
            while filled < got.len() {
                match reader.read(&mut got[filled..]).unwrap() {
                    0 => break,
                    n => filled += n,
                }
            }
            let expected = &bytes[pos.min(bytes.len())..(pos + got.len()).min(bytes.len())];
            assert_eq!(&got[..filled], expected, "at {pos}");
            assert!(reader.buffered() <= WINDOW);
        }
        assert!(reader.seek(SeekFrom::Current(-1 - 2_000_000)).is_err());
        let fetched = object.fetched().load(Ordering::Relaxed);
        assert!(fetched > 0);
        assert_eq!(reader.seek(SeekFrom::End(0)).unwrap(), bytes.len() as u64);
        let missing = runtime.block_on(StoreObject::open(store, "nothing.bin"));
        assert!(matches!(missing, Err(StoreError::NotFound(_))));
    }
}
