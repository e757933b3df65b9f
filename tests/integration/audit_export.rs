//! The audit log leaving the building (issue 22 §5), on both engines: `admin audit export` keeps
//! each event's chain values, `admin audit verify --file` checks an export with the key file alone
//! (no database), and a head published with `admin audit head` exposes a truncated tail that the
//! chain alone cannot.

use serde_json::Value;

use crate::harness::{count_rows, Engine, TestServer};

crate::on_both_engines!(
    an_export_verifies_offline_and_every_edit_of_it_is_found,
    a_published_head_exposes_a_log_cut_back_behind_it
);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `keywarden admin audit verify --file F …` with the key file and a database that does not exist:
/// the check must not need one.
fn verify_offline(server: &TestServer, file: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keywarden"));
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARDEN_") {
            command.env_remove(name);
        }
    }
    let data_dir = server.data_dir();
    command
        .args(["admin", "audit", "verify", "--file", file.to_str().unwrap()])
        .args(extra)
        .args(["--key-file", data_dir.join("keys.toml").to_str().unwrap()])
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/no-database"]);
    command.output().expect("admin command runs")
}

async fn an_export_verifies_offline_and_every_edit_of_it_is_found(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    for name in ["ava", "bob", "cyd"] {
        server.sign_up(name, &format!("{name}@example.com"), &format!("{name}'s long passphrase")).await;
        server.sign_in(name, &format!("{name}'s long passphrase"), None).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.ndjson");
    let out = server.admin(&["audit", "export", "--output", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.len() >= 6, "{}", events.len());
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["prev_hash"], "", "the first event follows nothing");
    for pair in events.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "each line carries its chain values");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let verified = verify_offline(&server, &file, &[]);
    assert!(verified.status.success(), "{}{}", stdout(&verified), String::from_utf8_lossy(&verified.stderr));
    assert!(stdout(&verified).contains(&format!("{} events verified", events.len())));

    // Every kind of edit is found: a field changed, a line removed, lines swapped.
    let write = |name: &str, lines: Vec<String>| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut altered = lines.clone();
    altered[2] = altered[2].replacen("\"actor\":\"", "\"actor\":\"x", 1);
    let mut removed = lines.clone();
    removed.remove(3);
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    for (name, edited, finding) in [
        ("altered", altered, "event 3 was altered"),
        ("removed", removed, "events 4 to 4 are missing"),
        ("swapped", swapped, "does not follow"),
    ] {
        let out = verify_offline(&server, &write(name, edited), &[]);
        assert!(!out.status.success(), "{name}");
        assert!(stdout(&out).contains(finding), "{name}: {}", stdout(&out));
    }

    // A period's export stands on its own: its first event's predecessor is taken as given.
    let last = events.last().unwrap();
    let part = server.admin(&["audit", "export", "--since", last["time"].as_str().unwrap()]);
    assert!(part.status.success(), "{}", String::from_utf8_lossy(&part.stderr));
    let partial = write("partial", stdout(&part).lines().map(str::to_owned).collect());
    let first: Value = serde_json::from_str(stdout(&part).lines().next().unwrap()).unwrap();
    let expected = events.iter().find(|e| e["at"].as_i64() >= last["at"].as_i64()).unwrap();
    assert_eq!(first["seq"], expected["seq"], "from the first event at or after --since");
    assert!(first["seq"].as_i64().unwrap() > 1, "a period in the middle of the log");
    let out = verify_offline(&server, &partial, &[]);
    assert!(out.status.success(), "{}", stdout(&out));
    let exported =
        count_rows(&engine, &server.database_url, "SELECT COUNT(*) FROM audit_events WHERE kind = 'audit.exported'")
            .await;
    assert_eq!(exported, 2, "each export is audited");
    server.stop().await;
}

async fn a_published_head_exposes_a_log_cut_back_behind_it(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("dee", "dee@example.com", "dee's long passphrase").await;
    let head = server.admin(&["audit", "head"]);
    assert!(head.status.success());
    let published = stdout(&head).trim().to_owned();
    let (seq, hash) = published.split_once(':').expect("SEQ:HEX");
    let seq: i64 = seq.parse().unwrap();
    assert!(seq > 1 && hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{published}");
    server.sign_in("dee", "dee's long passphrase", None).await;
    let out = server.admin(&["audit", "verify", "--head", &published]);
    assert!(out.status.success(), "{}", stdout(&out));

    // Someone with the database cuts the log back to before the published head and makes the
    // head row agree: the chain alone is intact, the published head is not there any more.
    let cut = seq - 1;
    let statements = [
        format!("DELETE FROM audit_events WHERE seq > {cut}"),
        format!(
            "UPDATE audit_head SET seq = {cut}, hash = (SELECT hash FROM audit_events WHERE seq = {cut}) WHERE id = 1"
        ),
    ];
    exec(&engine, &server.database_url, &statements).await;
    let plain = server.admin(&["audit", "verify"]);
    assert!(plain.status.success(), "the chain alone cannot tell: {}", stdout(&plain));
    let anchored = server.admin(&["audit", "verify", "--head", &published]);
    assert!(!anchored.status.success());
    assert!(stdout(&anchored).contains("no longer holds the published head"), "{}", stdout(&anchored));

    // And so does an export of the cut log, offline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cut.ndjson");
    assert!(server.admin(&["audit", "export", "--output", file.to_str().unwrap()]).status.success());
    let offline = verify_offline(&server, &file, &["--head", &published]);
    assert!(!offline.status.success());
    assert!(stdout(&offline).contains("does not hold the published head"), "{}", stdout(&offline));
    assert!(!server.admin(&["audit", "verify", "--head", "12:zz"]).status.success(), "a malformed head is refused");
    server.stop().await;
}

async fn exec(engine: &Engine, url: &str, statements: &[String]) {
    use sqlx::Connection as _;
    match engine {
        Engine::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
            for sql in statements {
                sqlx::query(sql).execute(&mut db).await.unwrap();
            }
        }
        Engine::Postgres { .. } => {
            let mut db = sqlx::PgConnection::connect(url).await.unwrap();
            for sql in statements {
                sqlx::query(sql).execute(&mut db).await.unwrap();
            }
        }
    }
}
