//! The `keywarden` binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    keywarden::ops::cli::run().await
}
