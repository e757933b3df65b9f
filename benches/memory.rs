//! Memory of a `keywarden serve` process under hashing floods, against its hashing budget (issue 19 §3).
//!
//! The server runs as a process of its own (standard argon2id cost, SQLite), so its resident set is
//! its own. The budget is `max_concurrent × memory_kib`: the argon2 working memory that may be in
//! use at once. The target: peak RSS after 1,000 concurrent sign-ups ≤ 100 MB + that budget, and the
//! same after 1,000 concurrent wrong passwords. Run with `cargo bench --bench memory`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

const CONCURRENT: usize = 1_000;

/// (VmRSS, VmHWM) of a process, in MiB.
fn rss_of(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &std::path::Path, max_concurrent: usize) -> Self {
        let binary =
            std::env::var("KEYWARDEN_TEST_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keywarden").to_owned());
        let log = dir.join("server.log");
        let child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("KEYWARDEN_LOG_FORMAT", "json")
            .env("KEYWARDEN_LOG", "warn,keywarden::server=info")
            .env("KEYWARDEN_PASSWORD_HASHING__MAX_CONCURRENT", max_concurrent.to_string())
            // Every one of the thousand is hashed, none turned away: the worst case for memory.
            .env("KEYWARDEN_PASSWORD_HASHING__MAX_WAITING", (CONCURRENT * 2).to_string())
            // Every wrong password is checked, none held back by the throttle.
            .env("KEYWARDEN_THROTTLE__ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("keywarden starts");
        // Owned at once, so that it is stopped (and waited for) whatever happens next.
        let mut server = Self { child, base: String::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut text = String::new();
            std::fs::File::open(&log).unwrap().read_to_string(&mut text).unwrap();
            let addr = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find_map(|event| {
                (event["fields"]["message"] == "keywarden is listening" || event["message"] == "keywarden is listening")
                    .then(|| event["fields"]["addr"].as_str().or(event["addr"].as_str()).map(str::to_owned))
                    .flatten()
            });
            if let Some(addr) = addr {
                server.base = format!("http://{addr}");
                return server;
            }
            assert!(Instant::now() < deadline, "keywarden did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `CONCURRENT` requests all at once; the answers by status, and how long it took.
async fn flood(http: &reqwest::Client, url: &str, body: impl Fn(usize) -> Value) -> (String, Duration) {
    let started = Instant::now();
    let statuses: Vec<u16> = stream::iter(0..CONCURRENT)
        .map(|i| {
            let request = http.post(url).json(&body(i));
            async move { request.send().await.map_or(0, |r| r.status().as_u16()) }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(status).or_insert(0) += 1;
    }
    let said: Vec<String> = counts.iter().map(|(status, n)| format!("{n}×{status}")).collect();
    (said.join(" "), started.elapsed())
}

#[tokio::main]
async fn main() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let memory_kib = keywarden::domain::password::HashCost::default().memory_kib;
    let budget_mib = (cores * memory_kib as usize) as f64 / 1024.0;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), cores);
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(CONCURRENT).build().unwrap();
    let (idle, _) = rss_of(server.pid());

    let signup = format!("{}/api/v1/accounts", server.base);
    let (created, took) = flood(&http, &signup, |i| {
        json!({ "email": format!("mem{i}@example.com"), "username": format!("mem{i}"), "password": format!("a fine passphrase {i}") })
    })
    .await;
    let (after_signups, peak_signups) = rss_of(server.pid());

    let signin = format!("{}/api/v1/sessions", server.base);
    let (answered, took_wrong) = flood(&http, &signin, |i| {
        json!({ "login": format!("mem{}", i % 50), "password": "wrong passphrase",
                "device": { "client_id": format!("bench-{i}"), "product": "bench", "platform": "linux", "name": "bench" } })
    })
    .await;
    let (after_wrong, peak_wrong) = rss_of(server.pid());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (settled, _) = rss_of(server.pid());

    let target = 100.0 * 1_000_000.0 / (1024.0 * 1024.0) + budget_mib;
    println!();
    println!("{:<72} {:>10} {:>10}", "keywarden serve (SQLite, argon2id m=19 MiB), resident set", "MiB", "target");
    println!("{}", "-".repeat(94));
    println!("{:<72} {idle:>10.1}", "idle, after start");
    println!("{:<72} {budget_mib:>10.1}", format!("hashing budget: {cores} × {memory_kib} KiB"));
    let verdict =
        |peak: f64| if peak <= target { format!("≤ {target:.0} ✓") } else { format!("≤ {target:.0} ✗") };
    println!(
        "{:<72} {peak_signups:>10.1} {:>10}",
        format!("peak after {CONCURRENT} concurrent sign-ups ({created} in {:.1} s)", took.as_secs_f64()),
        verdict(peak_signups)
    );
    println!("{:<72} {after_signups:>10.1}", "right after them");
    println!(
        "{:<72} {peak_wrong:>10.1} {:>10}",
        format!("peak after {CONCURRENT} concurrent wrong passwords ({answered} in {:.1} s)", took_wrong.as_secs_f64()),
        verdict(peak_wrong)
    );
    println!("{:<72} {after_wrong:>10.1}", "right after them");
    println!("{:<72} {settled:>10.1}", "5 s later, idle");
    println!();
    println!(
        "machine: {cores} cores; the load generator shares them; 100 MB = {:.1} MiB",
        100.0 * 1_000_000.0 / 1048576.0
    );
}
