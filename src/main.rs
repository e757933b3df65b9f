//! The `keywarden` binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    keywarden::cli::run().await
}
