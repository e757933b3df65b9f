//! keywarden's integration suite: the real server on an ephemeral port, driven over HTTP, on SQLite
//! always and on PostgreSQL when `KEYWARDEN_TEST_POSTGRES_URL` is set (required in CI).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod incident;

mod account_deletion;
mod account_status;
mod admission;
mod adversary;
mod audit_export;
mod bad_input;
mod breach_drill;
mod breach_response;
mod cli;
mod data_export;
mod devices;
mod dpop;
mod dpop_client;
mod enumeration;
mod faults;
mod honeytokens;
mod key_rotation;
mod mail;
mod mfa;
mod mfa_policy;
mod new_devices;
mod nodes;
mod oauth_clients;
mod oidc;
mod operations;
mod pages;
mod passkeys;
mod plex;
mod plex_tools;
mod process;
mod revocation;
mod signup_modes;
mod smtp;
mod sso;
mod story;
mod throttling;
mod validation_cache;
