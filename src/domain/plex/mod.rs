//! The plex.tv-compatible surface's own logic: PINs that link a device to an account, claim tokens
//! that make a new media server its owner's, device keys that trade signed JWTs for short-lived
//! tokens, and the account's webhook list.
//!
//! A plex token (`kw_pt_`, `X-Plex-Token`) is a session's token like any other: it is issued by
//! `Sessions` with `Issue::PlexToken` and checked by `Sessions::authenticate_plex`, so every
//! revocation rule, sign-out and leak response applies to it unchanged.

pub mod claims;
pub mod device_keys;
pub mod pins;
pub mod webhooks;

pub use claims::Claims;
pub use device_keys::DeviceKeys;
pub use pins::Pins;
pub use webhooks::Webhooks;
