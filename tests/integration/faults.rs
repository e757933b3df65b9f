//! Faults around the server: the database cut off, clients that stall, requests that declare too
//! much, and input the web framework refuses before any handler runs (issue 19).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::harness::{create_database, drop_database, Engine, Reply, TestServer};

/// A TCP proxy in front of PostgreSQL that can be cut (every connection dropped, new ones closed at
/// once, as a database restart looks), stalled (every connection held open with nothing passing, as
/// a network black hole looks) and mended.
struct Partition {
    addr: std::net::SocketAddr,
    /// `OPEN`, `CUT` or `STALLED`.
    mode: Arc<AtomicU8>,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

const OPEN: u8 = 0;
const CUT: u8 = 1;
const STALLED: u8 = 2;

impl Partition {
    async fn in_front_of(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(OPEN));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (now, on_change) = (mode.clone(), changed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                let (now, on_change, upstream) = (now.clone(), on_change.clone(), upstream.clone());
                tokio::spawn(async move {
                    match now.load(Ordering::SeqCst) {
                        CUT => return,
                        STALLED => return std::future::pending::<()>().await,
                        _ => {}
                    }
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = on_change.notified() => {}
                    }
                    if now.load(Ordering::SeqCst) == STALLED {
                        // Both ends stay open; nothing passes.
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Self { addr, mode, changed, task }
    }

    fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn stall(&self) {
        self.mode.store(STALLED, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn mend(&self) {
        self.mode.store(OPEN, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The host:port a PostgreSQL URL names.
fn upstream_of(url: &str) -> String {
    let parsed = url::Url::parse(url).unwrap();
    format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap_or(5432))
}

/// The same URL, through `via`.
fn through(url: &str, via: std::net::SocketAddr) -> String {
    let mut rerouted = url::Url::parse(url).unwrap();
    rerouted.set_host(Some("127.0.0.1")).unwrap();
    rerouted.set_port(Some(via.port())).unwrap();
    rerouted.to_string()
}

/// A node on this test's own PostgreSQL database, reached through a partition.
async fn node_behind_partition(admin_url: &str) -> (TestServer, Partition) {
    let (direct, _name) = create_database(admin_url).await;
    let partition = Partition::in_front_of(upstream_of(&direct)).await;
    let via = through(&direct, partition.addr);
    let server = TestServer::start_with(Engine::Sqlite, |config| config.database_url = Some(via)).await;
    (server, partition)
}

fn postgres_admin_url() -> Option<String> {
    match Engine::postgres()? {
        Engine::Postgres { admin_url } => Some(admin_url),
        Engine::Sqlite => None,
    }
}

async fn timed<T>(work: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = work.await;
    (out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(keywarden_postgres_tests), ignore = "needs PostgreSQL: set KEYWARDEN_TEST_POSTGRES_URL")]
async fn with_the_database_gone_every_surface_answers_503_quickly_and_recovers_by_itself() {
    let Some(admin_url) = postgres_admin_url() else { return };
    let (server, partition) = node_behind_partition(&admin_url).await;
    server.sign_up("dana", "dana@example.com", "correct horse battery staple").await;
    let tokens = server.sign_in("dana", "correct horse battery staple", None).await;
    assert_eq!(server.me(&tokens.access).await.status, StatusCode::OK);
    let laptop = crate::pages::browser();
    let fields = [("login", "dana"), ("password", "correct horse battery staple")];
    let signed_in = crate::pages::submit(&laptop, &server, "/signin", "/signin", &fields).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);

    partition.cut();
    // Past the staleness limit a cached token is not vouched for either.
    tokio::time::sleep(Duration::from_millis(1_400)).await;
    let bound = Duration::from_millis(2_900);

    let (me, took) = timed(server.me(&tokens.access)).await;
    eprintln!("database cut off: /api/v1/me answered in {took:?}");
    me.assert_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(me.headers.contains_key("retry-after") && took < bound, "{took:?}");

    let sign_in = json!({ "login": "dana", "password": "correct horse battery staple",
                          "device": { "client_id": "tv-1", "product": "TV", "platform": "tvOS", "name": "TV" } });
    let (reply, took) = timed(server.post("/api/v1/sessions", sign_in.clone())).await;
    eprintln!("database cut off: sign-in answered in {took:?}");
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(reply.headers.contains_key("retry-after") && took < bound, "{took:?}");

    let (reply, took) = timed(server.refresh(&tokens.refresh)).await;
    eprintln!("database cut off: refresh answered in {took:?}");
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(took < bound, "{took:?}");

    let (ready, took) = timed(server.http.get(server.url("/readyz")).send()).await;
    let ready = ready.unwrap();
    eprintln!("database cut off: /readyz answered in {took:?}");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < Duration::from_secs(1), "readiness answers within a second: {took:?}");

    let page = laptop.get(server.url("/security")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE, "a signed-in person is not shown as signed out");
    assert!(page.headers().contains_key("retry-after"));
    let html = page.text().await.unwrap();
    assert!(html.contains("try again in a moment"), "{html}");

    partition.mend();
    let mended = Instant::now();
    let deadline = mended + Duration::from_secs(5);
    loop {
        let me = server.me(&tokens.access).await;
        if me.status == StatusCode::OK {
            eprintln!("database back: served again after {:?}", mended.elapsed());
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after the database came back: {}", me.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.post("/api/v1/sessions", sign_in).await.status, StatusCode::CREATED);
    drop_test_database(server, &admin_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(keywarden_postgres_tests), ignore = "needs PostgreSQL: set KEYWARDEN_TEST_POSTGRES_URL")]
async fn with_the_database_black_holed_requests_give_up_within_the_bound() {
    let Some(admin_url) = postgres_admin_url() else { return };
    let (server, partition) = node_behind_partition(&admin_url).await;
    server.sign_up("ike", "ike@example.com", "correct horse battery staple").await;
    let tokens = server.sign_in("ike", "correct horse battery staple", None).await;

    partition.stall();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sign_in = json!({ "login": "ike", "password": "correct horse battery staple" });
    let (reply, took) = timed(server.post("/api/v1/sessions", sign_in.clone())).await;
    eprintln!("database black-holed: sign-in answered in {took:?}");
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    assert!(took < Duration::from_millis(2_900), "acquire_timeout_ms (2 s) bounds the wait: {took:?}");
    let (reply, took) = timed(server.refresh(&tokens.refresh)).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(took < Duration::from_millis(2_900), "{took:?}");
    let (ready, took) = timed(server.http.get(server.url("/readyz")).send()).await;
    assert_eq!(ready.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < Duration::from_secs(1), "{took:?}");

    partition.mend();
    let deadline = Instant::now() + Duration::from_secs(8);
    while server.post("/api/v1/sessions", sign_in.clone()).await.status != StatusCode::CREATED {
        assert!(Instant::now() < deadline, "no recovery after the network came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop_test_database(server, &admin_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(keywarden_postgres_tests), ignore = "needs PostgreSQL: set KEYWARDEN_TEST_POSTGRES_URL")]
async fn a_node_cut_off_from_the_database_never_vouches_for_a_token_revoked_elsewhere() {
    let Some(admin_url) = postgres_admin_url() else { return };
    let (direct, _) = create_database(&admin_url).await;
    let connected = TestServer::start_with(Engine::Sqlite, |c| c.database_url = Some(direct.clone())).await;
    let partition = Partition::in_front_of(upstream_of(&direct)).await;
    let mut cut_off_config = connected.config.clone();
    cut_off_config.database_url = Some(through(&direct, partition.addr));
    let cut_off = keywarden::server::start(&cut_off_config).await.unwrap();
    let cut_off_me = format!("http://{}/api/v1/me", cut_off.addr);

    connected.sign_up("erin", "erin@example.com", "correct horse battery staple").await;
    let tokens = connected.sign_in("erin", "correct horse battery staple", None).await;
    let ask = || connected.http.get(&cut_off_me).bearer_auth(&tokens.access).send();
    assert_eq!(ask().await.unwrap().status(), StatusCode::OK, "the cut-off node has it in its cache");

    partition.cut();
    assert_eq!(connected.sign_out(&tokens.access).await.status, StatusCode::NO_CONTENT);
    let revoked_at = Instant::now();
    let limit = Duration::from_millis(connected.config.database.staleness_limit_ms);
    let mut answers = Vec::new();
    while revoked_at.elapsed() < limit + Duration::from_secs(2) {
        let status = ask().await.unwrap().status();
        answers.push((revoked_at.elapsed(), status));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after_limit: Vec<_> = answers.iter().filter(|(at, _)| *at > limit).collect();
    assert!(!after_limit.is_empty());
    assert!(
        after_limit.iter().all(|(_, status)| *status == StatusCode::SERVICE_UNAVAILABLE),
        "after the staleness limit the cut-off node refuses: {after_limit:?}"
    );

    partition.mend();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = ask().await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_ne!(status, StatusCode::OK, "a revoked token was accepted after recovery");
        assert!(Instant::now() < deadline, "the cut-off node did not recover: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cut_off.stop().await.unwrap();
    drop_test_database(connected, &admin_url).await;
}

async fn drop_test_database(server: TestServer, admin_url: &str) {
    let name = url::Url::parse(&server.database_url).unwrap().path().trim_start_matches('/').to_owned();
    server.stop().await;
    drop_database(admin_url, &name).await;
}

/// A server whose stalled-client timeouts are short enough to watch.
async fn impatient_server(max_connections: usize) -> TestServer {
    TestServer::start_with(Engine::Sqlite, |config| {
        config.http.header_read_timeout_secs = 1;
        config.http.body_read_timeout_secs = 1;
        config.http.request_timeout_secs = 3;
        config.http.max_connections = max_connections;
    })
    .await
}

/// Reads until the server closes the connection; what it sent meanwhile.
async fn until_closed(mut stream: TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_stalled_connections_are_closed_while_others_are_served() {
    let server = impatient_server(4096).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stalled = JoinSet::new();
    for i in 0..500 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let opening = if i < 400 {
            // Headers that never finish.
            "POST /api/v1/sessions HTTP/1.1\r\nHost: keywarden\r\nX-Slow: ".to_owned()
        } else {
            // Complete headers, then a body that never comes.
            "POST /api/v1/sessions HTTP/1.1\r\nHost: keywarden\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{\"login\":"
                .to_owned()
        };
        stream.write_all(opening.as_bytes()).await.unwrap();
        stalled.spawn(async move { (i, until_closed(stream, Duration::from_secs(8)).await) });
    }
    // Others are served meanwhile.
    for _ in 0..10 {
        let (reply, took) = timed(server.http.get(server.url("/healthz")).send()).await;
        assert_eq!(reply.unwrap().status(), StatusCode::OK);
        assert!(took < Duration::from_millis(500), "{took:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut closed = 0;
    while let Some(joined) = stalled.join_next().await {
        let (i, outcome) = joined.unwrap();
        let answer = outcome.unwrap_or_else(|| panic!("stalled connection {i} was still open after 8 s"));
        if i >= 400 {
            // The body stalled inside a handler: it is told why before the connection closes.
            assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
        closed += 1;
    }
    assert_eq!(closed, 500);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let server = impatient_server(5).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (reply, took) = timed(server.http.get(server.url("/healthz")).send()).await;
    assert_eq!(reply.unwrap().status(), StatusCode::OK, "served once the idle ones were closed");
    assert!(took >= Duration::from_millis(500), "the sixth connection waited for a slot: {took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    let server = TestServer::start(Engine::Sqlite).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/v1/accounts HTTP/1.1\r\nHost: keywarden\r\nContent-Type: application/json\r\n\
              Content-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = until_closed(stream, Duration::from_secs(3)).await.expect("answered and closed at once");
    assert!(answer.starts_with("HTTP/1.1 413"), "no 100 Continue, a 413: {answer}");
    assert!(answer.contains("\"error\":\"payload_too_large\""), "{answer}");
    server.stop().await;
}

/// A POST with exactly this content type and body.
async fn post_raw(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &'static str,
) -> Reply {
    let mut request = server.http.post(server.url(path)).header("content-type", content_type).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::from(request.send().await.unwrap()).await
}

/// Sends raw bytes and returns the status line and body of the answer.
async fn raw(server: &TestServer, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request).await.unwrap();
    let answer = until_closed(stream, Duration::from_secs(5)).await.expect("answered");
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frameworks_refusals_are_answered_in_each_surfaces_own_words() {
    let server = TestServer::start(Engine::Sqlite).await;
    server.sign_up("fay", "fay@example.com", "correct horse battery staple").await;
    let tokens = server.sign_in("fay", "correct horse battery staple", None).await;

    // The account API: JSON with a stable code.
    let reply = server.get_with_token("/api/v1/security-events?limit=abc", &tokens.access).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let reply = server.delete_with_token("/api/v1/devices/%FF", &tokens.access).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let long = format!("/api/v1/me?pad={}", "a".repeat(10_000));
    server.get_with_token(&long, &tokens.access).await.assert_error(StatusCode::URI_TOO_LONG, "uri_too_long");
    let reply = Reply::from(
        server.http.get(server.url("/api/v1/me")).header("x-pad", "b".repeat(20_000)).send().await.unwrap(),
    )
    .await;
    reply.assert_error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large");
    let reply = post_raw(&server, "/api/v1/sessions/revoke-all", Some(&tokens.access), "application/json", "[]").await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(server.me(&tokens.access).await.status, StatusCode::OK, "`[]` signed nothing out");
    let reply = post_raw(&server, "/api/v1/accounts", None, "text/plain", "{}").await;
    reply.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    // The pages: an HTML page, whatever the framework refused.
    let form = |body: &'static str, content_type: &'static str| {
        server
            .http
            .post(server.url("/signin"))
            .header("accept", "text/html")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (body, content_type, status) in [
        ("login=fay&password=x", "application/x-www-form-urlencoded", StatusCode::UNPROCESSABLE_ENTITY),
        ("login=a&login=b&password=x&csrf=x", "application/x-www-form-urlencoded", StatusCode::UNPROCESSABLE_ENTITY),
        ("login=fay", "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ] {
        let page = form(body, content_type).await.unwrap();
        assert_eq!(page.status(), status, "{body}");
        assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{body}");
        assert!(page.text().await.unwrap().contains("<h1>"), "{body}");
    }
    let big = format!("login=fay&password={}", "x".repeat(100_000));
    let page =
        server.http.post(server.url("/signin")).header("accept", "text/html").form(&[("blob", big)]).send().await;
    let page = page.unwrap();
    assert_eq!(page.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(page.text().await.unwrap().contains("<h1>"));

    // plex.tv's routes: plex.tv's error shape.
    let (status, body) = raw(&server, b"GET /api/v2/pins/%FF HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.1 4"), "{status}");
    assert!(body.contains("<errors>") && body.contains("<error "), "{body}");

    // OAuth's machine endpoints: RFC 6749's error shape.
    let reply = post_raw(&server, "/oauth/token", None, "application/json", "{}").await;
    assert!(reply.status.is_client_error(), "{}", reply.text);
    assert!(reply.json["error"].is_string() && reply.json["error_description"].is_string(), "{}", reply.text);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_that_looks_like_something_else_is_one_thing_or_refused() {
    let server = TestServer::start(Engine::Sqlite).await;
    server.sign_up("gus", "gus@example.com", "correct horse battery staple").await;
    let account = |email: &str, username: &str| json!({ "email": email, "username": username, "password": "a long and fine passphrase" });

    // The same mailbox written another way is the same account; a look-alike domain is refused.
    server
        .post("/api/v1/accounts", account("gus@ｅxample.com", "gus2"))
        .await
        .assert_error(StatusCode::CONFLICT, "email_taken");
    server
        .post("/api/v1/accounts", account("GUS@EXAMPLE.COM", "gus3"))
        .await
        .assert_error(StatusCode::CONFLICT, "email_taken");
    server
        .post("/api/v1/accounts", account("gus@ex\u{0430}mple.com", "gus4"))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_email");
    let created = server.post("/api/v1/accounts", account("hal@bücher.de", "hal")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    server
        .post("/api/v1/accounts", account("hal@xn--bcher-kva.de", "hal2"))
        .await
        .assert_error(StatusCode::CONFLICT, "email_taken");
    let decomposed = server.post("/api/v1/accounts", account("ren\u{0065}\u{0301}@example.com", "rene")).await;
    assert_eq!(decomposed.status, StatusCode::CREATED, "decomposed é is accepted: {}", decomposed.text);
    server
        .post("/api/v1/accounts", account("ren\u{00e9}@example.com", "rene2"))
        .await
        .assert_error(StatusCode::CONFLICT, "email_taken");

    // Device names that would reorder or break what the devices list and mail show.
    for name in ["Living room\u{202E}moc.live", "Line\u{2028}break"] {
        let sign_in = json!({ "login": "gus", "password": "correct horse battery staple",
                              "device": { "client_id": "tv-9", "product": "TV", "platform": "tvOS", "name": name } });
        server.post("/api/v1/sessions", sign_in).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_device");
    }
    // Password length is counted as it is hashed, after NFKC (U+FDFA is 18 characters then).
    let ligatures = |n: usize| json!({ "email": format!("lig{n}@example.com"), "username": format!("lig{n}"), "password": "\u{FDFA}".repeat(n) });
    assert_eq!(server.post("/api/v1/accounts", ligatures(7)).await.status, StatusCode::CREATED, "126 characters");
    server
        .post("/api/v1/accounts", ligatures(15))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "password_too_long");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_stored_before_domains_were_normalised_is_still_found() {
    let server = TestServer::start(Engine::Sqlite).await;
    let created = server
        .post(
            "/api/v1/accounts",
            json!({ "email": "old@bücher.de", "username": "oldie", "password": "a long and fine passphrase" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    // As it was stored before issue 19: indexed under the address as typed, lower-cased.
    let legacy = server.running_state().keyring.blind_index("old@bücher.de");
    let hex: String = legacy.digest.iter().map(|b| format!("{b:02x}")).collect();
    let update = format!("UPDATE users SET email_index = X'{hex}' WHERE username = 'oldie'");
    crate::revocation::sql(&Engine::Sqlite, &server.database_url, &update).await;

    for login in ["old@bücher.de", "OLD@BÜCHER.DE", "old@xn--bcher-kva.de"] {
        let sign_in = json!({ "login": login, "password": "a long and fine passphrase" });
        assert_eq!(server.post("/api/v1/sessions", sign_in).await.status, StatusCode::CREATED, "{login}");
    }
    for email in ["old@bücher.de", "old@xn--bcher-kva.de"] {
        let again = json!({ "email": email, "username": "oldie2", "password": "a long and fine passphrase" });
        server.post("/api/v1/accounts", again).await.assert_error(StatusCode::CONFLICT, "email_taken");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(keywarden_postgres_tests), ignore = "needs PostgreSQL: set KEYWARDEN_TEST_POSTGRES_URL")]
async fn an_operators_list_is_not_read_as_unknown_accounts_when_the_database_is_gone() {
    let Some(admin_url) = postgres_admin_url() else { return };
    let (server, partition) = node_behind_partition(&admin_url).await;
    server.sign_up("jody", "jody@example.com", "correct horse battery staple").await;
    let console = keywarden::ops::admin::Console::open(&server.config).await.unwrap();
    partition.cut();
    let text = keywarden::domain::incident::IncidentText::default();
    let outcome = console.force_password_reset("jody\n", false, false, &text).await;
    // Before: the line was reported as matching no account, and the command succeeded.
    let err = outcome.expect_err("a database that does not answer fails the command");
    assert!(format!("{err:#}").contains("database"), "{err:#}");
    partition.mend();
    let done = console.force_password_reset("jody\n", false, false, &text).await.unwrap();
    assert_eq!((done.flagged, done.unknown.len()), (1, 0));
    drop(console);
    drop_test_database(server, &admin_url).await;
}
