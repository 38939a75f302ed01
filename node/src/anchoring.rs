//! The anchoring worker: a blocking thread that owns the operator's BDK wallet and its bitcoind
//! RPC client. It broadcasts anchor transactions when the event loop asks, bumps their fee (RBF)
//! while they stay unconfirmed, and watches every block for Hallmark anchors — reporting each one
//! it sees, and each one a reorganisation removes — back to the event loop.
//!
//! bitcoind being down only delays this: the worker logs, retries, and the federation keeps
//! certifying events meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bitcoin::consensus::serialize;
use bitcoin::{BlockHash, FeeRate, Network, Txid};
use hallmark_protocol::checkpoint::{anchor_payload, anchors_in, Anchor, CheckpointHash};
use hallmark_wallet::{ChangeSetStore, HallmarkWallet, RpcConfig};
use tokio::sync::mpsc as tmpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::Input;
use crate::metrics;
use crate::store::{AnchorRecord, Store};

/// Requests to the worker.
#[derive(Debug)]
pub enum AnchorCmd {
    /// Anchor this checkpoint.
    Anchor {
        /// Checkpoint number (for logs).
        number: u64,
        /// Its hash (the OP_RETURN payload).
        checkpoint: CheckpointHash,
    },
    /// Broadcast this transaction again (its block was reorganised away).
    Rebroadcast {
        /// Raw transaction.
        tx: Vec<u8>,
    },
}

/// What the worker reports.
#[derive(Debug)]
pub enum ChainEvent {
    /// An anchor of `checkpoint` is in a block of the best chain.
    Anchored {
        /// The checkpoint anchored.
        checkpoint: CheckpointHash,
        /// Where.
        record: AnchorRecord,
    },
    /// The block holding an anchor left the best chain.
    Reorged {
        /// The checkpoint.
        checkpoint: CheckpointHash,
        /// The block that left.
        block: BlockHash,
        /// The anchoring transaction, to broadcast again.
        tx: Vec<u8>,
    },
    /// The best chain's height.
    Tip(u32),
}

/// Worker settings.
pub struct WorkerConfig {
    /// bitcoind RPC.
    pub rpc: RpcConfig,
    /// Network.
    pub network: Network,
    /// Fee floor, sat/vB.
    pub fee_floor_sat_vb: u64,
    /// Bump an unconfirmed anchor's fee after this long.
    pub bump_after: Duration,
    /// The operator's secret (the wallet's seed is derived from it).
    pub secret: [u8; 32],
    /// The operator's store (the wallet persists into it).
    pub store: Store,
}

struct WalletStore(Store);

impl ChangeSetStore for WalletStore {
    fn load(&self) -> Result<Option<Vec<u8>>, String> {
        self.0.wallet_state().map_err(|e| e.to_string())
    }
    fn save(&self, bytes: &[u8]) -> Result<(), String> {
        self.0.put_wallet_state(bytes).map_err(|e| e.to_string())
    }
}

/// How often the chain is polled.
const POLL: Duration = Duration::from_millis(300);
/// Blocks remembered for reorg detection.
const KEEP_BLOCKS: u32 = 1_000;

/// Starts the worker thread; returns where to send it commands.
pub fn spawn(
    cfg: WorkerConfig,
    inputs: tmpsc::Sender<Input>,
    cancel: CancellationToken,
) -> mpsc::Sender<AnchorCmd> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("anchoring".into())
        .spawn(move || Worker::new(cfg, inputs).run(&rx, &cancel))
        .expect("spawning the anchoring thread");
    tx
}

struct Pending {
    txid: Txid,
    since: Instant,
    fee: FeeRate,
}

/// A block of the best chain as the worker saw it: its hash, and the anchors it holds with
/// their raw transactions.
type SeenBlock = (BlockHash, Vec<(CheckpointHash, Vec<u8>)>);

struct Worker {
    cfg: WorkerConfig,
    inputs: tmpsc::Sender<Input>,
    wallet: Option<HallmarkWallet<WalletStore>>,
    /// height -> the block seen there and the anchors in it
    seen: BTreeMap<u32, SeenBlock>,
    todo: Vec<(u64, CheckpointHash)>,
    mine: HashMap<CheckpointHash, Pending>,
    last_error: Option<String>,
}

impl Worker {
    fn new(cfg: WorkerConfig, inputs: tmpsc::Sender<Input>) -> Self {
        Self {
            cfg,
            inputs,
            wallet: None,
            seen: BTreeMap::new(),
            todo: Vec::new(),
            mine: HashMap::new(),
            last_error: None,
        }
    }

    fn report(&self, ev: ChainEvent) {
        let _ = self.inputs.blocking_send(Input::Chain(ev));
    }

    fn run(mut self, rx: &mpsc::Receiver<AnchorCmd>, cancel: &CancellationToken) {
        while !cancel.is_cancelled() {
            match rx.recv_timeout(POLL) {
                Ok(AnchorCmd::Anchor { number, checkpoint }) => {
                    self.todo.push((number, checkpoint))
                }
                Ok(AnchorCmd::Rebroadcast { tx }) => {
                    if let Some(w) = &self.wallet {
                        if let Ok(tx) = bitcoin::consensus::deserialize::<bitcoin::Transaction>(&tx)
                        {
                            // "already in the mempool" is the usual answer after a reorg.
                            let _ = bitcoin_rpc_send(w, &tx);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if let Err(e) = self.step() {
                let e = e.to_string();
                if self.last_error.as_ref() != Some(&e) {
                    warn!("anchoring: bitcoind unavailable or failing, will retry: {e}");
                    self.last_error = Some(e);
                }
                metrics::CHAIN_ERRORS.inc();
            } else if self.last_error.take().is_some() {
                info!("anchoring: bitcoind reachable again");
            }
        }
    }

    fn step(&mut self) -> Result<(), hallmark_wallet::WalletError> {
        if self.wallet.is_none() {
            let rpc = self.cfg.rpc.client()?;
            let w = HallmarkWallet::open(
                &self.cfg.secret,
                self.cfg.network,
                WalletStore(self.cfg.store.clone()),
                rpc,
            )?;
            self.wallet = Some(w);
        }
        self.scan()?;
        let wallet = self.wallet.as_mut().expect("opened above");
        if !self.todo.is_empty() || !self.mine.is_empty() {
            wallet.sync()?;
        }
        while let Some((number, checkpoint)) = self.todo.pop() {
            let fee = wallet.fee_rate(2, self.cfg.fee_floor_sat_vb);
            match wallet.send_op_return(&anchor_payload(&checkpoint), fee) {
                Ok(tx) => {
                    info!(number, %checkpoint, txid = %tx.compute_txid(), "anchor broadcast");
                    metrics::ANCHORS_BROADCAST.inc();
                    self.mine.insert(
                        checkpoint,
                        Pending {
                            txid: tx.compute_txid(),
                            since: Instant::now(),
                            fee,
                        },
                    );
                }
                Err(e) => {
                    self.todo.push((number, checkpoint));
                    return Err(e);
                }
            }
        }
        let bump_after = self.cfg.bump_after;
        for p in self.mine.values_mut() {
            if p.since.elapsed() >= bump_after {
                // Double it, plus the relay increment BIP 125 asks of a replacement (1 sat/vB),
                // plus rounding slack.
                let fee =
                    FeeRate::from_sat_per_vb(p.fee.to_sat_per_vb_ceil() * 2 + 2).unwrap_or(p.fee);
                match wallet.bump_fee(p.txid, fee) {
                    Ok(tx) => {
                        info!(old = %p.txid, new = %tx.compute_txid(), "anchor fee bumped (RBF)");
                        *p = Pending {
                            txid: tx.compute_txid(),
                            since: Instant::now(),
                            fee,
                        };
                    }
                    Err(e) => {
                        warn!(txid = %p.txid, "fee bump failed: {e}");
                        p.since = Instant::now();
                    }
                }
            }
        }
        Ok(())
    }

    /// Follows the best chain: reports anchors in new blocks and anchors whose block left it.
    fn scan(&mut self) -> Result<(), hallmark_wallet::WalletError> {
        use hallmark_wallet::RpcApiExt as _;
        let rpc = self.wallet.as_ref().expect("opened").rpc();
        let tip = rpc.block_count()? as u32;
        // The height first: sale deadlines are checked against it, and the walk below can take
        // a while after a burst of blocks.
        self.report(ChainEvent::Tip(tip));
        // Reorg: drop remembered blocks that are no longer in the best chain.
        while let Some((&h, (hash, _))) = self.seen.iter().next_back() {
            if h <= tip && rpc.block_hash(h.into())? == *hash {
                break;
            }
            let (_, (block, anchors)) = self.seen.pop_last().expect("non-empty");
            for (checkpoint, tx) in anchors {
                warn!(%checkpoint, %block, "anchor's block left the best chain");
                self.report(ChainEvent::Reorged {
                    checkpoint,
                    block,
                    tx,
                });
            }
        }
        let start = match self.seen.keys().next_back() {
            Some(h) => h + 1,
            None => tip.saturating_sub(100),
        };
        for h in start..=tip {
            let hash = rpc.block_hash(h.into())?;
            let block = rpc.block(&hash)?;
            let txids: Vec<Txid> = block.txdata.iter().map(|t| t.compute_txid()).collect();
            let mut found = Vec::new();
            for tx in &block.txdata {
                for checkpoint in anchors_in(tx) {
                    let anchor =
                        Anchor::new(tx, &block.header, h, &txids).expect("the tx is in this block");
                    let txid = tx.compute_txid();
                    self.mine.remove(&checkpoint);
                    found.push((checkpoint, serialize(tx)));
                    self.report(ChainEvent::Anchored {
                        checkpoint,
                        record: AnchorRecord {
                            anchor,
                            txid,
                            block: hash,
                        },
                    });
                }
            }
            self.seen.insert(h, (hash, found));
        }
        while self.seen.len() > KEEP_BLOCKS as usize {
            self.seen.pop_first();
        }
        Ok(())
    }
}

fn bitcoin_rpc_send<S: ChangeSetStore>(
    w: &HallmarkWallet<S>,
    tx: &bitcoin::Transaction,
) -> Result<Txid, hallmark_wallet::WalletError> {
    use hallmark_wallet::RpcApiExt as _;
    w.rpc().send_tx(tx)
}
