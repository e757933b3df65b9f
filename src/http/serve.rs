//! Accepting connections: the connection cap and the timeouts that close what stalls (slowloris).
//!
//! axum's own `serve` sets none of hyper's timers, so a client that sends half a header and waits
//! keeps its connection (and a file descriptor) for ever. This loop is the same hyper connection
//! builder with the limits configured under `[http]`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};
use tower_http::timeout::TimeoutBody;

/// The `[http]` settings: what a connection may take before it is closed or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// A request's headers must be complete this many seconds after the connection is ready for
    /// it. hyper starts this clock as soon as a kept-alive connection waits for its next request,
    /// so it is also the idle keep-alive timeout.
    pub header_read_timeout_secs: u64,
    /// The longest wait for the next piece of a request body (`408 request_timeout`).
    pub body_read_timeout_secs: u64,
    /// A whole request, body included, from its headers to its answer (`408 request_timeout`).
    pub request_timeout_secs: u64,
    /// Open connections at most; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// The longest request target (path and query) accepted (`414 uri_too_long`).
    pub max_uri_bytes: usize,
    /// The most header bytes (names and values) accepted (`431 headers_too_large`).
    pub max_header_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: 4096,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl HttpSettings {
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.header_read_timeout_secs == 0 || self.body_read_timeout_secs == 0 || self.request_timeout_secs == 0 {
            return Err("http: every timeout must be at least 1 second");
        }
        if self.max_connections == 0 {
            return Err("http.max_connections must be at least 1");
        }
        if self.max_uri_bytes < 1024 || self.max_header_bytes < 4096 {
            return Err("http.max_uri_bytes must be at least 1024 and http.max_header_bytes at least 4096");
        }
        Ok(())
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// hyper refuses (431, with no body) a head larger than its read buffer; ours is larger than the
/// configured header limit, so that the server's own check answers in the API's words first.
fn read_buffer_bytes(settings: &HttpSettings) -> usize {
    (settings.max_header_bytes + settings.max_uri_bytes) * 2 + 8192
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    // HTTP/1 only: telling HTTP/2 apart means waiting for a connection's first bytes with no
    // clock running, so a client that connects and says nothing would be held for ever. Reverse
    // proxies and every known client speak HTTP/1.1 to keywarden.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout())
        .max_buf_size(read_buffer_bytes(&settings))
        .max_headers(1000);
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::pin!(shutdown);
    loop {
        // A connection over the cap waits in the kernel's queue, costing this process nothing.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // pause briefly rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(router) = make_service.call(remote).await;
        let body_read_timeout = settings.body_read_timeout();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            // Each piece of the body must arrive within the timeout (tower-http's body timer).
            let request = request.map(|body| axum::body::Body::new(TimeoutBody::new(body_read_timeout, body)));
            router.clone().oneshot(request)
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Stalled and reset connections end here; they are the client's business, not an error.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
