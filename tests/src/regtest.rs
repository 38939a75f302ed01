//! A real regtest bitcoind for tests, started and stopped through `scripts/regtest.sh`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use bitcoin::{Address, BlockHash, Network};
use hallmark_wallet::{RpcAuth, RpcClient, RpcConfig};

/// The project's regtest script.
pub fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/regtest.sh"
    ))
}

/// A running regtest bitcoind in a temp dir; stopped on drop.
pub struct Bitcoind {
    /// Its datadir.
    pub dir: tempfile::TempDir,
    /// RPC settings.
    pub rpc: RpcConfig,
    client: RpcClient,
}

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(script())
        .args(args)
        .output()
        .context("running scripts/regtest.sh")?;
    if !out.status.success() {
        bail!(
            "regtest.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Bitcoind {
    /// Starts one.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let out = run(&["start", dir.path().to_str().context("utf-8 path")?])?;
        let get = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
                .with_context(|| format!("regtest.sh printed no {k}"))
        };
        let rpc = RpcConfig {
            url: get("BITCOIN_RPC_URL")?,
            auth: RpcAuth::UserPass(get("BITCOIN_RPC_USER")?, get("BITCOIN_RPC_PASSWORD")?),
        };
        let client = rpc.client()?;
        Ok(Self { dir, rpc, client })
    }

    /// The RPC client.
    pub fn client(&self) -> &RpcClient {
        &self.client
    }

    /// RPC user and password.
    pub fn credentials(&self) -> (String, String) {
        match &self.rpc.auth {
            RpcAuth::UserPass(u, p) => (u.clone(), p.clone()),
            RpcAuth::Cookie(_) => unreachable!("the script uses user and password"),
        }
    }

    /// `bitcoin-cli` against it.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["cli", self.dir.path().to_str().context("utf-8 path")?];
        a.extend_from_slice(args);
        Ok(run(&a)?.trim().to_string())
    }

    /// Mines `n` blocks to `address`.
    pub fn mine(&self, n: u64, address: &Address) -> Result<Vec<BlockHash>> {
        let out = self.cli(&["generatetoaddress", &n.to_string(), &address.to_string()])?;
        Ok(serde_json::from_str(&out)?)
    }

    /// A throwaway regtest address (nobody's).
    pub fn burn_address() -> Address {
        hallmark_wallet::first_address(&[0x42; 32], Network::Regtest)
    }

    /// Stops it (it can be started again with [`Bitcoind::restart`]).
    pub fn stop(&self) -> Result<()> {
        run(&["stop", self.dir.path().to_str().context("utf-8 path")?]).map(|_| ())
    }

    /// Starts it again on the same datadir and port.
    pub fn restart(&self) -> Result<()> {
        run(&["start", self.dir.path().to_str().context("utf-8 path")?]).map(|_| ())
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts a federation of `exe` operators that anchor on `btc`, check sale payments on it
/// (`payments = bitcoind`), and have funded wallets.
pub async fn federation_on(
    exe: &str,
    btc: &Bitcoind,
    configure: impl FnOnce(&mut hallmark_node::devnet::InitOptions),
) -> Result<crate::Harness> {
    let (user, password) = btc.credentials();
    let url = btc.rpc.url.clone();
    let h = crate::Harness::start_with(exe, 4, 3, |o| {
        o.payments = hallmark_node::config::PaymentMode::Bitcoind;
        o.checkpoint_every_events = 1_000;
        o.checkpoint_every_secs = 2;
        o.anchor_timeout_secs = 10;
        o.bitcoin = Some(hallmark_node::config::BitcoinConfig {
            rpc_url: url,
            rpc_user: Some(user),
            rpc_password: Some(password),
            cookie_file: None,
            network: "regtest".into(),
            fee_floor_sat_vb: 1,
            bump_after_secs: 60,
        });
        configure(o);
    })
    .await?;
    for i in 0..h.len() {
        let key = h.operator_key(i)?;
        btc.mine(
            1,
            &hallmark_wallet::first_address(&key.secret_bytes(), Network::Regtest),
        )?;
    }
    Ok(h)
}
