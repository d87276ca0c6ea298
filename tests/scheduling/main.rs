//! Scheduling contracts of the service, end to end on a real server: priority across jobs (tier,
//! then arrival), the memory guard, playable before ready, shutdown and resume (SIGTERM, SIGKILL),
//! and a failing job next to a healthy one. Orderings come from status timestamps, never wall
//! time. One test binary, one module per concern.

#[path = "../common/mod.rs"]
mod common;

mod priority; // tier then arrival, the memory guard, playable before ready, a missing source
mod progressive; // the master from the first segments, playable before the tier ends
mod retry; // a partial video triggered again; resume under changed encoding settings
mod shutdown; // SIGTERM and SIGKILL, resume on a new process, an upload in flight
mod support; // helpers these modules share
