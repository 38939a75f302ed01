//! The HTTP server the API runs on: hyper's HTTP/1 with the protections a public endpoint needs,
//! which `warp::serve` does not give (it sets no timer, so no header timeout):
//! - a deadline for a request's headers (slow-loris clients are cut off),
//! - a deadline for a whole request, body included (longer than the longest certificate wait),
//! - a per-client (IP address) token bucket: beyond it, `429 rate_limited`,
//! - a cap on open connections.
//!
//! Shutdown: on cancellation it stops accepting and lets open connections finish their current
//! request (bounded by the request deadline).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;
use tracing::debug;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply as _;

use crate::metrics;

/// Limits of the HTTP server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests per second one client (IP address) may make on average; 0 means no limit.
    pub rate_per_sec: u32,
    /// How many requests a client may make at once above its rate.
    pub burst: u32,
    /// Open connections at most (further ones wait in the kernel's backlog).
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a whole request may take, reading its body and waiting for a certificate included.
    pub request_timeout: Duration,
}

/// Most clients whose buckets are remembered; beyond it, full (idle) buckets are forgotten.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Per-client token buckets.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter of `rate` requests per second with bursts of `burst`; `rate == 0` allows all.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `client` may make a request at `now` (and takes a token if so).
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let mut buckets = self
            .buckets
            .lock()
            .expect("no panics while holding the lock");
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(&client) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({"error": {"code": code, "message": message}})),
        status,
    )
    .into_response()
}

/// Serves `routes` on `listener` until `cancel` fires.
pub async fn serve(
    routes: warp::filters::BoxedFilter<(Response,)>,
    listener: TcpListener,
    limits: Limits,
    cancel: CancellationToken,
) {
    let limiter = Arc::new(RateLimiter::new(limits.rate_per_sec, limits.burst));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!("accept failed: {e}");
                    continue;
                }
            },
        };
        let (routes, limiter, cancel) = (routes.clone(), limiter.clone(), cancel.clone());
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut inner = warp::service(routes.clone());
                let allowed = limiter.allow(peer.ip(), Instant::now());
                async move {
                    if !allowed {
                        metrics::HTTP_RATE_LIMITED.inc();
                        return Ok::<_, Infallible>(json_error(
                            StatusCode::TOO_MANY_REQUESTS,
                            "rate_limited",
                            "too many requests from this address; slow down",
                        ));
                    }
                    match tokio::time::timeout(limits.request_timeout, inner.call(req)).await {
                        Ok(r) => r,
                        Err(_) => Ok(json_error(
                            StatusCode::REQUEST_TIMEOUT,
                            "request_timeout",
                            "the request took too long",
                        )),
                    }
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, "connection ended: {e}");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.request_timeout, conn).await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_bursts_then_the_rate() {
        let l = RateLimiter::new(10, 5);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| l.allow(a, t0)).count(), 5, "the burst");
        assert!(l.allow(b, t0), "another client has its own bucket");
        assert!(!l.allow(a, t0 + Duration::from_millis(50)), "half a token");
        assert!(
            l.allow(a, t0 + Duration::from_millis(100)),
            "one token after 100 ms"
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            (0..8).filter(|_| l.allow(a, later)).count(),
            5,
            "refilled up to the burst only"
        );
        let unlimited = RateLimiter::new(0, 0);
        assert!((0..10_000).all(|_| unlimited.allow(a, t0)));
    }
}
