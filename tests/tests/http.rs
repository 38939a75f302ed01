//! The API under abuse, from another process: per-client rate limits, slow-loris connections cut
//! off by the header timeout, and a flood of bad requests that changes nothing and does not make
//! the operator's memory grow without bound.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hallmark_protocol::{EventHash, EventKind};
use hallmark_tests::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client builds")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_rate_is_refused_then_served_again() -> Result<()> {
    let h = Harness::start_with(BIN, 4, 3, |o| {
        o.http_rate_per_sec = 20;
        o.http_header_timeout_secs = 1;
    })
    .await?;
    let url = format!("{}/v1/health", h.client(0).base());
    let http = client();
    // 120 requests at once: the burst (40) passes, the rest is refused with a clear code.
    let answers = futures::future::join_all((0..120).map(|_| http.get(&url).send())).await;
    let mut ok = 0;
    let mut limited = 0;
    for a in answers {
        let r = a?;
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                let v: serde_json::Value = r.json().await?;
                ensure!(v["error"]["code"] == "rate_limited", "{v}");
                limited += 1;
            }
            s => anyhow::bail!("unexpected status {s}"),
        }
    }
    // The harness's readiness checks took a few tokens, and some refill while the 120 arrive.
    ensure!(
        (30..=55).contains(&ok),
        "about the burst passes ({ok} ok, {limited} limited)"
    );
    ensure!(limited >= 65, "the rest is refused ({limited})");
    // Another operator keeps its own buckets; this one serves again once tokens refill.
    ensure!(
        http.get(format!("{}/v1/health", h.client(1).base()))
            .send()
            .await?
            .status()
            == 200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(http.get(&url).send().await?.status() == 200);
    ensure!(
        h.metric(0, "hallmark_http_rate_limited_total").await? >= 70.0,
        "refusals are counted"
    );

    // Slow loris: a connection that never finishes its headers is closed after the timeout.
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .context("host")?
        .to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await?;
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let started = Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    ensure!(closed.is_ok(), "the server closed the slow connection");
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "closed by the 1 s header timeout, not by the test"
    );
    Ok(())
}

/// Many concurrent clients sending garbage for `secs`: malformed JSON, oversize bodies, forged
/// signatures, unknown ids, wrong routes. Returns how many requests were made.
async fn flood(base: &str, secs: u64, forged: &str) -> Result<usize> {
    let stop = Instant::now() + Duration::from_secs(secs);
    let tasks = (0..32).map(|w| {
        let (base, forged) = (base.to_string(), forged.to_string());
        tokio::spawn(async move {
            let http = client();
            let mut n = 0usize;
            while Instant::now() < stop {
                let r = match (n + w) % 5 {
                    0 => http
                        .post(format!("{base}/v1/events"))
                        .body("{garbage")
                        .send(),
                    1 => http
                        .post(format!("{base}/v1/events"))
                        .body(vec![b'{'; 200 * 1024])
                        .send(),
                    2 => http
                        .post(format!("{base}/v1/events"))
                        .header("content-type", "application/json")
                        .body(forged.clone())
                        .send(),
                    3 => http
                        .get(format!("{base}/v1/items/{}", "ab".repeat(32)))
                        .send(),
                    _ => http.get(format!("{base}/v1/no/such/route")).send(),
                };
                if let Ok(r) = r.await {
                    assert!(r.status().is_client_error(), "bad input gets a 4xx");
                }
                n += 1;
            }
            n
        })
    });
    let mut total = 0;
    for t in futures::future::join_all(tasks).await {
        total += t?;
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bad_requests_changes_nothing_and_memory_levels_off() -> Result<()> {
    let h = Harness::start(BIN, 4, 3).await?;
    let base = h.client(0).base().to_string();
    // A correctly shaped event whose signature is broken.
    let author = h.author();
    let mut ev = author.event(
        0,
        EventHash::ZERO,
        EventKind::RegisterManufacturer {
            name: "Forger".into(),
        },
    );
    ev.body.nonce ^= 1;
    let forged = serde_json::to_string(&ev)?;

    let log_before = h.client(0).info().await?["log_len"].clone();
    let warm = flood(&base, 3, &forged).await?;
    let rss_warm = h.rss_mb(0)?;
    let main = flood(&base, 6, &forged).await?;
    let rss_after = h.rss_mb(0)?;
    println!(
        "flood: {warm} requests warm-up, {main} more; RSS {rss_warm:.1} MB -> {rss_after:.1} MB"
    );
    ensure!(main > 1_000, "the flood ran ({main} requests)");
    // Twice the requests after warm-up; a leak per request would show as tens of MB here.
    ensure!(
        rss_after - rss_warm < 25.0,
        "memory levels off under a flood: {rss_warm:.1} MB -> {rss_after:.1} MB"
    );
    let info = h.client(0).info().await?;
    ensure!(info["log_len"] == log_before, "nothing was certified");
    ensure!(
        info["peers_connected"].as_i64() == Some(3),
        "still connected"
    );
    Ok(())
}
