//! The gate: who may watch, decided before routing and before any stream work.
//!
//! ```text
//! connection ─► limits (heads, counts, idle) ─► tls (HTTPS on the LAN) ─► policy ─► serve
//!                                                                 │
//!                                        auth (LAN password) ─────┤
//!                                        access (Cloudflare Access, the tunnel listener)
//! ```
//!
//! The gate answers with a decision ([`policy::Admission`]): serve the request, or this
//! refusal (a status, headers, and a [`policy::Reply`] that says what to show). Rendering a
//! refusal (plain text, the login page from the embedded UI) is the serving side's job.

pub mod access;
pub mod auth;
pub mod limits;
pub mod origin;
pub mod policy;
pub mod tls;
