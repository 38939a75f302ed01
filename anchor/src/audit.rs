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

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::block::{Header, Version};
    use bitcoin::hashes::Hash as _;
    use bitcoin::script::PushBytesBuf;
    use bitcoin::{
        absolute, transaction, Amount, CompactTarget, OutPoint, ScriptBuf, Transaction, TxIn,
        TxMerkleNode, TxOut,
    };
    use hallmark_protocol::checkpoint::anchor_payload;
    use hallmark_protocol::testkit::{body, certify, federation, key, operator_key};
    use hallmark_protocol::{BatchVote, Certificate, EventKind, Vote};

    struct FakeChain {
        blocks: Vec<(BlockHash, Vec<Txid>)>,
    }

    impl ChainView for FakeChain {
        fn tip(&self) -> Result<u32, String> {
            Ok(self.blocks.len() as u32 - 1)
        }
        fn block_at(&self, height: u32) -> Result<Option<BlockHash>, String> {
            Ok(self.blocks.get(height as usize).map(|b| b.0))
        }
        fn block_txids(&self, block: &BlockHash) -> Result<Vec<Txid>, String> {
            Ok(self
                .blocks
                .iter()
                .find(|b| b.0 == *block)
                .map(|b| b.1.clone())
                .unwrap_or_default())
        }
    }

    fn tx(payload: &[u8]) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                ..Default::default()
            }],
            output: vec![
                TxOut {
                    value: Amount::from_sat(5000),
                    script_pubkey: hallmark_protocol::testkit::script(1),
                },
                TxOut {
                    value: Amount::ZERO,
                    script_pubkey: ScriptBuf::new_op_return(
                        PushBytesBuf::try_from(payload.to_vec()).unwrap(),
                    ),
                },
            ],
        }
    }

    struct World {
        fed: Federation,
        entries: Vec<CheckpointEntry>,
        events: HashMap<EventHash, CertifiedEvent>,
        chain: FakeChain,
    }

    /// Two checkpoints of two events each; the first anchored at height 1 of a 3-block chain.
    fn world() -> World {
        let fed = federation(3, 4);
        let mut events = HashMap::new();
        let mut entries = Vec::new();
        let mut prev = CheckpointHash::ZERO;
        let mut chain = FakeChain {
            blocks: vec![(BlockHash::all_zeros(), vec![])],
        };
        for n in 0..2u64 {
            let mut hashes = Vec::new();
            for k in 0..2u32 {
                let m = key(10 + 2 * n as u32 + k);
                let ce = certify(
                    &fed,
                    body(
                        &fed,
                        &m,
                        0,
                        EventHash::ZERO,
                        EventKind::RegisterManufacturer { name: "M".into() },
                    )
                    .sign(&m)
                    .unwrap(),
                );
                hashes.push(ce.certificate.event);
                events.insert(ce.certificate.event, ce);
            }
            let (cp, _) = Checkpoint::build(fed.id(), n, prev, &mut hashes).unwrap();
            prev = cp.hash();
            let vote = Vote::commit(cp.vote_target(), 0);
            let atts = (0..3).map(|i| {
                BatchVote::sign(&operator_key(i), fed.id(), vec![vote])
                    .unwrap()
                    .attestation(0)
                    .unwrap()
            });
            let certified = CertifiedCheckpoint {
                checkpoint: cp.clone(),
                certificate: Certificate::assemble(&fed, vote, atts).unwrap(),
            };
            let anchor = (n == 0).then(|| {
                let t = tx(&anchor_payload(&cp.hash()));
                let txids = vec![t.compute_txid()];
                let root =
                    bitcoin::merkle_tree::calculate_root(txids.iter().map(|t| t.to_raw_hash()))
                        .unwrap();
                let mut header = Header {
                    version: Version::TWO,
                    prev_blockhash: BlockHash::all_zeros(),
                    merkle_root: TxMerkleNode::from_raw_hash(root),
                    time: 1,
                    bits: CompactTarget::from_consensus(0x207f_ffff),
                    nonce: 0,
                };
                while header.validate_pow(header.target()).is_err() {
                    header.nonce += 1;
                }
                chain.blocks.push((header.block_hash(), txids.clone()));
                Anchor::new(&t, &header, 1, &txids).unwrap()
            });
            entries.push(CheckpointEntry {
                certified,
                events: hashes,
                anchor,
            });
        }
        chain
            .blocks
            .push((BlockHash::from_byte_array([9; 32]), vec![]));
        World {
            fed,
            entries,
            events,
            chain,
        }
    }

    fn run(w: &World) -> AuditReport {
        audit(&w.fed, &w.entries, &w.events, &w.chain)
    }

    #[test]
    fn an_honest_chain_passes_with_confirmations() {
        let w = world();
        let r = run(&w);
        assert!(r.ok(), "{r:?}");
        assert!(matches!(
            r.checkpoints[0].1,
            CheckpointVerdict::Anchored {
                height: 1,
                confirmations: 2,
                ..
            }
        ));
        assert_eq!(r.checkpoints[1].1, CheckpointVerdict::NotAnchored);
        assert_eq!(r.events, 4);
    }

    #[test]
    fn each_kind_of_tampering_fails_loudly_with_its_reason() {
        type Tamper = fn(&mut World);
        let cases: Vec<(&str, Tamper, usize, &str)> = vec![
            (
                "missing event",
                |w| {
                    let h = w.entries[0].events[0];
                    w.events.remove(&h);
                },
                0,
                "not available",
            ),
            (
                "tampered event",
                |w| {
                    let h = w.entries[0].events[1];
                    w.events.get_mut(&h).unwrap().event.body.nonce ^= 1;
                },
                0,
                "author signature",
            ),
            (
                "forged checkpoint signature",
                |w| {
                    w.entries[0].certified.certificate.attestations[0]
                        .signature
                        .0[7] ^= 1
                },
                0,
                "quorum signatures",
            ),
            (
                "event list not matching the root",
                |w| {
                    w.entries[1].events.pop();
                },
                1,
                "Merkle root recomputed",
            ),
            (
                "broken chain",
                |w| w.entries[1].certified.checkpoint.prev.0[0] ^= 1,
                1,
                "checkpoint chain broken",
            ),
            (
                "tampered OP_RETURN",
                |w| {
                    let a = w.entries[0].anchor.as_mut().unwrap();
                    let n = a.tx.len();
                    a.tx[n - 6] ^= 1;
                },
                0,
                "no OP_RETURN",
            ),
            (
                "tampered Merkle branch",
                |w| w.entries[0].anchor.as_mut().unwrap().branch.index = 1,
                0,
                "Merkle branch",
            ),
            (
                "block not in the best chain",
                |w| w.chain.blocks[1].0 = BlockHash::from_byte_array([3; 32]),
                0,
                "not in the auditor's best chain",
            ),
        ];
        for (name, tamper, at, reason) in cases {
            let mut w = world();
            tamper(&mut w);
            let r = run(&w);
            assert!(!r.ok(), "{name}: passed");
            match &r.checkpoints[at].1 {
                CheckpointVerdict::Failed { reason: got } => {
                    assert!(got.contains(reason), "{name}: {got}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
