//! keywarden: an account and sign-in server whose stolen database holds no working credential.
//!
//! Layout: `domain` is what the system means (no HTTP, no SQL); `store` persists it on SQLite or
//! PostgreSQL; `http` is the thin web layer; `keys` holds every secret that must stay out of the
//! database; `server` wires them into a running node and `cli` is the command line.

#![forbid(unsafe_code)]

pub mod admin;
pub mod backchannel;
pub mod breach_response;
pub mod cli;
pub mod config;
pub mod domain;
pub mod fixture;
pub mod http;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod outbound;
pub mod progress;
pub mod server;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod theme;
pub mod upstream;
pub mod webhook;
