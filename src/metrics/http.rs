//! The HTTP side of the metrics endpoint: GET `/metrics` (OpenMetrics text) and GET `/health`
//! (JSON) over HTTP/1.1 on the `MetricsAddress` listeners; anything else is 404 or 405.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Source;
use super::health::Health;

/// The OpenMetrics media type; Prometheus accepts it whatever it asked for.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapers and probes are few; more concurrent connections than this are refused so a
/// misbehaving client cannot use up file descriptors the pooler needs.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Answers one request.
pub async fn handle<S: Source, B>(req: &Request<B>, source: &S) -> Reply {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/health") {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; try /metrics or /health\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/health" {
        let health = Health::new(source.auth_db_reachable().await);
        let status =
            StatusCode::from_u16(health.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return reply(status, "application/json", health.to_json());
    }
    match source.metrics().render(source.pool_samples()) {
        Ok(text) => reply(StatusCode::OK, OPENMETRICS, text),
        Err(_) => {
            tracing::error!("metrics encoding failed");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "metrics encoding failed\n",
            )
        }
    }
}

/// Serves every listener until `stop` is cancelled.
pub async fn serve<S: Source>(
    listeners: Vec<TcpListener>,
    source: Arc<S>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        tasks.spawn(accept_loop(l, source.clone(), stop.clone(), slots.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop<S: Source>(
    listener: TcpListener,
    source: Arc<S>,
    stop: CancellationToken,
    slots: Arc<Semaphore>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "metrics endpoint: too many connections; dropping one");
            continue;
        };
        let source = source.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: Request<Incoming>| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(handle(&req, &*source).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "metrics endpoint: connection ended");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, PoolSample};
    use http_body_util::BodyExt;

    struct Fake {
        metrics: Metrics,
        reachable: bool,
    }

    impl Source for Fake {
        fn metrics(&self) -> &Metrics {
            &self.metrics
        }
        fn pool_samples(&self) -> Vec<PoolSample> {
            vec![PoolSample {
                dest_host: "h:5432".into(),
                dest_db: "d".into(),
                max_open: 4,
                open: 2,
                ..PoolSample::default()
            }]
        }
        async fn auth_db_reachable(&self) -> bool {
            self.reachable
        }
    }

    fn fake(reachable: bool) -> Fake {
        Fake {
            metrics: Metrics::new(),
            reachable,
        }
    }

    async fn get(source: &Fake, method: Method, path: &str) -> (StatusCode, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let r = handle(&req, source).await;
        let status = r.status();
        let ctype = r.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_is_openmetrics_text() {
        let (status, ctype, body) = get(&fake(true), Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, OPENMETRICS);
        assert!(
            body.contains(r#"perseus_open_connections{dest_host="h:5432",dest_db="d"} 2"#),
            "{body}"
        );
        assert!(body.contains("\nprocess_resident_memory_bytes "), "{body}");
        assert!(body.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn health_follows_the_auth_db() {
        let (status, ctype, body) = get(&fake(true), Method::GET, "/health").await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, "application/json")
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["auth_db"]["reachable"], true);
        let (status, _, body) = get(&fake(false), Method::GET, "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["auth_db"]["reachable"], false);
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused() {
        let f = fake(true);
        assert_eq!(get(&f, Method::GET, "/").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&f, Method::GET, "/metrics/x").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&f, Method::POST, "/metrics").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get(&f, Method::HEAD, "/health").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn serves_over_tcp_until_stopped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(vec![l], Arc::new(fake(true)), stop.clone()));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("\"reachable\":true"), "{out}");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops within 10 s")
            .unwrap();
    }
}
