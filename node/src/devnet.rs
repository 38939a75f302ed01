//! `hallmark devnet`: a local federation of operator processes, for development and tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bitcoin::{CompressedPublicKey, ScriptBuf};
use hallmark_p2p::peer_id_of;
use hallmark_protocol::{FederationParams, FeeSchedule, OperatorEntry, PublicKey, QuorumConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::{BitcoinConfig, FederationFile, Member, OperatorConfig, PaymentMode};
use crate::keyfile;

/// Options of `devnet init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Operators.
    pub operators: u32,
    /// Quorum threshold.
    pub quorum: u32,
    /// Ports used: p2p `base+i`, HTTP `base+100+i`, metrics `base+200+i`; or explicit ports.
    pub ports: Ports,
    /// Payment adapter for every operator.
    pub payments: PaymentMode,
    /// Round timeout.
    pub round_timeout_ms: u64,
    /// Checkpoint after this many events...
    pub checkpoint_every_events: usize,
    /// ...or this many seconds.
    pub checkpoint_every_secs: u64,
    /// Anchor failover delay.
    pub anchor_timeout_secs: u64,
    /// Own-votes journal entries between compactions.
    pub vote_journal_compaction: u64,
    /// A bitcoind for every operator (each gets its own wallet on it).
    pub bitcoin: Option<BitcoinConfig>,
    /// Requests per second per client on each operator's API (0: no limit).
    pub http_rate_per_sec: u32,
    /// Seconds a client has to send its request headers.
    pub http_header_timeout_secs: u64,
}

impl InitOptions {
    /// Defaults for `n` operators with quorum `m`.
    pub fn new(n: u32, m: u32, ports: Ports) -> Self {
        Self {
            operators: n,
            quorum: m,
            ports,
            payments: PaymentMode::Mock,
            round_timeout_ms: 1_000,
            checkpoint_every_events: 1_000,
            checkpoint_every_secs: 60,
            anchor_timeout_secs: 600,
            vote_journal_compaction: 1_024,
            bitcoin: None,
            http_rate_per_sec: 100,
            http_header_timeout_secs: 10,
        }
    }
}

/// Where operators listen.
#[derive(Clone, Debug)]
pub enum Ports {
    /// p2p `base+i`, HTTP `base+100+i`, metrics `base+200+i`.
    Base(u16),
    /// Explicit (p2p, http, metrics) per operator.
    Explicit(Vec<(u16, u16, u16)>),
}

/// A P2WPKH script paying to a public key (network-independent).
pub fn p2wpkh(key: &PublicKey) -> ScriptBuf {
    let cpk = CompressedPublicKey::from_slice(&key.to_bytes())
        .expect("a hallmark key is a compressed secp256k1 key");
    ScriptBuf::new_p2wpkh(&cpk.wpubkey_hash())
}

/// Path of operator `i`'s config in a devnet directory.
pub fn operator_config_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("op{i}")).join("operator.toml")
}

/// Writes keys and configs for a local federation into `dir` (which must be empty or absent).
pub fn init(dir: &Path, opts: &InitOptions) -> Result<()> {
    let quorum = QuorumConfig::new(opts.quorum, opts.operators).context("invalid quorum")?;
    if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} is not empty: refusing to overwrite a devnet",
            dir.display()
        );
    }
    let n = opts.operators as usize;
    let ports: Vec<(u16, u16, u16)> = match &opts.ports {
        Ports::Base(b) => (0..n as u16)
            .map(|i| (b + i, b + 100 + i, b + 200 + i))
            .collect(),
        Ports::Explicit(p) if p.len() == n => p.clone(),
        Ports::Explicit(p) => bail!("{} port triples for {n} operators", p.len()),
    };
    fs::create_dir_all(dir)?;
    let keys: Vec<_> = (0..n).map(|_| keyfile::generate()).collect();
    let treasury = keyfile::generate();
    keyfile::write(&dir.join("treasury.key"), &treasury)?;
    let params = FederationParams {
        name: "hallmark-devnet".into(),
        quorum,
        max_faulty: quorum.tolerated_faults(),
        operators: keys
            .iter()
            .map(|k| OperatorEntry {
                key: k.public_key(),
                payout: p2wpkh(&k.public_key()),
            })
            .collect(),
        treasury: p2wpkh(&treasury.public_key()),
        fees: FeeSchedule::default(),
    };
    let members = keys
        .iter()
        .zip(&ports)
        .map(|(k, (p2p, http, _))| Member {
            key: k.public_key(),
            peer_id: peer_id_of(&k.public_key()).to_string(),
            address: format!("/ip4/127.0.0.1/tcp/{p2p}"),
            http: format!("http://127.0.0.1:{http}"),
        })
        .collect();
    fs::write(
        dir.join("federation.toml"),
        toml::to_string_pretty(&FederationFile { params, members })?,
    )?;
    for (i, (k, (p2p, http, metrics))) in keys.iter().zip(&ports).enumerate() {
        let op_dir = dir.join(format!("op{i}"));
        keyfile::write(&op_dir.join("operator.key"), k)?;
        let cfg = OperatorConfig {
            key_file: "operator.key".into(),
            federation_file: "../federation.toml".into(),
            data_dir: "data".into(),
            listen: format!("/ip4/127.0.0.1/tcp/{p2p}"),
            http_listen: format!("127.0.0.1:{http}").parse()?,
            metrics_listen: format!("127.0.0.1:{metrics}").parse()?,
            payments: opts.payments,
            payment_confirmations: 1,
            timestamp_window_secs: 600,
            round_timeout_ms: opts.round_timeout_ms,
            checkpoint_every_events: opts.checkpoint_every_events,
            checkpoint_every_secs: opts.checkpoint_every_secs,
            anchor_timeout_secs: opts.anchor_timeout_secs,
            vote_journal_compaction: opts.vote_journal_compaction,
            bitcoin: opts.bitcoin.clone(),
            http_rate_per_sec: opts.http_rate_per_sec,
            http_burst: opts.http_rate_per_sec.saturating_mul(2),
            http_max_connections: 1_024,
            http_header_timeout_secs: opts.http_header_timeout_secs,
        };
        fs::write(op_dir.join("operator.toml"), toml::to_string_pretty(&cfg)?)?;
    }
    Ok(())
}

/// Operator processes of a devnet.
pub struct Processes {
    children: Vec<(usize, Child)>,
}

/// Starts operator `i` of the devnet in `dir` as a process of `exe`, logging to `op{i}/operator.log`.
pub fn spawn_operator(exe: &Path, dir: &Path, i: usize) -> Result<Child> {
    let cfg = operator_config_path(dir, i);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("op{i}")).join("operator.log"))?;
    Command::new(exe)
        .args(["operator", "run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting operator {i}"))
}

/// Number of operators configured in a devnet directory.
pub fn operator_count(dir: &Path) -> Result<usize> {
    let n = (0..)
        .take_while(|i| operator_config_path(dir, *i).exists())
        .count();
    if n == 0 {
        bail!(
            "{} has no op0/operator.toml: run `hallmark devnet init` first",
            dir.display()
        );
    }
    Ok(n)
}

impl Processes {
    /// Starts every operator of the devnet.
    pub fn start(dir: &Path) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let n = operator_count(dir)?;
        let mut children = Vec::new();
        for i in 0..n {
            children.push((i, spawn_operator(&exe, dir, i)?));
        }
        Ok(Self { children })
    }

    /// The operators' process ids, by operator index.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }

    /// The first operator that has exited, if any.
    pub fn exited(&mut self) -> Option<(usize, std::process::ExitStatus)> {
        self.children
            .iter_mut()
            .find_map(|(i, c)| c.try_wait().ok().flatten().map(|s| (*i, s)))
    }

    /// Completes when an operator exits, with the first one found (checked every 200 ms).
    pub async fn first_exit(&mut self) -> (usize, std::process::ExitStatus) {
        let mut poll = tokio::time::interval(Duration::from_millis(200));
        loop {
            poll.tick().await;
            if let Some(exit) = self.exited() {
                return exit;
            }
        }
    }

    /// SIGTERM to all, then waits up to `grace` before SIGKILL.
    pub fn stop(mut self, grace: Duration) {
        for (_, c) in &self.children {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = std::time::Instant::now() + grace;
        for (i, c) in &mut self.children {
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    eprintln!("operator {i} did not stop in time: killing it");
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `devnet up`: runs the devnet until Ctrl-C or SIGTERM, then stops every operator.
pub async fn up(dir: &Path) -> Result<()> {
    let (_, peers) = FederationFile::load(&dir.join("federation.toml"))?;
    let mut procs = Processes::start(dir)?;
    println!(
        "devnet: {} operators started (logs in {}/op*/operator.log)",
        peers.len(),
        dir.display()
    );
    for p in &peers {
        println!("  operator {}: {}", p.index, p.http);
    }
    println!("press Ctrl-C to stop");
    let signal = crate::cli::shutdown_signal()?;
    let failed = tokio::select! {
        _ = signal => None,
        exit = procs.first_exit() => Some(exit),
    };
    println!("devnet: stopping operators");
    procs.stop(Duration::from_secs(10));
    if let Some((i, status)) = failed {
        bail!(
            "operator {i} exited ({status}); see {}/op{i}/operator.log",
            dir.display()
        );
    }
    println!("devnet: stopped");
    Ok(())
}
