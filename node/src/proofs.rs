//! Proof and audit commands: `proof get`, `proof export-ots`, `verify-proof`, `audit`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitcoin::block::Header;
use bitcoin::consensus::deserialize;
use bitcoin::hex::FromHex;
use bitcoin::{BlockHash, Txid};
use clap::{Args, Subcommand};
use hallmark_anchor::audit::{audit, ChainView, CheckpointEntry, CheckpointVerdict};
use hallmark_protocol::checkpoint::{verify_bundle, ProofBundle};
use hallmark_protocol::{CertifiedEvent, EventHash};
use hallmark_wallet::{RpcApiExt as _, RpcAuth, RpcClient, RpcConfig};
use serde_json::json;

use crate::commands::Ctx;

/// A bitcoind of the auditor's own.
#[derive(Args, Clone, Debug)]
pub struct BitcoinOpts {
    /// bitcoind RPC URL (the auditor's own node).
    #[arg(long, env = "HALLMARK_BITCOIN_RPC")]
    pub bitcoin_rpc: Option<String>,
    /// RPC user.
    #[arg(long, env = "HALLMARK_BITCOIN_RPC_USER")]
    pub rpc_user: Option<String>,
    /// RPC password.
    #[arg(long, env = "HALLMARK_BITCOIN_RPC_PASSWORD")]
    pub rpc_password: Option<String>,
    /// bitcoind cookie file (instead of user and password).
    #[arg(long)]
    pub rpc_cookie: Option<PathBuf>,
}

impl BitcoinOpts {
    /// An RPC client, if `--bitcoin-rpc` was given.
    pub fn rpc_client(&self) -> Result<Option<RpcClient>> {
        let Some(url) = &self.bitcoin_rpc else {
            return Ok(None);
        };
        let auth = match (&self.rpc_cookie, &self.rpc_user, &self.rpc_password) {
            (Some(c), _, _) => RpcAuth::Cookie(c.clone()),
            (None, Some(u), Some(p)) => RpcAuth::UserPass(u.clone(), p.clone()),
            _ => bail!("--bitcoin-rpc needs --rpc-cookie, or --rpc-user and --rpc-password"),
        };
        Ok(Some(
            RpcConfig {
                url: url.clone(),
                auth,
            }
            .client()?,
        ))
    }
}

/// `proof` subcommands.
#[derive(Subcommand, Debug)]
pub enum ProofCmd {
    /// Download an item's proof bundle (certified events, checkpoints, Bitcoin anchors).
    Get {
        /// Item id or hallmark: URI.
        item: String,
        /// Write it here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Export one event's Bitcoin anchoring as an OpenTimestamps .ots file, verifiable with the
    /// stock client: `ots --btc-regtest --bitcoin-node URL verify -d <event hash> FILE`.
    ExportOts {
        /// Item id or hallmark: URI.
        item: String,
        /// Event height in the item's chain (default: the latest anchored one).
        #[arg(long)]
        event: Option<u64>,
        /// Output file (default: <event hash>.ots).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

struct RpcChain(RpcClient);

impl ChainView for RpcChain {
    fn tip(&self) -> Result<u32, String> {
        self.0
            .block_count()
            .map(|h| h as u32)
            .map_err(|e| e.to_string())
    }
    fn block_at(&self, height: u32) -> Result<Option<BlockHash>, String> {
        if height > self.tip()? {
            return Ok(None);
        }
        self.0
            .block_hash(height.into())
            .map(Some)
            .map_err(|e| e.to_string())
    }
    fn block_txids(&self, block: &BlockHash) -> Result<Vec<Txid>, String> {
        self.0
            .block(block)
            .map(|b| b.txdata.iter().map(|t| t.compute_txid()).collect())
            .map_err(|e| e.to_string())
    }
}

async fn fetch_bundle(ctx: &Ctx, item: &str) -> Result<ProofBundle> {
    let item = ctx.item(item)?;
    let mut last = None;
    for (i, c) in ctx.operators() {
        match c.proof(&item).await {
            Ok(Some(b)) => return Ok(b),
            Ok(None) => last = Some(format!("operator {i} does not know item {item}")),
            Err(e) => last = Some(format!("operator {i}: {e:#}")),
        }
    }
    bail!(
        "no proof bundle: {}",
        last.unwrap_or_else(|| "no operators".into())
    )
}

/// `proof get` / `proof export-ots`.
pub async fn proof(ctx: &Ctx, cmd: &ProofCmd) -> Result<u8> {
    match cmd {
        ProofCmd::Get { item, out } => {
            let bundle = fetch_bundle(ctx, item).await?;
            let text = serde_json::to_string_pretty(&bundle)?;
            match out {
                Some(p) => {
                    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
                    eprintln!("proof bundle written to {}", p.display());
                }
                None => println!("{text}"),
            }
            Ok(0)
        }
        ProofCmd::ExportOts { item, event, out } => {
            let bundle = fetch_bundle(ctx, item).await?;
            // Zero trust: the bundle must verify before anything is exported from it.
            verify_bundle(ctx.federation(), &bundle)
                .context("the served proof bundle does not verify")?;
            let chosen = match event {
                Some(h) => bundle
                    .events
                    .iter()
                    .find(|p| p.event.event.body.height == *h)
                    .with_context(|| format!("the item has no event at height {h}"))?,
                None => bundle
                    .events
                    .iter()
                    .rev()
                    .find(|p| p.anchored.is_some())
                    .context("no event of this item is anchored yet")?,
            };
            let anchored = chosen
                .anchored
                .as_ref()
                .context("that event is not anchored yet (pending)")?;
            let hash = chosen.event.certificate.event;
            let file = hallmark_anchor::ots::timestamp_file(&hash, anchored)?;
            let path = out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{hash}.ots")));
            std::fs::write(&path, file).with_context(|| format!("writing {}", path.display()))?;
            ctx.print(
                &json!({"file": path, "digest": hash, "height": anchored.anchor.height}),
                &format!(
                    "wrote {}\n  digest  {hash} (the event hash)\n  block   height {}\n  verify  ots --btc-regtest --bitcoin-node <url> verify -d {hash} {}",
                    path.display(),
                    anchored.anchor.height,
                    path.display()
                ),
            );
            Ok(0)
        }
    }
}

fn read_headers(path: &Path) -> Result<HashMap<BlockHash, Header>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text
        .lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
    {
        let bytes = Vec::<u8>::from_hex(line)
            .with_context(|| format!("{}:{}: not hex", path.display(), n + 1))?;
        let h: Header = deserialize(&bytes).with_context(|| {
            format!("{}:{}: not an 80-byte block header", path.display(), n + 1)
        })?;
        out.insert(h.block_hash(), h);
    }
    Ok(out)
}

/// `verify-proof FILE`: checks a bundle offline against trusted block headers (or the user's
/// own bitcoind).
pub async fn verify_proof(
    ctx: &Ctx,
    file: &Path,
    headers: Option<&Path>,
    btc: &BitcoinOpts,
) -> Result<u8> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let bundle: ProofBundle = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a proof bundle", file.display()))?;
    let report = match verify_bundle(ctx.federation(), &bundle) {
        Ok(r) => r,
        Err(e) => {
            println!("INVALID: {e}");
            return Ok(20);
        }
    };
    let trusted = headers.map(read_headers).transpose()?;
    let rpc = btc.rpc_client()?;
    if trusted.is_none() && rpc.is_none() {
        bail!("give --headers FILE (trusted block headers, hex, one per line) or --bitcoin-rpc: without them the anchors' blocks cannot be checked against a chain you trust");
    }
    let rpc = rpc.map(RpcChain);
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for (p, a) in bundle.events.iter().zip(&report.anchors) {
        let h = p.event.event.body.height;
        let Some((number, facts)) = a else {
            lines.push(format!(
                "  #{h} {} pending (not anchored yet)",
                p.event.certificate.event
            ));
            continue;
        };
        if let Some(t) = &trusted {
            match t.get(&facts.block) {
                Some(header)
                    if bitcoin::consensus::serialize(header)
                        == p.anchored
                            .as_ref()
                            .map(|x| x.anchor.header.clone())
                            .unwrap_or_default() => {}
                _ => failures.push(format!(
                    "event #{h}: block {} is not among the trusted headers",
                    facts.block
                )),
            }
        }
        if let Some(r) = &rpc {
            match tokio::task::block_in_place(|| r.block_at(facts.height)) {
                Ok(Some(b)) if b == facts.block => {}
                Ok(_) => failures.push(format!(
                    "event #{h}: block {} is not in the best chain at height {}",
                    facts.block, facts.height
                )),
                Err(e) => bail!("bitcoind: {e}"),
            }
        }
        lines.push(format!(
            "  #{h} {} in checkpoint {number}, anchored by tx {} in block {} (height {})",
            p.event.certificate.event, facts.txid, facts.block, facts.height
        ));
    }
    if failures.is_empty() {
        println!(
            "VALID: item {} owned by {} ({})",
            bundle.item,
            report.state.owner,
            report.state.status.name()
        );
        for l in lines {
            println!("{l}");
        }
        Ok(0)
    } else {
        println!("INVALID:");
        for f in failures {
            println!("  - {f}");
        }
        Ok(20)
    }
}

/// `audit`: the whole checkpoint chain of an operator, checked against the auditor's bitcoind.
pub async fn run_audit(ctx: &Ctx, btc: &BitcoinOpts) -> Result<u8> {
    let rpc = btc
        .rpc_client()?
        .context("the auditor needs its own bitcoind: --bitcoin-rpc URL with credentials")?;
    let (i, c) = ctx
        .operators()
        .first()
        .context("no operator to audit")?
        .clone();
    let mut entries = Vec::new();
    loop {
        let v = c.checkpoints(entries.len() as u64).await?;
        let list = v["checkpoints"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            break;
        }
        for cp in list {
            entries.push(CheckpointEntry {
                certified: serde_json::from_value(cp["final"]["certified"].clone())
                    .context("bad checkpoint")?,
                events: serde_json::from_value(cp["final"]["events"].clone())
                    .context("bad checkpoint events")?,
                anchor: if cp["anchor"].is_null() {
                    None
                } else {
                    Some(
                        serde_json::from_value(cp["anchor"]["anchor"].clone())
                            .context("bad anchor")?,
                    )
                },
            });
        }
        if entries.len() as u64 >= v["next"].as_u64().unwrap_or(0) {
            break;
        }
    }
    let mut events: HashMap<EventHash, CertifiedEvent> = HashMap::new();
    for e in entries.iter().flat_map(|e| &e.events) {
        if let Some(ce) = c.event(e).await? {
            events.insert(*e, ce);
        }
    }
    let chain = RpcChain(rpc);
    let federation = ctx.federation().clone();
    let report = tokio::task::block_in_place(|| audit(&federation, &entries, &events, &chain));
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "audit of operator {i} ({}): {} checkpoints covering {} events",
            c.base(),
            report.checkpoints.len(),
            report.events
        );
        for (n, v) in &report.checkpoints {
            match v {
                CheckpointVerdict::Anchored {
                    txid,
                    block,
                    height,
                    confirmations,
                } => {
                    println!("  checkpoint {n}: OK, anchored by {txid} in block {block} (height {height}, {confirmations} confirmations)")
                }
                CheckpointVerdict::NotAnchored => {
                    println!("  checkpoint {n}: certified, not anchored yet")
                }
                CheckpointVerdict::Failed { reason } => {
                    println!("  checkpoint {n}: FAILED: {reason}")
                }
            }
        }
        println!(
            "{}",
            if report.ok() {
                "AUDIT PASSED"
            } else {
                "AUDIT FAILED"
            }
        );
    }
    Ok(if report.ok() { 0 } else { 20 })
}
