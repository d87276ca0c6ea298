//! The service against callers it should not trust: access control (OIDC ID tokens, the
//! upload token, closed status and metrics), hostile requests (paths and odd characters in
//! ids, object names, file names and metadata) and hostile sources (playlists, concat lists
//! and MP4 references that name other files or URLs, over-size and over-long sources), plus
//! the libav version check readiness makes. One test binary, one module per concern.

#[path = "../common/mod.rs"]
mod common;

mod access; // who may call which route: ID tokens, the upload token, 401 vs 403
mod bait; // a canary file and a loopback listener that hostile sources point at
mod oidc; // a local token issuer: keys, a JWKS server, signed tokens
mod readiness; // libav versions in /readyz and the start-up log
mod requests; // traversal and odd characters in ids, object names, file names, metadata
mod sources; // sources that try to make libav read other files or URLs; size and duration
mod support; // the JSON error body, requests with credentials
