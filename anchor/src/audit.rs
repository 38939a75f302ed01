//! The auditor: checks a federation's checkpoint chain and its Bitcoin anchors without trusting
//! any operator — checkpoint continuity, quorum signatures, Merkle roots recomputed from the
//! certified events, and every OP_RETURN found in a block of the auditor's own best chain.

use std::collections::HashMap;

use bitcoin::{BlockHash, Txid};
use hallmark_protocol::checkpoint::{Anchor, CertifiedCheckpoint, Checkpoint, CheckpointHash};
use hallmark_protocol::{CertifiedEvent, EventHash, Federation};
use serde::{Deserialize, Serialize};

/// One checkpoint as an operator serves it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// The certified checkpoint.
    pub certified: CertifiedCheckpoint,
    /// The event hashes it covers, ascending.
    pub events: Vec<EventHash>,
    /// Its anchor, if the operator has seen one confirmed.
    pub anchor: Option<Anchor>,
}

/// The auditor's view of Bitcoin (its own node).
pub trait ChainView {
    /// Height of the best chain.
    fn tip(&self) -> Result<u32, String>;
    /// The best-chain block at `height`.
    fn block_at(&self, height: u32) -> Result<Option<BlockHash>, String>;
    /// The transactions of a block.
    fn block_txids(&self, block: &BlockHash) -> Result<Vec<Txid>, String>;
}

/// The verdict on one checkpoint.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CheckpointVerdict {
    /// Everything checks, anchored in the best chain.
    Anchored {
        /// Anchoring transaction.
        txid: Txid,
        /// Block.
        block: BlockHash,
        /// Height.
        height: u32,
        /// Confirmations on the auditor's chain.
        confirmations: u32,
    },
    /// Certified and consistent, but no anchor yet.
    NotAnchored,
    /// Something does not check: the reason.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The result of an audit.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// Per checkpoint, in order.
    pub checkpoints: Vec<(u64, CheckpointVerdict)>,
    /// Events covered by the audited checkpoints.
    pub events: usize,
}

impl AuditReport {
    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        !self
            .checkpoints
            .iter()
            .any(|(_, v)| matches!(v, CheckpointVerdict::Failed { .. }))
    }
}

/// Audits `entries` (checkpoints 0, 1, ...) with the certified events they cover.
pub fn audit(
    federation: &Federation,
    entries: &[CheckpointEntry],
    events: &HashMap<EventHash, CertifiedEvent>,
    chain: &dyn ChainView,
) -> AuditReport {
    let mut out = Vec::new();
    let mut prev = CheckpointHash::ZERO;
    let mut covered = 0;
    for (i, e) in entries.iter().enumerate() {
        let cp = &e.certified.checkpoint;
        let verdict = check_one(federation, i as u64, prev, e, events, chain);
        covered += e.events.len();
        prev = cp.hash();
        out.push((cp.number, verdict));
    }
    AuditReport {
        checkpoints: out,
        events: covered,
    }
}

fn check_one(
    federation: &Federation,
    expected_number: u64,
    prev: CheckpointHash,
    e: &CheckpointEntry,
    events: &HashMap<EventHash, CertifiedEvent>,
    chain: &dyn ChainView,
) -> CheckpointVerdict {
    let fail = |reason: String| CheckpointVerdict::Failed { reason };
    let cp = &e.certified.checkpoint;
    if cp.number != expected_number {
        return fail(format!(
            "checkpoint chain broken: expected number {expected_number}, got {}",
            cp.number
        ));
    }
    if cp.prev != prev {
        return fail(format!(
            "checkpoint chain broken: prev {} is not the hash of checkpoint {}",
            cp.prev,
            expected_number.wrapping_sub(1)
        ));
    }
    let hash = match e.certified.verify(federation) {
        Ok(h) => h,
        Err(err) => return fail(format!("quorum signatures: {err}")),
    };
    for h in &e.events {
        let Some(ce) = events.get(h) else {
            return fail(format!("event {h} is not available from the operator"));
        };
        match ce.verify(federation) {
            Ok(got) if got == *h => {}
            Ok(got) => return fail(format!("event {h} served as a different event {got}")),
            Err(err) => return fail(format!("event {h}: {err}")),
        }
    }
    let mut sorted = e.events.clone();
    match Checkpoint::build(cp.federation, cp.number, cp.prev, &mut sorted) {
        Ok((rebuilt, _))
            if rebuilt.root == cp.root && rebuilt.count == cp.count && sorted == e.events => {}
        Ok(_) | Err(_) => {
            return fail(
                "Merkle root recomputed from the events does not match the checkpoint".into(),
            )
        }
    }
    let Some(anchor) = &e.anchor else {
        return CheckpointVerdict::NotAnchored;
    };
    let facts = match anchor.verify(&hash) {
        Ok(f) => f,
        Err(err) => return fail(format!("anchor: {err}")),
    };
    match chain.block_at(facts.height) {
        Ok(Some(b)) if b == facts.block => {}
        Ok(_) => {
            return fail(format!(
                "anchor block {} is not in the auditor's best chain at height {}",
                facts.block, facts.height
            ))
        }
        Err(err) => return fail(format!("auditor's bitcoind: {err}")),
    }
    match chain.block_txids(&facts.block) {
        Ok(txids) if txids.contains(&facts.txid) => {}
        Ok(_) => {
            return fail(format!(
                "anchor transaction {} is not in block {}",
                facts.txid, facts.block
            ))
        }
        Err(err) => return fail(format!("auditor's bitcoind: {err}")),
    }
    let confirmations = chain
        .tip()
        .map_or(0, |t| t.saturating_sub(facts.height) + 1);
    CheckpointVerdict::Anchored {
        txid: facts.txid,
        block: facts.block,
        height: facts.height,
        confirmations,
    }
}
