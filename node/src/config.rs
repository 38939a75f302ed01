//! Operator configuration: `operator.toml` (this operator) and `federation.toml` (shared by all
//! operators: the federation's parameters and where each member is). Validated once at start.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hallmark_p2p::{peer_id_of, Multiaddr, PeerId};
use hallmark_protocol::{Federation, FederationParams, PublicKey, SigningKey};
use serde::{Deserialize, Serialize};

/// How Settle and ExpireEscrow are checked before an operator co-signs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentMode {
    /// No payment adapter: Settle and ExpireEscrow are refused.
    #[default]
    None,
    /// The seed's mock adapter, for tests and offline demos: every Settle and ExpireEscrow of
    /// the escrowed sale is accepted as if the chain said so.
    Mock,
    /// The operator's own bitcoind (its `[bitcoin]` section; the node needs `-txindex`).
    Bitcoind,
}

/// `operator.toml`. Relative paths are relative to the file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// File holding the operator's secret key (hex).
    pub key_file: PathBuf,
    /// The shared `federation.toml`.
    pub federation_file: PathBuf,
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// libp2p listen address, e.g. `/ip4/127.0.0.1/tcp/47100`.
    pub listen: String,
    /// HTTP API address.
    pub http_listen: SocketAddr,
    /// Prometheus `/metrics` address.
    pub metrics_listen: SocketAddr,
    /// Payment checks for settlement.
    #[serde(default)]
    pub payments: PaymentMode,
    /// Confirmations a sale's payment needs (bitcoind payments).
    #[serde(default = "default_confirmations")]
    pub payment_confirmations: u32,
    /// How far an event's timestamp may be from this operator's clock.
    #[serde(default = "default_window")]
    pub timestamp_window_secs: u64,
    /// Base timeout of a voting round (grows with the round number).
    #[serde(default = "default_round_timeout")]
    pub round_timeout_ms: u64,
    /// Propose a checkpoint once this many certified events are not yet in one.
    #[serde(default = "default_checkpoint_events")]
    pub checkpoint_every_events: usize,
    /// Or once this many seconds have passed since the last one, if any are.
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_every_secs: u64,
    /// Entries of the own-votes journal (one per flush of the event loop with votes) after which
    /// it is compacted: the votes at the slots still undecided are rewritten as one entry.
    #[serde(default = "default_vote_journal_compaction")]
    pub vote_journal_compaction: u64,
    /// Seconds the next operator waits for a confirmed anchor before anchoring itself.
    #[serde(default = "default_anchor_timeout")]
    pub anchor_timeout_secs: u64,
    /// The operator's own bitcoind; without it, checkpoints are agreed but not anchored.
    #[serde(default)]
    pub bitcoin: Option<BitcoinConfig>,
    /// Requests per second one client (IP address) may make to the API; 0 means no limit.
    #[serde(default = "default_http_rate")]
    pub http_rate_per_sec: u32,
    /// Requests a client may make at once above its rate.
    #[serde(default = "default_http_burst")]
    pub http_burst: u32,
    /// Open API connections at most.
    #[serde(default = "default_http_connections")]
    pub http_max_connections: usize,
    /// Seconds a client has to send a request's headers before the connection is closed.
    #[serde(default = "default_http_header_timeout")]
    pub http_header_timeout_secs: u64,
}

/// How an operator reaches its bitcoind.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitcoinConfig {
    /// RPC URL, e.g. `http://127.0.0.1:18443`.
    pub rpc_url: String,
    /// RPC user (with `rpc_password`), unless `cookie_file` is given.
    #[serde(default)]
    pub rpc_user: Option<String>,
    /// RPC password.
    #[serde(default)]
    pub rpc_password: Option<String>,
    /// bitcoind's `.cookie` file.
    #[serde(default)]
    pub cookie_file: Option<PathBuf>,
    /// `regtest`, `signet`, `testnet` or `bitcoin`.
    #[serde(default = "default_network")]
    pub network: String,
    /// Lowest fee rate for anchors, sat/vB.
    #[serde(default = "default_fee_floor")]
    pub fee_floor_sat_vb: u64,
    /// Bump an anchor's fee (RBF) if unconfirmed after this many seconds.
    #[serde(default = "default_bump_after")]
    pub bump_after_secs: u64,
}

impl BitcoinConfig {
    /// The RPC settings for the wallet crate.
    pub fn rpc(&self) -> Result<hallmark_wallet::RpcConfig> {
        let auth = match (&self.cookie_file, &self.rpc_user, &self.rpc_password) {
            (Some(c), _, _) => hallmark_wallet::RpcAuth::Cookie(c.clone()),
            (None, Some(u), Some(p)) => hallmark_wallet::RpcAuth::UserPass(u.clone(), p.clone()),
            _ => bail!("bitcoin: give cookie_file, or rpc_user and rpc_password"),
        };
        Ok(hallmark_wallet::RpcConfig {
            url: self.rpc_url.clone(),
            auth,
        })
    }

    /// The network.
    pub fn network(&self) -> Result<bitcoin::Network> {
        self.network
            .parse()
            .map_err(|_| anyhow::anyhow!("bitcoin: unknown network {:?}", self.network))
    }
}

fn default_http_rate() -> u32 {
    100
}

fn default_http_burst() -> u32 {
    200
}

fn default_http_header_timeout() -> u64 {
    10
}

fn default_http_connections() -> usize {
    1_024
}

fn default_confirmations() -> u32 {
    1
}

fn default_checkpoint_events() -> usize {
    1_000
}

fn default_checkpoint_secs() -> u64 {
    60
}

fn default_anchor_timeout() -> u64 {
    600
}

fn default_network() -> String {
    "regtest".into()
}

fn default_fee_floor() -> u64 {
    1
}

fn default_bump_after() -> u64 {
    600
}

fn default_window() -> u64 {
    600
}

fn default_round_timeout() -> u64 {
    1_000
}

/// Some 20 s at the max rate, where a compaction rewrites the votes of some 500 undecided slots.
fn default_vote_journal_compaction() -> u64 {
    1_024
}

/// One federation member: identity and addresses.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Operator key (as in the parameters).
    pub key: PublicKey,
    /// libp2p PeerId (derived from the key; checked).
    pub peer_id: String,
    /// libp2p address.
    pub address: String,
    /// Base URL of its HTTP API, for clients.
    pub http: String,
}

/// `federation.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationFile {
    /// What defines the federation (hashed into its id).
    pub params: FederationParams,
    /// Where its members are.
    pub members: Vec<Member>,
}

/// A member, parsed.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Operator index.
    pub index: usize,
    /// PeerId.
    pub peer_id: PeerId,
    /// Address.
    pub address: Multiaddr,
    /// HTTP base URL.
    pub http: String,
}

/// Everything an operator needs, validated.
#[derive(Debug)]
pub struct Loaded {
    /// The operator file.
    pub config: OperatorConfig,
    /// The federation.
    pub federation: Federation,
    /// Members, in operator order.
    pub peers: Vec<Peer>,
    /// This operator's key.
    pub key: SigningKey,
    /// This operator's index.
    pub me: usize,
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl FederationFile {
    /// Reads and validates a federation file.
    pub fn load(path: &Path) -> Result<(Federation, Vec<Peer>)> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: FederationFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let federation = Federation::new(file.params).context("invalid federation parameters")?;
        if file.members.len() != federation.params().operators.len() {
            bail!(
                "{} members listed for {} operators",
                file.members.len(),
                federation.params().operators.len()
            );
        }
        let mut peers = Vec::new();
        for (index, op) in federation.params().operators.iter().enumerate() {
            let m = file
                .members
                .iter()
                .find(|m| m.key == op.key)
                .with_context(|| format!("operator {index} ({}) has no member entry", op.key))?;
            let peer_id: PeerId = m
                .peer_id
                .parse()
                .with_context(|| format!("member {index}: bad peer_id"))?;
            if peer_id != peer_id_of(&m.key) {
                bail!("member {index}: peer_id {peer_id} is not the one derived from its key");
            }
            peers.push(Peer {
                index,
                peer_id,
                address: m
                    .address
                    .parse()
                    .with_context(|| format!("member {index}: bad address"))?,
                http: m.http.trim_end_matches('/').to_string(),
            });
        }
        Ok((federation, peers))
    }
}

impl OperatorConfig {
    /// Reads and validates `operator.toml` and everything it names.
    pub fn load(path: &Path) -> Result<Loaded> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: OperatorConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.key_file = resolve(base, &config.key_file);
        config.federation_file = resolve(base, &config.federation_file);
        config.data_dir = resolve(base, &config.data_dir);
        config
            .listen
            .parse::<Multiaddr>()
            .with_context(|| format!("bad listen address {}", config.listen))?;
        let key = crate::keyfile::read(&config.key_file)?;
        let (federation, peers) = FederationFile::load(&config.federation_file)?;
        let me = federation
            .params()
            .operators
            .iter()
            .position(|o| o.key == key.public_key())
            .context("this operator's key is not in the federation")?;
        Ok(Loaded {
            config,
            federation,
            peers,
            key,
            me,
        })
    }
}
