//! keywarden: an account and sign-in server whose stolen database holds no working credential.
//!
//! Layout: `domain` is what the system means (no HTTP, no SQL); `store` persists it on SQLite or
//! PostgreSQL; `http` is the thin web layer; `keys` holds every secret that must stay out of the
//! database (with the token-signing keys); `server` wires them into a running node; `ops` is the
//! operator's command line and console; `outbound` every call keywarden makes out; `obs` metrics
//! and logs.

#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod domain;
pub mod fixture;
pub mod http;
pub mod keys;
pub mod mail;
pub mod obs;
pub mod ops;
pub mod outbound;
pub mod server;
pub mod store;
pub mod theme;
