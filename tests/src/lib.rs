//! The federation test harness: N operator processes on loopback ports in a temp dir, with
//! clients, SIGKILL/SIGTERM/restart, and `poll_until` to wait on conditions (never bare sleeps).

pub mod regtest;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hallmark_node::client::{Author, Client};
use hallmark_node::config::{FederationFile, PaymentMode, Peer};
use hallmark_node::devnet::{self, InitOptions, Ports};
use hallmark_node::keyfile;
use hallmark_protocol::{Federation, SigningKey};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warp::Reply as _;

/// Polls `f` every 50 ms until it returns `Some`, failing after `timeout` with `what`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` distinct loopback ports free at the time of the call, for operators to bind shortly after.
/// They are drawn at random below the kernel's ephemeral range: a port that `bind(0)` handed out
/// and released could be taken meanwhile as the local port of an outgoing connection (the tests
/// make many), and the operator that was to listen there would not start. Also below the ranges
/// the bench tests look in (29,100 and up, `tests/tests/bench.rs`).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    const LOWEST: u16 = 10_000;
    const BENCH_TESTS: u16 = 29_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let span = u64::from(ephemeral_low.min(BENCH_TESTS).saturating_sub(LOWEST));
    let mut listeners = Vec::with_capacity(n);
    if span >= 1_000 {
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64
            ^ (u64::from(std::process::id()) << 32)
            | 1;
        for _ in 0..100 * n {
            if listeners.len() == n {
                break;
            }
            // xorshift64: any spread will do, the bind below is the check.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = LOWEST + (x % span) as u16;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                listeners.push(l);
            }
        }
    }
    // Bound all at once so that they are distinct (and, failing the above, from the kernel).
    while listeners.len() < n {
        listeners.push(TcpListener::bind("127.0.0.1:0")?);
    }
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?)
}

/// A running federation of operator processes.
pub struct Harness {
    /// The devnet directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The federation.
    pub federation: Federation,
    /// Members.
    pub peers: Vec<Peer>,
    exe: PathBuf,
    children: Vec<Option<Child>>,
}

impl Harness {
    /// Starts an `m`-of-`n` federation of `exe` processes (with the mock payment adapter) and
    /// waits until every operator is up and connected to all others.
    pub async fn start(exe: &str, n: u32, m: u32) -> Result<Self> {
        Self::start_with(exe, n, m, |_| {}).await
    }

    /// Like [`Harness::start`], with the devnet options adjusted by `configure`.
    pub async fn start_with(
        exe: &str,
        n: u32,
        m: u32,
        configure: impl FnOnce(&mut InitOptions),
    ) -> Result<Self> {
        let mut opts = InitOptions::new(n, m, Ports::Explicit(Vec::new()));
        opts.payments = PaymentMode::Mock;
        opts.round_timeout_ms = 500;
        // Tests hammer operators from one address; the rate limit has its own test.
        opts.http_rate_per_sec = 0;
        configure(&mut opts);
        // An operator that could not bind a port (taken by another process between the choice
        // and the start) exits: start again on other ports, a few times.
        let mut attempt = 1;
        loop {
            let p = free_ports(3 * n as usize)?;
            opts.ports = Ports::Explicit(
                (0..n as usize)
                    .map(|i| (p[3 * i], p[3 * i + 1], p[3 * i + 2]))
                    .collect(),
            );
            let mut h = Self::spawn(exe, &opts)?;
            match h.wait_all_connected().await {
                Ok(()) => return Ok(h),
                Err(e) if attempt < 3 && h.any_exited() => {
                    eprintln!("harness: an operator exited at start ({e:#}); again on other ports");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes a devnet for `opts` into a new temp dir and starts its operators.
    fn spawn(exe: &str, opts: &InitOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        devnet::init(dir.path(), opts)?;
        let (federation, peers) = FederationFile::load(&dir.path().join("federation.toml"))?;
        let mut h = Self {
            dir,
            federation,
            peers,
            exe: PathBuf::from(exe),
            children: Vec::new(),
        };
        for i in 0..h.peers.len() {
            let c = devnet::spawn_operator(&h.exe, h.dir.path(), i)?;
            h.children.push(Some(c));
        }
        Ok(h)
    }

    /// Waits until every operator is up and connected to all others; the error carries the end
    /// of every operator's log.
    async fn wait_all_connected(&mut self) -> Result<()> {
        let n = self.peers.len();
        let clients: Vec<Client> = (0..n).map(|i| self.client(i)).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The first operator not yet connected to every other, if any.
            let mut waiting = None;
            for (i, c) in clients.iter().enumerate() {
                let peers = c
                    .info()
                    .await
                    .ok()
                    .and_then(|v| v["peers_connected"].as_i64());
                if peers.is_none_or(|p| p < n as i64 - 1) {
                    waiting = Some(i);
                    break;
                }
            }
            let Some(i) = waiting else { return Ok(()) };
            // An operator that exited will never connect: say so at once (the caller starts
            // again on other ports) rather than after the timeout.
            let exited = self.any_exited();
            if exited || Instant::now() > deadline {
                let logs: Vec<String> = (0..n).map(|j| self.log_tail(j)).collect();
                let why = if exited {
                    "an operator process exited at start".to_string()
                } else {
                    format!(
                        "timed out after 30 s waiting for operator {i} to see {} peers",
                        n - 1
                    )
                };
                bail!("{why}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether an operator process this harness started has exited.
    fn any_exited(&mut self) -> bool {
        self.children
            .iter_mut()
            .flatten()
            .any(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Number of operators.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Never true.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// A client of operator `i`.
    pub fn client(&self, i: usize) -> Client {
        Client::new(&self.peers[i].http, Duration::from_secs(30))
    }

    /// An author with a fresh key in this federation.
    pub fn author(&self) -> Author {
        Author::new(self.federation.id(), keyfile::generate())
    }

    /// An author with a given key.
    pub fn author_with(&self, key: SigningKey) -> Author {
        Author::new(self.federation.id(), key)
    }

    /// Runs the `hallmark` CLI (`--json`, this federation's file, key file `key`, extra
    /// environment `env`); returns its exit code, the JSON it printed (or null) and its text.
    pub fn cli(
        &self,
        key: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(i32, serde_json::Value, String)> {
        let out = std::process::Command::new(&self.exe)
            .args(args)
            .arg("--json")
            .arg("--federation")
            .arg(self.path().join("federation.toml"))
            .arg("--key")
            .arg(key)
            .envs(env.iter().copied())
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        Ok((out.status.code().unwrap_or(-1), json, text))
    }

    /// Like [`Harness::cli`], failing unless the command succeeds; returns its JSON.
    pub fn cli_ok(
        &self,
        key: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<serde_json::Value> {
        let (code, json, text) = self.cli(key, args, env)?;
        if code != 0 {
            bail!("hallmark {args:?} failed ({code}): {text}");
        }
        Ok(json)
    }

    /// Operator `i`'s directory.
    pub fn operator_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("op{i}"))
    }

    /// Waits until operator `i` answers and sees at least `peers` members.
    pub async fn wait_connected(&self, i: usize, peers: i64) -> Result<()> {
        let c = self.client(i);
        poll_until(
            Duration::from_secs(30),
            &format!("operator {i} up with {peers} peers"),
            || {
                let c = c.clone();
                async move {
                    let info = c.info().await.ok()?;
                    (info["peers_connected"].as_i64()? >= peers).then_some(())
                }
            },
        )
        .await
        .with_context(|| self.log_tail(i))
    }

    /// The end of operator `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let log =
            std::fs::read_to_string(self.operator_dir(i).join("operator.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "operator {i} log:\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    fn signal(&mut self, i: usize, sig: Signal) -> Result<()> {
        let mut c = self.children[i].take().context("operator not running")?;
        kill(Pid::from_raw(c.id() as i32), sig)?;
        c.wait()?;
        Ok(())
    }

    /// Operator `i`'s Prometheus metrics, as text.
    pub async fn metrics(&self, i: usize) -> Result<String> {
        let cfg = std::fs::read_to_string(self.operator_dir(i).join("operator.toml"))?;
        let cfg: hallmark_node::config::OperatorConfig = toml::from_str(&cfg)?;
        Ok(
            reqwest::get(format!("http://{}/metrics", cfg.metrics_listen))
                .await?
                .text()
                .await?,
        )
    }

    /// The value of operator `i`'s unlabelled metric `name` (0 when absent).
    pub async fn metric(&self, i: usize, name: &str) -> Result<f64> {
        let text = self.metrics(i).await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0))
    }

    /// Operator `i`'s round-0 commits held back with this `outcome` (fast, expired, not_held).
    pub async fn held_commits(&self, i: usize, outcome: &str) -> Result<f64> {
        let name = format!("hallmark_consensus_held_commits_total{{outcome=\"{outcome}\"}}");
        self.metric(i, &name).await
    }

    /// Operator `i`'s process id.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// Resident memory of operator `i`, in MB (from `/proc`).
    pub fn rss_mb(&self, i: usize) -> Result<f64> {
        let pid = self.pid(i).context("operator is running")?;
        let (_, kb) = hallmark_node::bench::proc_stat(pid).context("/proc readable")?;
        Ok(kb as f64 / 1024.0)
    }

    /// SIGKILL operator `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::SIGKILL)
    }

    /// SIGTERM operator `i` and wait for it to exit.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::SIGTERM)
    }

    /// SIGSTOP operator `i`: it holds its connections but answers nothing.
    pub fn pause(&self, i: usize) -> Result<()> {
        let c = self.children[i].as_ref().context("operator not running")?;
        kill(Pid::from_raw(c.id() as i32), Signal::SIGSTOP)?;
        // The stop reaches every thread asynchronously: wait until the kernel reports it.
        let stat = format!("/proc/{}/stat", c.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let s = std::fs::read_to_string(&stat)?;
            let state = s
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if state == Some('T') {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("operator {i} did not stop")
    }

    /// SIGCONT operator `i`.
    pub fn resume(&self, i: usize) -> Result<()> {
        let c = self.children[i].as_ref().context("operator not running")?;
        kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT)?;
        Ok(())
    }

    /// Operator `i`'s signing key (tests that play a Byzantine operator use it).
    pub fn operator_key(&self, i: usize) -> Result<SigningKey> {
        keyfile::read(&self.operator_dir(i).join("operator.key"))
    }

    /// Starts operator `i` again (same config and data).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.children[i].is_some() {
            bail!("operator {i} is running");
        }
        self.children[i] = Some(devnet::spawn_operator(&self.exe, self.dir.path(), i)?);
        Ok(())
    }

    /// The devnet directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A lying "operator": an HTTP server that answers every item-history request with `history`.
/// Returns its base URL; it runs until the test's runtime ends.
pub async fn fake_operator(history: serde_json::Value) -> Result<String> {
    use warp::Filter;
    let route = warp::path!("v1" / "items" / String / "history")
        .map(move |_id: String| warp::reply::json(&history).into_response())
        .boxed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(warp::serve(route).incoming(listener).run());
    Ok(url)
}
