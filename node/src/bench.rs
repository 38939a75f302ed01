//! `hallmark bench`: a load generator. It starts a local federation as separate processes on
//! loopback, drives it with many concurrent clients submitting valid signed events (mints, then
//! transfers, over many items), and reports certified events/s, submission-to-certificate
//! latency, CPU and RSS per operator, bytes on disk per event, and — measured in the same run —
//! the cost of one secp256k1 verification with the throughput bound it implies; the host's speed
//! is probed again once a second during the run, so that runs in a slow hour of a shared host can
//! be told apart from slow builds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use hallmark_protocol::{Event, EventHash, EventKind, ItemId, ManufacturerId};
use serde_json::json;
use tokio::sync::Mutex;

use crate::client::{Author, Client, Conn};
use crate::config::{FederationFile, OperatorConfig, PaymentMode};
use crate::devnet::{self, InitOptions, Ports};
use crate::keyfile;

/// `bench` options.
#[derive(Args, Debug, Clone)]
pub struct BenchOpts {
    /// Operators.
    #[arg(long, default_value_t = 4)]
    pub operators: u32,
    /// Quorum threshold.
    #[arg(long, default_value_t = 3)]
    pub quorum: u32,
    /// Measured seconds (after a short warm-up).
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Concurrent clients (each owns its items; every submission waits for its certificate, so
    /// the rate is at most clients / latency). More clients keep more events in flight, so the
    /// operators batch more votes per signature, fsync and message: on 2 cores 64 already keep
    /// the cores busy, 256 certify more events/s at a longer latency, 512 the most seen (more
    /// than that only lengthen the queue).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Transfers per item before a client mints a new one.
    #[arg(long, default_value_t = 9)]
    pub transfers: usize,
    /// Offered rate in events/s across all clients (default: as fast as the clients go).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// First port of the benchmark federation.
    #[arg(long, default_value_t = 28100)]
    pub base_port: u16,
    /// Sign each item's events while the run goes on, on the same cores as the operators,
    /// instead of before it starts (the default: clients are other machines in a deployment,
    /// so their signing is not the federation's work).
    #[arg(long)]
    pub sign_live: bool,
    /// Submit events as JSON instead of the binary form (`application/octet-stream`).
    #[arg(long)]
    pub json: bool,
}

/// Events/s the pre-signed items are sized for when no rate is given (above any rate measured
/// on the development machine); a client that runs out signs more as it goes, and the run
/// reports how many items were signed during the measured time.
const PRESIGN_RATE: f64 = 6_000.0;
/// The most events/s one client offers: it waits for each certificate, which takes over 4 ms.
const PER_CLIENT_MAX_RATE: f64 = 250.0;
/// How long a submission waits for its certificate.
const SUBMIT_WAIT: Duration = Duration::from_secs(10);
/// Seconds of load before the measured time.
const WARM_UP_SECS: u64 = 3;
/// Longest run whose events are all signed before it starts: an operator refuses events
/// timestamped more than `timestamp_window_secs` (600 by default) from its clock.
const PRESIGN_MAX_SECS: u64 = 300;
/// Most events signed before a run (about 1.1 kB of memory each): longer or faster runs sign
/// the rest as they go, and say how many items they signed so.
const PRESIGN_MAX_EVENTS: usize = 600_000;

/// Sets its flag when dropped.
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// An event ready to submit: its hash and its binary form computed when it is signed, not on
/// the cores the operators use during the run.
struct Prepared {
    event: Event,
    hash: EventHash,
    encoded: bytes::Bytes,
}

impl Prepared {
    fn new(event: Event) -> Self {
        Self {
            hash: event.hash(),
            encoded: hallmark_protocol::encode(&event).into(),
            event,
        }
    }
}

/// The events of one benchmark item: its mint by `maker`, then `transfers` transfers between
/// `owners`, each after the one before (the hashes are known before anything is certified).
fn item_events(
    maker: &Author,
    owners: &[Author; 2],
    serial: String,
    transfers: usize,
) -> Vec<Prepared> {
    let item = ItemId::new(&ManufacturerId::of(&maker.key.public_key()), &serial);
    let mut events = vec![Prepared::new(maker.event(
        0,
        EventHash::ZERO,
        EventKind::Mint {
            serial,
            product: "P".into(),
            owner: owners[0].key.public_key(),
        },
    ))];
    for t in 1..=transfers {
        let prev = events[t - 1].hash;
        let (from, to) = (&owners[(t - 1) % 2], &owners[t % 2]);
        events.push(Prepared::new(from.event(
            t as u64,
            prev,
            EventKind::Transfer {
                item,
                to: to.key.public_key(),
            },
        )));
    }
    events
}

/// CPU seconds used and resident memory (kB) of process `pid`, from `/proc`.
pub fn proc_stat(pid: u32) -> Option<(f64, u64)> {
    // utime + stime in clock ticks (fields 14 and 15), and VmRSS in kB.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / 100.0, rss))
}

/// Busy and total CPU time of the whole machine so far, in clock ticks (the `cpu` line of
/// `/proc/stat`; idle and I/O wait count as not busy).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3)? + f.get(4)?;
    Some((total - idle, total))
}

fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The steps of a submission the operators time (`hallmark_consensus_stage_seconds`, then the
/// certificate), and the vote sync: (name in the results, metric series).
const STAGES: [(&str, &str); 7] = [
    (
        "admitted",
        "hallmark_consensus_stage_seconds_{}{stage=\"admitted\"}",
    ),
    (
        "own_prevote_sent",
        "hallmark_consensus_stage_seconds_{}{stage=\"prevote_sent\"}",
    ),
    (
        "polka",
        "hallmark_consensus_stage_seconds_{}{stage=\"polka\"}",
    ),
    (
        "all_prevotes",
        "hallmark_consensus_stage_seconds_{}{stage=\"all_prevotes\"}",
    ),
    (
        "own_commit_sent",
        "hallmark_consensus_stage_seconds_{}{stage=\"commit_sent\"}",
    ),
    ("certified", "hallmark_consensus_quorum_seconds_{}"),
    ("vote_sync", "hallmark_consensus_vote_sync_seconds_{}"),
];

/// Each [`STAGES`] series' (sum, count) over the operators' `/metrics` at `urls`; `None` if
/// one of them does not answer.
async fn stage_totals(http: &reqwest::Client, urls: &[String]) -> Option<Vec<(f64, f64)>> {
    let mut totals = vec![(0.0, 0.0); STAGES.len()];
    for url in urls {
        let text = async { http.get(url).send().await?.text().await }
            .await
            .ok()?;
        let values: std::collections::HashMap<&str, f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        for ((_, series), (sum, count)) in STAGES.iter().zip(&mut totals) {
            *sum += values
                .get(series.replace("{}", "sum").as_str())
                .unwrap_or(&0.0);
            *count += values
                .get(series.replace("{}", "count").as_str())
                .unwrap_or(&0.0);
        }
    }
    Some(totals)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A fresh key's public key, a digest and the key's signature of it: what the speed
/// measurements verify.
fn signed_digest() -> (
    hallmark_protocol::PublicKey,
    [u8; 32],
    hallmark_protocol::Signature,
) {
    let k = keyfile::generate();
    let d = [7u8; 32];
    let sig = k.sign(&d);
    (k.public_key(), d, sig)
}

/// Time of one secp256k1 ECDSA verification, in seconds (median of runs of 2000).
fn verify_cost() -> f64 {
    let (pk, d, sig) = signed_digest();
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..2000 {
                pk.verify(&d, &sig).expect("valid");
            }
            t.elapsed().as_secs_f64() / 2000.0
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

/// Verifies per probe of the host's speed during the run: 7-10 ms of one core each second.
const PROBE_VERIFIES: u32 = 200;
/// A difference between the host's speed before and during the run above which the run says
/// so: on the development machine two runs of one build differ by some 10 % when it holds.
const HOST_DRIFT_WARN_PERCENT: f64 = 15.0;

/// One secp256k1 verify's cost in seconds of this thread's CPU time (so time spent waiting for a
/// core under load is not counted: what is left is the host's speed).
fn probe_verify_cost(
    pk: &hallmark_protocol::PublicKey,
    digest: &[u8; 32],
    sig: &hallmark_protocol::Signature,
) -> Option<f64> {
    use nix::time::{clock_gettime, ClockId};
    let cpu = || clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).ok();
    let t0 = cpu()?;
    for _ in 0..PROBE_VERIFIES {
        pk.verify(digest, sig).expect("valid");
    }
    let t1 = cpu()?;
    let d = Duration::from(t1).checked_sub(Duration::from(t0))?;
    Some(d.as_secs_f64() / f64::from(PROBE_VERIFIES))
}

/// Probes the host's speed once a second while `measuring` is set (first at its start), until
/// `stop`: on a shared virtual machine it moves (one verify took 32 to 59 us within an hour on
/// the development machine), and a run measured while the host was slow says little about the
/// build.
fn spawn_speed_probe(
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<f64>> {
    std::thread::spawn(move || {
        let (pk, d, sig) = signed_digest();
        let (mut probes, mut last) = (Vec::new(), None::<Instant>);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due && measuring.load(Ordering::Relaxed) {
                probes.extend(probe_verify_cost(&pk, &d, &sig));
                last = Some(Instant::now());
            }
        }
        probes
    })
}

/// Runs the benchmark.
pub async fn run(o: &BenchOpts) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut init = InitOptions::new(o.operators, o.quorum, Ports::Base(o.base_port));
    init.payments = PaymentMode::Mock;
    // Every benchmark client comes from 127.0.0.1: a per-address limit would measure itself.
    init.http_rate_per_sec = 0;
    devnet::init(dir.path(), &init)?;
    let (federation, peers) = FederationFile::load(&dir.path().join("federation.toml"))?;
    let mut procs = devnet::Processes::start(dir.path())?;
    let pids = procs.pids();
    // Ctrl-C or SIGTERM stops the run, and the operators with it (left running, they would hold
    // the benchmark's ports and load the cores of the next run). An operator that exits (a port
    // in use, say) stops it too, at once, with the end of its log: the clients would otherwise
    // wait for it for minutes.
    let signal = crate::cli::shutdown_signal()?;
    let result = tokio::select! {
        r = drive(o, &federation, &peers, &pids, dir.path()) => r,
        why = signal => Err(anyhow::anyhow!(why)),
        (i, status) = procs.first_exit() => {
            let log = std::fs::read_to_string(dir.path().join(format!("op{i}/operator.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            Err(anyhow::anyhow!(
                "operator {i} exited ({status}) during the benchmark; the end of its log:\n{}",
                lines[lines.len().saturating_sub(5)..].join("\n")
            ))
        }
    };
    if result.is_err() {
        eprintln!("bench: stopping the operators");
    }
    procs.stop(Duration::from_secs(10));
    result
}

async fn drive(
    o: &BenchOpts,
    federation: &hallmark_protocol::Federation,
    peers: &[crate::config::Peer],
    pids: &[u32],
    dir: &std::path::Path,
) -> Result<()> {
    let clients: Vec<Client> = peers
        .iter()
        .map(|p| {
            let c = Client::new(&p.http, Duration::from_secs(30));
            if o.json {
                c
            } else {
                c.binary()
            }
        })
        .collect();
    let metrics_urls = (0..peers.len())
        .map(|i| {
            let loaded = OperatorConfig::load(&devnet::operator_config_path(dir, i))?;
            Ok(format!("http://{}/metrics", loaded.config.metrics_listen))
        })
        .collect::<Result<Vec<_>>>()?;
    let scraper = reqwest::Client::new();
    let n = peers.len() as i64;
    for c in &clients {
        for _ in 0..300 {
            if c.info()
                .await
                .ok()
                .and_then(|v| v["peers_connected"].as_i64())
                == Some(n - 1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let maker = Author::new(federation.id(), keyfile::generate());
    clients[0]
        .submit(
            &maker.event(
                0,
                EventHash::ZERO,
                EventKind::RegisterManufacturer {
                    name: "Bench".into(),
                },
            ),
            Duration::from_secs(10),
        )
        .await?
        .certified()
        .context("registering the benchmark manufacturer")?;
    let verify = verify_cost();
    eprintln!("bench: federation up ({}-of-{}); one secp256k1 verify = {:.1} us; driving {} clients for {} s{}", o.quorum, o.operators, verify * 1e6, o.clients, o.duration,
        o.rate.map(|r| format!(" at {r} ev/s offered")).unwrap_or_default());

    // Each client's items, signed now unless asked otherwise (see `--sign-live`).
    let presign = !o.sign_live && o.duration <= PRESIGN_MAX_SECS;
    if !o.sign_live && !presign {
        eprintln!("bench: runs over {PRESIGN_MAX_SECS} s sign their events as they go (older events would fall out of the operators' timestamp window)");
    }
    let per_client = if presign {
        let rate = o
            .rate
            .unwrap_or(PRESIGN_RATE)
            .min(o.clients as f64 * PER_CLIENT_MAX_RATE);
        let events = (o.duration + WARM_UP_SECS + 5) as f64 * rate;
        let per_item = (o.transfers + 1) as f64;
        let wanted = (events / o.clients as f64 / per_item).ceil() as usize + 1;
        let cap = ((PRESIGN_MAX_EVENTS as f64 / o.clients as f64 / per_item) as usize).max(1);
        if wanted > cap {
            eprintln!("bench: at most {PRESIGN_MAX_EVENTS} events are signed before the run; clients sign the rest as they go");
        }
        wanted.min(cap)
    } else {
        0
    };
    if presign {
        eprintln!(
            "bench: signing {} events before the run ({} items per client)",
            per_client * o.clients * (o.transfers + 1),
            per_client
        );
    }
    let signing = Instant::now();
    // The signing threads stop early if the run is (Ctrl-C: this future is dropped).
    let cancel = CancelOnDrop::default();
    let mut signers = Vec::new();
    for w in 0..o.clients {
        let (maker, fed, transfers) = (maker.clone(), federation.id(), o.transfers);
        let cancelled = cancel.0.clone();
        signers.push(tokio::task::spawn_blocking(move || {
            let owners = [(); 2].map(|_| Author::new(fed, keyfile::generate()));
            let items: std::collections::VecDeque<Vec<Prepared>> = (0..per_client)
                .map_while(|k| {
                    (!cancelled.load(Ordering::Relaxed))
                        .then(|| item_events(&maker, &owners, format!("W{w}-{k}"), transfers))
                })
                .collect();
            (owners, items)
        }));
    }
    let mut signed = Vec::new();
    for s in signers {
        signed.push(s.await?);
    }
    if presign {
        eprintln!("bench: signed in {:.1} s", signing.elapsed().as_secs_f64());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Items signed during the measured time (clients that ran out of pre-signed ones).
    let signed_live = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Fixed offered rate: each client submits every `clients / rate` seconds, the clients'
    // schedules staggered by `1 / rate` so that submissions arrive evenly, not all clients at
    // once (which offers the rate as bursts of `clients` events and measures the bursts).
    let interval = o
        .rate
        .map(|r| Duration::from_secs_f64(o.clients as f64 / r));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, (owners, mut items)) in signed.into_iter().enumerate() {
        let (client, maker, stop, measuring, latencies, failures, signed_live) = (
            clients[w % clients.len()].clone(),
            maker.clone(),
            stop.clone(),
            measuring.clone(),
            latencies.clone(),
            failures.clone(),
            signed_live.clone(),
        );
        let transfers = o.transfers;
        let clients = o.clients as u32;
        // In the binary form (the default) each client has a connection of its own, driven by
        // its task; JSON goes through the shared reqwest client.
        let mut conn = if o.json {
            None
        } else {
            Some(Conn::connect(client.base(), SUBMIT_WAIT).await?)
        };
        tasks.push(tokio::spawn(async move {
            let mut k = items.len();
            let mut next_at = start + interval.map_or(Duration::ZERO, |iv| iv * w as u32 / clients);
            'items: while !stop.load(Ordering::Relaxed) {
                let events = items.pop_front().unwrap_or_else(|| {
                    if measuring.load(Ordering::Relaxed) {
                        signed_live.fetch_add(1, Ordering::Relaxed);
                    }
                    let serial = format!("W{w}-{k}");
                    k += 1;
                    item_events(&maker, &owners, serial, transfers)
                });
                for ev in &events {
                    if stop.load(Ordering::Relaxed) {
                        break 'items;
                    }
                    if let Some(iv) = interval {
                        let now = Instant::now();
                        if next_at > now {
                            tokio::time::sleep(next_at - now).await;
                        }
                        next_at += iv;
                    }
                    let started = Instant::now();
                    let outcome = match &mut conn {
                        Some(conn) => conn.submit(ev.encoded.clone()).await,
                        None => client.submit(&ev.event, SUBMIT_WAIT).await,
                    };
                    match outcome.map(|o| o.certified()) {
                        // Certified, and the event certified is this one.
                        Ok(Ok(ce)) if ce.certificate.event == ev.hash => {
                            if measuring.load(Ordering::Relaxed) {
                                latencies.lock().await.push(started.elapsed().as_secs_f64());
                            }
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            continue 'items;
                        }
                    }
                }
            }
        }));
    }
    let probe = spawn_speed_probe(measuring.clone(), stop.clone());
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_secs(WARM_UP_SECS)).await;
    let cpu0: Vec<Option<(f64, u64)>> = pids.iter().map(|p| proc_stat(*p)).collect();
    let (me0, machine0) = (proc_stat(std::process::id()), machine_ticks());
    let log0 = clients[0].info().await?["log_len"].as_u64().unwrap_or(0);
    let stages0 = stage_totals(&scraper, &metrics_urls).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1: Vec<Option<(f64, u64)>> = pids.iter().map(|p| proc_stat(*p)).collect();
    let (me1, machine1) = (proc_stat(std::process::id()), machine_ticks());
    let log1 = clients[0].info().await?["log_len"].as_u64().unwrap_or(0);
    let stages1 = stage_totals(&scraper, &metrics_urls).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut probes = probe.join().unwrap_or_default();
    probes.sort_by(f64::total_cmp);
    let during = percentile(&probes, 0.5);
    let drift = (during / verify - 1.0) * 100.0;
    let mut lat = latencies.lock().await.clone();
    lat.sort_by(f64::total_cmp);
    let acked = lat.len() as f64 / elapsed;
    let certified = (log1 - log0) as f64 / elapsed;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    let bound = cores / (f64::from(o.operators) * verify);
    // The share of the signature bound reached, at the host's speed during the run: on a host
    // whose speed moves, a steadier figure of a build's efficiency than events/s (four 20 s runs
    // of one build: 2,686-3,106 ev/s, 21.4-22.8 % of this bound).
    let reached_during = certified * f64::from(o.operators) * during / cores;
    let disk: u64 = (0..peers.len())
        .map(|i| dir_size(&dir.join(format!("op{i}")).join("data")))
        .sum();
    // Percent of one core used between two `proc_stat` readings.
    let cpu_percent = |a: &Option<(f64, u64)>, b: &Option<(f64, u64)>| match (a, b) {
        (Some((c0, _)), Some((c1, _))) => (c1 - c0) / elapsed * 100.0,
        _ => f64::NAN,
    };
    let client_cpu = cpu_percent(&me0, &me1);
    let busy = match (machine0, machine1) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0,
        _ => f64::NAN,
    };
    // Mean ms per stage over the measured time, from the operators' histograms, and vote syncs
    // per second and operator (when every operator's metrics answered both times).
    let breakdown = stages0.zip(stages1).map(|(stages0, stages1)| {
        let means: Vec<f64> = stages0
            .iter()
            .zip(&stages1)
            .map(|((s0, c0), (s1, c1))| (s1 - s0) / (c1 - c0) * 1e3)
            .collect();
        let last = STAGES.len() - 1;
        let syncs_per_s = (stages1[last].1 - stages0[last].1) / elapsed / peers.len() as f64;
        (means, syncs_per_s)
    });
    let client_mean = lat.iter().sum::<f64>() / lat.len() as f64 * 1e3;
    let stages = breakdown.as_ref().map(|(means, syncs_per_s)| {
        let mut stages = serde_json::Map::new();
        for ((name, _), mean) in STAGES.iter().zip(means) {
            stages.insert(format!("{name}_mean_ms"), json!(mean));
        }
        stages.insert("client_mean_ms".into(), json!(client_mean));
        stages.insert("vote_syncs_per_s_per_operator".into(), json!(syncs_per_s));
        stages
    });
    let per_op: Vec<serde_json::Value> = cpu0
        .iter()
        .zip(&cpu1)
        .enumerate()
        .map(|(i, (a, b))| {
            let cpu = cpu_percent(a, b);
            json!({"operator": i, "cpu_percent": cpu, "rss_mb": b.map(|(_, r)| r as f64 / 1024.0)})
        })
        .collect();
    let results = json!({
        "operators": o.operators, "quorum": o.quorum, "clients": o.clients, "duration_s": elapsed,
        "offered_rate": o.rate,
        "certified_events_per_s": certified,
        "acknowledged_events_per_s": acked,
        "latency_ms": {"p50": percentile(&lat, 0.5) * 1e3, "p90": percentile(&lat, 0.9) * 1e3, "p99": percentile(&lat, 0.99) * 1e3, "max": lat.last().copied().unwrap_or(f64::NAN) * 1e3},
        "latency_stages": stages,
        "failed_submissions": failures.load(Ordering::Relaxed),
        "events_signed_before_run": presign,
        "items_signed_during_measurement": signed_live.load(Ordering::Relaxed),
        "encoding": if o.json { "json" } else { "binary" },
        "secp256k1_verify_us": verify * 1e6,
        "host_speed_during_run": {
            "probes": probes.len(),
            "verify_us_median": during * 1e6,
            "verify_us_min": probes.first().map(|v| v * 1e6),
            "verify_us_max": probes.last().map(|v| v * 1e6),
            "slowdown_percent": drift,
            "fraction_of_bound": reached_during,
        },
        "signature_bound_events_per_s": bound,
        "fraction_of_bound": certified / bound,
        "bytes_on_disk_per_event": disk as f64 / (log1.max(1) as f64 * f64::from(o.operators)),
        "per_operator": per_op,
        "client_cpu_percent": client_cpu,
        "machine": {"cores": cores, "busy_percent": busy},
    });
    println!("certified events/s (sustained over {elapsed:.0} s): {certified:.0}  (acknowledged to clients: {acked:.0}/s)");
    println!(
        "latency submission->certificate: p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.9) * 1e3,
        percentile(&lat, 0.99) * 1e3,
        lat.last().copied().unwrap_or(f64::NAN) * 1e3
    );
    match &breakdown {
        Some((m, syncs_per_s)) => {
            println!(
                "where the time goes (means after submission, events submitted to each operator, from the operators' metrics): taken by its event loop {:.1} ms, own prevote sent {:.1}, every operator's round-0 prevote seen (a fast certificate; or the certificate, if first) {:.1}, certificate {:.1}; at the client {client_mean:.1} (HTTP and the client: the rest)",
                m[0], m[1], m[3], m[5]
            );
            println!(
                "the commit phase beside it, for the events that reached its steps before their certificate: polka {:.1} ms, own commit sent {:.1}",
                m[2], m[4]
            );
            println!(
                "vote sync (write + fsync of own votes): mean {:.2} ms, {syncs_per_s:.0} per s per operator",
                m[6]
            );
        }
        None => println!("where the time goes: not known (an operator's metrics did not answer)"),
    }
    for p in &per_op {
        println!(
            "operator {}: CPU {:.0}%  RSS {:.0} MB",
            p["operator"],
            p["cpu_percent"].as_f64().unwrap_or(f64::NAN),
            p["rss_mb"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "client (this process): CPU {client_cpu:.0}%  machine: {busy:.0}% of {cores} cores busy"
    );
    let live = signed_live.load(Ordering::Relaxed);
    println!(
        "client: events {}, submitted as {}{}",
        if presign {
            "signed before the run"
        } else {
            "signed during the run"
        },
        if o.json { "JSON" } else { "binary (postcard)" },
        if presign && live > 0 {
            format!("; {live} items signed during the measured time (ran out of pre-signed ones)")
        } else {
            String::new()
        }
    );
    if o.rate.is_none() && busy < 90.0 {
        println!("note: the cores were not saturated, so the rate was bounded by clients / latency; more --clients would offer more");
    }
    println!(
        "bytes on disk per event per operator: {:.0}",
        results["bytes_on_disk_per_event"].as_f64().unwrap_or(0.0)
    );
    println!("secp256k1 verify: {:.1} us -> signature bound {} cores / ({} operators x verify) = {bound:.0} ev/s; reached {:.0}%", verify * 1e6, cores, o.operators, certified / bound * 100.0);
    if let (Some(min), Some(max)) = (probes.first(), probes.last()) {
        println!(
            "host speed during the run (one verify, CPU time, {} probes): median {:.1} us, {:.1}-{:.1} us; {drift:+.0}% against before the run; {:.1}% of the signature bound at that speed{}",
            probes.len(),
            during * 1e6,
            min * 1e6,
            max * 1e6,
            reached_during * 100.0,
            if drift.abs() > HOST_DRIFT_WARN_PERCENT {
                ": the host's speed moved, compare builds only in alternating runs"
            } else {
                ""
            }
        );
    }
    if let Some(p) = &o.out {
        std::fs::write(p, serde_json::to_string_pretty(&results)?)?;
        eprintln!("bench: results written to {}", p.display());
    }
    Ok(())
}
