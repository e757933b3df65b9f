//! The operator's tools: the command line, the admin console, the breach response and their progress output.

pub mod admin;
pub mod breach_response;
pub mod cli;
pub mod progress;
