//! The instance's encode pool, shared by every job: a `Semaphore` bounds concurrent encoders,
//! waiting passes start in priority order (tier, then arrival), and a memory guard holds a pass
//! back until the machine has room for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::media::ladder::Tier;

/// How often waiters re-read available memory when nothing else wakes them.
const MEMORY_POLL: Duration = Duration::from_millis(250);

/// Reads how much memory the instance can still use; a trait so tests can fake a low reading.
pub trait MemoryProbe: Send + Sync {
    fn available_bytes(&self) -> u64;
}

/// The real reading: the smaller of the machine's available memory and the cgroup's free memory
/// (a Cloud Run instance's limit is its cgroup).
pub struct SystemMemory(Mutex<sysinfo::System>);

impl SystemMemory {
    /// Fails where the machine's memory cannot be read (no `/proc`, as in a bare chroot): every
    /// reading would be 0 and each encode would wait `RENDITION_TIMEOUT` before failing.
    pub fn new() -> Result<Self, String> {
        let mut system =
            sysinfo::System::new().map_err(|e| format!("reading system memory: {e}"))?;
        system.refresh_memory();
        if system.total_memory() == 0 {
            return Err(
                "cannot read this machine's memory: /proc/meminfo is missing or empty \
                 (is /proc mounted?); the memory guard needs it to start encodes"
                    .into(),
            );
        }
        Ok(Self(Mutex::new(system)))
    }
}

impl MemoryProbe for SystemMemory {
    fn available_bytes(&self) -> u64 {
        let mut system = self.0.lock().expect("sysinfo lock");
        system.refresh_memory();
        let machine = system.available_memory();
        system
            .cgroup_limits()
            .map_or(machine, |c| machine.min(c.free_memory))
    }
}

/// A memory reading tests set by hand.
#[derive(Default)]
pub struct FixedMemory(pub AtomicU64);

impl MemoryProbe for FixedMemory {
    fn available_bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Estimated peak memory of one encoder at `width`×`height`: x264's lookahead and reference
/// frames plus the scaler, measured at about 80 bytes per pixel with `veryfast`, plus a fixed
/// 48 MiB for the codec contexts and muxer.
pub fn encoder_bytes(width: u32, height: u32) -> u64 {
    48 * 1024 * 1024 + 80 * u64::from(width) * u64::from(height)
}

/// Estimated memory of the decode side of a pass: the decoder's frame pool and the frames in
/// flight to each encoder, for a source of `width`×`height`.
pub fn decoder_bytes(width: u32, height: u32) -> u64 {
    32 * 1024 * 1024 + 40 * u64::from(width) * u64::from(height)
}

pub struct Scheduler {
    permits: Arc<Semaphore>,
    capacity: usize,
    memory: Arc<dyn MemoryProbe>,
    reserve: u64,
    memory_wait_limit: Duration,
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    next_seq: u64,
    /// Memory promised to running passes (their estimates).
    running_bytes: u64,
    running_encoders: usize,
}

struct Waiter {
    tier: Tier,
    seq: u64,
    permits: usize,
    bytes: u64,
}

/// A running pass's hold on the pool; dropping it frees the encoders and the memory.
pub struct Grant {
    _permits: OwnedSemaphorePermit,
    encoders: usize,
    bytes: u64,
    scheduler: Arc<Scheduler>,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.scheduler.release(self.encoders, self.bytes);
    }
}

/// Removes a waiter that gave up (its job was cancelled) from the queue.
struct Ticket<'a> {
    scheduler: &'a Scheduler,
    seq: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut queue = self.scheduler.queue.lock().expect("queue lock");
        queue.waiting.retain(|w| w.seq != self.seq);
        metrics::gauge!("transcoder_queue_depth").set(queue.waiting.len() as f64);
        drop(queue);
        self.scheduler.wake.notify_waiters();
    }
}

impl Scheduler {
    /// A pool of `capacity` concurrent encoders that keeps `reserve` bytes of memory free.
    pub fn new(
        capacity: usize,
        memory: Arc<dyn MemoryProbe>,
        reserve: u64,
        memory_wait_limit: Duration,
    ) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            memory,
            reserve,
            memory_wait_limit,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Encoders free right now with nobody waiting for them.
    pub fn idle_encoders(&self) -> usize {
        let queue = self.queue.lock().expect("queue lock");
        if queue.waiting.is_empty() {
            self.permits.available_permits()
        } else {
            0
        }
    }

    /// Memory available now, as the guard reads it.
    pub fn available_memory(&self) -> u64 {
        self.memory.available_bytes()
    }

    /// Passes waiting for the pool.
    pub fn queue_depth(&self) -> usize {
        self.queue.lock().expect("queue lock").waiting.len()
    }

    /// Encoders running and the memory promised to their passes (estimates), for operators.
    pub fn running(&self) -> (usize, u64) {
        let queue = self.queue.lock().expect("queue lock");
        (queue.running_encoders, queue.running_bytes)
    }

    /// The memory the guard keeps free (`MEMORY_RESERVE_MB`).
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Waits until a pass of `encoders` renditions at `tier`, needing about `bytes` of memory,
    /// is the most urgent waiting work and the pool and the memory have room for it. A pass
    /// bigger than the whole pool takes the whole pool; one that does not fit in memory less the
    /// reserve fails after `memory_wait_limit` of waiting with none of our encodes running (no
    /// finishing encode of ours would free memory). Cancel-safe: dropping the future leaves the
    /// queue.
    pub async fn acquire(
        self: &Arc<Self>,
        tier: Tier,
        encoders: usize,
        bytes: u64,
    ) -> Result<Grant, String> {
        let permits = encoders.clamp(1, self.capacity);
        let seq = {
            let mut queue = self.queue.lock().expect("queue lock");
            let seq = queue.next_seq;
            queue.next_seq += 1;
            queue.waiting.push(Waiter {
                tier,
                seq,
                permits,
                bytes,
            });
            metrics::gauge!("transcoder_queue_depth").set(queue.waiting.len() as f64);
            seq
        };
        let ticket = Ticket {
            scheduler: self,
            seq,
        };
        let mut logged = false;
        let mut alone_since: Option<Instant> = None;
        loop {
            let notified = self.wake.notified();
            match self.try_start(ticket.seq) {
                Ok(grant) => return Ok(grant),
                Err(Blocked::Memory {
                    available,
                    needed,
                    alone,
                }) => {
                    if !logged {
                        logged = true;
                        tracing::info!(
                            available_mib = available >> 20,
                            needed_mib = needed >> 20,
                            "waiting for memory before starting an encode"
                        );
                    }
                    if !alone {
                        alone_since = None;
                    } else if alone_since.get_or_insert_with(Instant::now).elapsed()
                        >= self.memory_wait_limit
                    {
                        return Err(format!(
                            "not enough memory: the encode needs about {} MiB and only {} MiB \
                             stayed available (beyond the {} MiB reserve) for {} s",
                            needed >> 20,
                            available >> 20,
                            self.reserve >> 20,
                            self.memory_wait_limit.as_secs()
                        ));
                    }
                }
                Err(Blocked::Turn) => {}
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(MEMORY_POLL) => {}
            }
        }
    }

    fn try_start(self: &Arc<Self>, seq: u64) -> Result<Grant, Blocked> {
        let mut queue = self.queue.lock().expect("queue lock");
        let head = queue
            .waiting
            .iter()
            .min_by_key(|w| (w.tier, w.seq))
            .ok_or(Blocked::Turn)?;
        if head.seq != seq {
            return Err(Blocked::Turn);
        }
        let (permits, bytes) = (head.permits, head.bytes);
        let available = self.memory.available_bytes();
        metrics::gauge!("transcoder_memory_available_bytes").set(available as f64);
        // Running passes may not have reached their peak yet: count their estimates as used.
        let free = available.saturating_sub(self.reserve + queue.running_bytes);
        if free < bytes {
            return Err(Blocked::Memory {
                available: free,
                needed: bytes,
                alone: queue.running_encoders == 0,
            });
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(permits as u32)
            .map_err(|_| Blocked::Turn)?;
        queue.waiting.retain(|w| w.seq != seq);
        queue.running_bytes += bytes;
        queue.running_encoders += permits;
        metrics::gauge!("transcoder_queue_depth").set(queue.waiting.len() as f64);
        metrics::gauge!("transcoder_encodes_running").set(queue.running_encoders as f64);
        Ok(Grant {
            _permits: permit,
            encoders: permits,
            bytes,
            scheduler: self.clone(),
        })
    }

    fn release(&self, encoders: usize, bytes: u64) {
        let mut queue = self.queue.lock().expect("queue lock");
        queue.running_bytes -= bytes;
        queue.running_encoders -= encoders;
        metrics::gauge!("transcoder_encodes_running").set(queue.running_encoders as f64);
        drop(queue);
        self.wake.notify_waiters();
    }
}

enum Blocked {
    /// Someone more urgent is waiting, or the pool is full.
    Turn,
    /// Not enough memory; `alone` when none of our encodes runs (so none will free any).
    Memory {
        available: u64,
        needed: u64,
        alone: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(bytes: u64) -> Arc<FixedMemory> {
        Arc::new(FixedMemory(AtomicU64::new(bytes)))
    }

    #[tokio::test]
    async fn urgent_tiers_start_first_then_arrival_order() {
        let pool = Scheduler::new(1, memory(1 << 40), 0, Duration::from_secs(60));
        let busy = pool.acquire(Tier::Standard, 1, 0).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (name, tier) in [
            ("premium", Tier::Premium),
            ("standard-1", Tier::Standard),
            ("critical", Tier::Critical),
            ("standard-2", Tier::Standard),
        ] {
            let (shared, order) = (pool.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _grant = shared.acquire(tier, 1, 0).await.unwrap();
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            while pool.queue_depth() < waiters.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(busy);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["critical", "standard-1", "standard-2", "premium"]
        );
        assert_eq!(pool.idle_encoders(), 1);
    }

    #[tokio::test]
    async fn low_memory_holds_an_encode_until_memory_returns() {
        let reading = memory(100 << 20);
        let pool = Scheduler::new(4, reading.clone(), 50 << 20, Duration::from_secs(60));
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(Tier::Critical, 2, 200 << 20).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!waiting.is_finished(), "started without memory");
        reading.0.store(300 << 20, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("started once memory returned")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn hopeless_memory_wait_fails_with_a_reason() {
        let pool = Scheduler::new(2, memory(10 << 20), 0, Duration::from_millis(300));
        let err = pool.acquire(Tier::Premium, 1, 1 << 30).await.err().unwrap();
        assert!(err.contains("not enough memory"), "{err}");
        assert_eq!(pool.queue_depth(), 0, "the waiter left the queue");
    }
}
