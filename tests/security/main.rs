//! The service against callers it should not trust: access control (OIDC ID tokens, the
//! upload token, closed status and metrics) and the libav version check readiness makes. One
//! test binary, one module per concern.

#[path = "../common/mod.rs"]
mod common;

mod access; // who may call which route: ID tokens, the upload token, 401 vs 403
mod oidc; // a local token issuer: keys, a JWKS server, signed tokens
mod readiness; // libav versions in /readyz and the start-up log
mod support; // the JSON error body, requests with credentials
