//! What keywarden means, free of HTTP and SQL: accounts, passwords, devices, sessions and tokens.

pub mod accounts;
pub mod audit;
pub mod clients;
pub mod clock;
pub mod core;
pub mod device_keys;
pub mod devices;
pub mod dpop;
pub mod error;
pub mod identity;
pub mod oauth;
pub mod passkeys;
pub mod password;
pub mod pins;
pub mod recovery;
pub mod recovery_codes;
pub mod revocation;
pub mod second_factors;
pub mod sessions;
pub mod sso;
pub mod tokens;
pub mod totp;

pub use accounts::Accounts;
pub use audit::AuditLog;
pub use clients::Clients;
pub use core::Core;
pub use device_keys::DeviceKeys;
pub use devices::Devices;
pub use error::{Error, Result};
pub use oauth::OAuth;
pub use pins::Pins;
pub use recovery::Recovery;
pub use revocation::Revocations;
pub use second_factors::SecondFactors;
pub use sessions::Sessions;
pub use sso::Sso;
