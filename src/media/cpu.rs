//! CPU time of one decode pass, measured per thread rather than estimated.
//!
//! A pass runs on its own thread and on encoder threads it starts, and libav and libx264 start
//! more threads of their own (frame-threaded decoding, x264's thread pool and lookahead). The
//! calling thread's clock misses those, and the process's clock also counts every other job.
//! So each pass gets a unique thread name (its tag): Linux copies a thread's name to every
//! thread it creates, so every libav or x264 thread started on the pass's behalf carries the
//! tag too. The meter sums the CPU clocks (`/proc/self/task/<tid>/schedstat`) of the threads
//! bearing the tag, read while they live: codecs call [`checkpoint`] just before they are
//! closed (closing joins their threads, whose clocks then vanish), and each enlisted thread is
//! read once more when it leaves the pass.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Tags already handed out, for unique thread names across passes.
static NEXT_TAG: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The pass the current thread works for, if any.
    static CURRENT: RefCell<Option<Arc<PassCpu>>> = const { RefCell::new(None) };
}

/// The CPU time one pass's threads used.
pub struct PassCpu {
    tag: String,
    /// Per thread id: the largest CPU time seen, and what it had already used when it joined.
    threads: Mutex<HashMap<i32, (u64, u64)>>,
}

impl PassCpu {
    pub fn new() -> Arc<Self> {
        let n = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        // Thread names hold 15 bytes: 7 + 8 digits. Only passes running at the same time need
        // different tags, so wrapping after 10^8 passes is harmless.
        Arc::new(Self {
            tag: format!("vt-pass{}", n % 100_000_000),
            threads: Mutex::new(HashMap::new()),
        })
    }

    /// Makes the calling thread (and every thread it starts from now on) work for this pass,
    /// until the returned guard drops.
    pub fn enlist(self: &Arc<Self>) -> Enlisted {
        let previous = thread_name();
        set_thread_name(&self.tag);
        let tid = current_tid();
        let used = thread_cpu_ns(tid).unwrap_or(0);
        self.threads.lock().expect("lock").insert(tid, (used, used));
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        Enlisted {
            meter: self.clone(),
            previous,
        }
    }

    /// Records the CPU time so far of every live thread bearing this pass's tag.
    pub fn collect(&self) {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        let mut threads = self.threads.lock().expect("lock");
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != self.tag {
                continue;
            }
            if let Some(used) = thread_cpu_ns(tid) {
                let seen = threads.entry(tid).or_insert((0, 0));
                seen.0 = seen.0.max(used);
            }
        }
    }

    /// How many threads have worked for the pass so far.
    pub fn threads(&self) -> usize {
        self.threads.lock().expect("lock").len()
    }

    /// CPU seconds the pass's threads used so far (as last collected).
    pub fn seconds(&self) -> f64 {
        let threads = self.threads.lock().expect("lock");
        let ns: u64 = threads
            .values()
            .map(|&(seen, before)| seen.saturating_sub(before))
            .sum();
        ns as f64 / 1e9
    }
}

/// A thread working for a pass; dropping it reads the pass's threads once more and gives the
/// thread its name back.
pub struct Enlisted {
    meter: Arc<PassCpu>,
    previous: Option<CString>,
}

impl Drop for Enlisted {
    fn drop(&mut self) {
        self.meter.collect();
        CURRENT.with(|c| *c.borrow_mut() = None);
        if let Some(name) = &self.previous {
            set_thread_name_c(name);
        }
    }
}

/// Reads the current pass's threads now: called by codecs just before they close and join
/// their threads. Does nothing on a thread that works for no pass.
pub fn checkpoint() {
    CURRENT.with(|c| {
        if let Some(meter) = c.borrow().as_ref() {
            meter.collect();
        }
    });
}

/// A field that calls [`checkpoint`] when dropped; declared first in a struct owning a codec,
/// it runs before the codec closes.
pub struct CheckpointOnDrop;

impl Drop for CheckpointOnDrop {
    fn drop(&mut self) {
        checkpoint();
    }
}

fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// CPU nanoseconds thread `tid` of this process has run: the scheduler's exact figure where the
/// kernel publishes it, else user + system clock ticks.
fn thread_cpu_ns(tid: i32) -> Option<u64> {
    let dir = format!("/proc/self/task/{tid}");
    let schedstat = std::fs::read_to_string(format!("{dir}/schedstat")).unwrap_or_default();
    if let Some(ns) = schedstat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
    {
        return Some(ns);
    }
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // Fields after the parenthesised name; utime and stime are the 14th and 15th overall.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / per_second)
}

fn thread_name() -> Option<CString> {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into the buffer.
    if unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    CString::new(&buf[..end]).ok()
}

fn set_thread_name(name: &str) {
    if let Ok(name) = CString::new(name) {
        set_thread_name_c(&name);
    }
}

fn set_thread_name_c(name: &CString) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string (truncated to 15 bytes).
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs until the calling thread has used `ms` of CPU (not wall) time.
    fn burn(ms: u64) {
        let tid = current_tid();
        let start = thread_cpu_ns(tid).unwrap();
        while thread_cpu_ns(tid).unwrap() - start < ms * 1_000_000 {
            std::hint::black_box(0);
        }
    }

    #[test]
    fn threads_started_by_an_enlisted_thread_are_counted_and_others_are_not() {
        let meter = PassCpu::new();
        let outsider = std::thread::spawn(|| burn(300));
        {
            let _enlisted = meter.enlist();
            assert_eq!(thread_name().unwrap().to_str().unwrap(), meter.tag);
            // A thread started the way libav does (not enlisted itself), read before it ends.
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
            let child = std::thread::spawn(move || {
                burn(200);
                done_tx.send(()).unwrap();
                let _ = end_rx.recv();
            });
            burn(100);
            done_rx.recv().unwrap();
            checkpoint();
            end_tx.send(()).unwrap();
            child.join().unwrap();
        }
        outsider.join().unwrap();
        let seconds = meter.seconds();
        // 0.1 s here and 0.2 s in the child; the outsider's 0.3 s is not ours.
        assert!((0.3..0.5).contains(&seconds), "{seconds}");
        assert_ne!(thread_name().unwrap().to_str().unwrap(), meter.tag);
    }
}
