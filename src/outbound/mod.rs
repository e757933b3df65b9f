//! Every call keywarden makes out: the shared HTTP client, sign-in providers (`upstream`),
//! back-channel logout notices (`backchannel`) and alert webhooks (`webhook`).

pub mod backchannel;
pub mod upstream;
pub mod webhook;

use std::time::Duration;

/// How long an idle connection is kept for reuse. Below the 5 s after which Node and Apache close
/// idle keep-alive connections: a request written to a connection the other side is just closing
/// fails ("connection closed before message completed"), and the client cannot tell whether it
/// arrived. Keeping connections briefly makes keywarden the side that closes them.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// A client that follows no redirects (every endpoint is configured, so a redirect is a
/// misconfiguration or an attack) and gives up after `timeout`.
pub fn client(user_agent: &'static str, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(POOL_IDLE)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()
}

/// Sends a request, and once more when it failed before any answer came back on a connection
/// that may have been closed under it. Not after a timeout: the other side may still be working.
pub async fn send_with_retry(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    let again = request.try_clone();
    match request.send().await {
        Err(err) if !err.is_timeout() && err.status().is_none() => match again {
            Some(again) => again.send().await,
            None => Err(err),
        },
        answered => answered,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::{client, send_with_retry};

    /// A server that hangs up on the first `cut` connections after reading their request, then
    /// answers `ok`.
    async fn hanging_up(cut: usize) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            for served in 0.. {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let _ = stream.read(&mut buf).await;
                if served >= cut {
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    stream.write_all(answer).await.unwrap();
                }
            }
        });
        (url, server)
    }

    #[tokio::test]
    async fn a_request_cut_off_before_its_answer_is_sent_once_more() {
        let (url, server) = hanging_up(1).await;
        let http = client("test", Duration::from_secs(5)).unwrap();
        let response = send_with_retry(http.post(&url).body("code=abc")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
        server.abort();
    }

    #[tokio::test]
    async fn a_request_cut_off_twice_fails() {
        let (url, server) = hanging_up(2).await;
        let http = client("test", Duration::from_secs(5)).unwrap();
        assert!(send_with_retry(http.post(&url).body("code=abc")).await.is_err());
        server.abort();
    }
}
