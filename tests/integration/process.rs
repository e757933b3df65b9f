//! keywarden binaries run as separate processes, as an operator or a service manager runs them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_keywarden");

/// A `keywarden` process whose log lines are collected as they arrive.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    pub fn spawn(dir: &Path, args: &[&str]) -> Self {
        Self::spawn_with(dir, args, &[])
    }

    /// Spawns with more environment variables (`KEYWARDEN_DATABASE_URL`, …).
    pub fn spawn_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = command(dir);
        command.envs(env.iter().copied());
        let mut child = command.args(args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, log }
    }

    /// The process's resident memory, in KiB (Linux).
    pub fn resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the "listening" line and returns the address from it.
    pub fn wait_until_listening(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for line in self.log().lines() {
                let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
                if event["message"] == "keywarden is listening" {
                    return event["addr"].as_str().unwrap().to_owned();
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("keywarden exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("keywarden did not start: {}", self.log());
    }

    /// SIGTERM, as a service manager sends it; returns whether the process exited successfully.
    pub fn terminate(mut self) -> (bool, String) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(100));
        (exit.success(), self.log())
    }

    pub fn wait_for_exit(mut self) -> (bool, String) {
        let exit = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(100));
        (exit.success(), self.log())
    }
}

/// The binary in `dir`, with no inherited keywarden settings, weak hashing and debug JSON logs.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARDEN_") {
            command.env_remove(name);
        }
    }
    command
        .env("KEYWARDEN_PASSWORD_HASHING__PROFILE", "insecure-test-only")
        .env("KEYWARDEN_LOG", "debug")
        .env("KEYWARDEN_LOG_FORMAT", "json");
    command
}
