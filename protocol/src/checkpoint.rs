//! Checkpoints and their Bitcoin anchors, and the proof bundles a client or auditor verifies.
//!
//! A checkpoint commits to a set of certified events: the rs_merkle root of their hashes in
//! canonical order (ascending), their count, its number and the previous checkpoint's hash. The
//! federation certifies a checkpoint like an event (m commit votes over its hash), and anchors it
//! in Bitcoin: an OP_RETURN output carrying `b"HMK" || version || checkpoint hash` (36 bytes).
//!
//! From an event hash to a Bitcoin block header, every step is a sha256 with data prepended or
//! appended: the tagged Merkle path to the checkpoint root, the checkpoint's canonical bytes
//! around the root, the transaction's bytes around the checkpoint hash, then Bitcoin's double
//! sha256 Merkle branch to the header's Merkle root. That is what makes an OpenTimestamps proof
//! of the same anchor expressible.

use bitcoin::block::Header;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{sha256d, Hash as _};
use bitcoin::{BlockHash, Transaction, Txid};
use serde::{Deserialize, Serialize};

use crate::certificate::{Certificate, CertificateError};
use crate::encoding::encode;
use crate::federation::Federation;
use crate::hash::{tagged_hash, tags};
use crate::hash_newtype;
use crate::ids::{EventHash, FederationId, ItemId, MerkleRoot};
use crate::merkle::{InclusionProof, MerkleError, Tree};
use crate::state::ItemState;
use crate::verify::{verify_item_history, CertifiedEvent, VerifyError};

hash_newtype!(
    /// A checkpoint: the tagged hash of its canonical bytes.
    CheckpointHash
);

/// Magic at the start of an anchor's OP_RETURN payload.
pub const ANCHOR_MAGIC: &[u8; 3] = b"HMK";
/// Version byte after the magic.
pub const ANCHOR_VERSION: u8 = 1;
/// Length of the payload: magic, version, checkpoint hash.
pub const ANCHOR_PAYLOAD_LEN: usize = 36;
/// Most events in one checkpoint.
pub const MAX_CHECKPOINT_EVENTS: u32 = 1 << 20;

/// A checkpoint of the federation's certified events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The federation.
    pub federation: FederationId,
    /// Position in the checkpoint chain, from 0.
    pub number: u64,
    /// Hash of checkpoint `number - 1`; zero for checkpoint 0.
    pub prev: CheckpointHash,
    /// Merkle root of the covered event hashes in ascending order.
    pub root: MerkleRoot,
    /// Number of events covered.
    pub count: u32,
}

impl Checkpoint {
    /// Builds the checkpoint of `events` (sorted and deduplicated here), with its tree.
    pub fn build(
        federation: FederationId,
        number: u64,
        prev: CheckpointHash,
        events: &mut Vec<EventHash>,
    ) -> Result<(Self, Tree), CheckpointError> {
        events.sort();
        events.dedup();
        if events.is_empty() || events.len() > MAX_CHECKPOINT_EVENTS as usize {
            return Err(CheckpointError::BadCount(events.len()));
        }
        let leaves: Vec<[u8; 32]> = events.iter().map(|e| e.0).collect();
        let tree = Tree::new(&leaves).map_err(CheckpointError::Merkle)?;
        Ok((
            Self {
                federation,
                number,
                prev,
                root: tree.root(),
                count: events.len() as u32,
            },
            tree,
        ))
    }

    /// The checkpoint's hash.
    pub fn hash(&self) -> CheckpointHash {
        CheckpointHash(tagged_hash(tags::CHECKPOINT, &[&encode(self)]))
    }

    /// What the federation votes on: the checkpoint hash, in the vote's 32-byte slot. The tags
    /// keep checkpoint hashes and event hashes apart.
    pub fn vote_target(&self) -> EventHash {
        EventHash(self.hash().0)
    }
}

/// The OP_RETURN payload anchoring `checkpoint`.
pub fn anchor_payload(checkpoint: &CheckpointHash) -> [u8; ANCHOR_PAYLOAD_LEN] {
    let mut p = [0u8; ANCHOR_PAYLOAD_LEN];
    p[..3].copy_from_slice(ANCHOR_MAGIC);
    p[3] = ANCHOR_VERSION;
    p[4..].copy_from_slice(&checkpoint.0);
    p
}

/// The checkpoint hash in an OP_RETURN payload, if it is a Hallmark anchor.
pub fn parse_anchor_payload(data: &[u8]) -> Option<CheckpointHash> {
    if data.len() != ANCHOR_PAYLOAD_LEN || &data[..3] != ANCHOR_MAGIC || data[3] != ANCHOR_VERSION {
        return None;
    }
    Some(CheckpointHash(data[4..].try_into().ok()?))
}

/// The Hallmark anchor payloads of a transaction's OP_RETURN outputs.
pub fn anchors_in(tx: &Transaction) -> Vec<CheckpointHash> {
    tx.output
        .iter()
        .filter(|o| o.script_pubkey.is_op_return())
        .filter_map(|o| {
            // OP_RETURN <push of 36 bytes>
            let b = o.script_pubkey.as_bytes();
            (b.len() == 2 + ANCHOR_PAYLOAD_LEN && b[1] as usize == ANCHOR_PAYLOAD_LEN)
                .then(|| parse_anchor_payload(&b[2..]))
                .flatten()
        })
        .collect()
}

/// A checkpoint with its quorum certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// `m` commit votes over its hash.
    pub certificate: Certificate,
}

impl CertifiedCheckpoint {
    /// Checks the federation and the certificate.
    pub fn verify(&self, federation: &Federation) -> Result<CheckpointHash, CheckpointError> {
        if self.checkpoint.federation != federation.id() {
            return Err(CheckpointError::WrongFederation);
        }
        if self.certificate.event != self.checkpoint.vote_target() {
            return Err(CheckpointError::CertificateForOther);
        }
        self.certificate
            .verify(federation)
            .map_err(CheckpointError::Certificate)?;
        Ok(self.checkpoint.hash())
    }
}

/// The branch of a transaction in its block's Merkle tree (Bitcoin's: double sha256, an odd
/// last node paired with itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBranch {
    /// Position of the transaction in the block.
    pub index: u32,
    /// Sibling hashes from the leaf up, in internal byte order.
    pub siblings: Vec<[u8; 32]>,
}

impl TxBranch {
    /// The branch of transaction `index` among the block's `txids`.
    pub fn new(txids: &[Txid], index: usize) -> Option<Self> {
        if index >= txids.len() {
            return None;
        }
        let mut level: Vec<[u8; 32]> = txids.iter().map(|t| t.to_byte_array()).collect();
        let mut i = index;
        let mut siblings = Vec::new();
        while level.len() > 1 {
            if level.len() % 2 == 1 {
                level.push(*level.last().expect("non-empty"));
            }
            siblings.push(level[i ^ 1]);
            level = level
                .chunks(2)
                .map(|p| sha256d::Hash::hash(&[p[0], p[1]].concat()).to_byte_array())
                .collect();
            i /= 2;
        }
        Some(Self {
            index: index as u32,
            siblings,
        })
    }

    /// The Merkle root this branch leads to from `txid`.
    pub fn root(&self, txid: &Txid) -> [u8; 32] {
        let mut node = txid.to_byte_array();
        let mut i = self.index;
        for s in &self.siblings {
            let pair = if i.is_multiple_of(2) {
                [node, *s].concat()
            } else {
                [*s, node].concat()
            };
            node = sha256d::Hash::hash(&pair).to_byte_array();
            i /= 2;
        }
        node
    }
}

/// Where and how a checkpoint is anchored in Bitcoin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The anchoring transaction, consensus-encoded, as hex in JSON.
    #[serde(with = "hex_bytes")]
    pub tx: Vec<u8>,
    /// The header of the block that contains it (80 bytes).
    #[serde(with = "hex_bytes")]
    pub header: Vec<u8>,
    /// The block's height.
    pub height: u32,
    /// The transaction's branch to the header's Merkle root.
    pub branch: TxBranch,
}

/// What an anchor proves once checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AnchorFacts {
    /// The anchoring transaction.
    pub txid: Txid,
    /// The block.
    pub block: BlockHash,
    /// Its height, as claimed by the bundle (check it against a trusted chain).
    pub height: u32,
}

impl Anchor {
    /// Checks that the transaction carries `checkpoint` in an OP_RETURN, that its branch leads
    /// to the header's Merkle root, and that the header has valid proof of work. Whether the
    /// block is in the best chain is for the caller to check against headers it trusts.
    pub fn verify(&self, checkpoint: &CheckpointHash) -> Result<AnchorFacts, CheckpointError> {
        let tx: Transaction = deserialize(&self.tx).map_err(|_| CheckpointError::BadTransaction)?;
        if !anchors_in(&tx).contains(checkpoint) {
            return Err(CheckpointError::PayloadMismatch);
        }
        let header: Header = deserialize(&self.header).map_err(|_| CheckpointError::BadHeader)?;
        let txid = tx.compute_txid();
        // The index must fit the branch's depth, or one branch would prove many positions.
        let fits = self.branch.siblings.len() >= 32
            || self.branch.index >> self.branch.siblings.len() == 0;
        if !fits || self.branch.root(&txid) != header.merkle_root.to_byte_array() {
            return Err(CheckpointError::BranchMismatch);
        }
        header
            .validate_pow(header.target())
            .map_err(|_| CheckpointError::BadProofOfWork)?;
        Ok(AnchorFacts {
            txid,
            block: header.block_hash(),
            height: self.height,
        })
    }

    /// Builds an anchor from a transaction, its block's header and txids.
    pub fn new(tx: &Transaction, header: &Header, height: u32, txids: &[Txid]) -> Option<Self> {
        let index = txids.iter().position(|t| *t == tx.compute_txid())?;
        Some(Self {
            tx: serialize(tx),
            header: serialize(header),
            height,
            branch: TxBranch::new(txids, index)?,
        })
    }
}

/// An event's anchoring: its checkpoint, its place in it, and the checkpoint's anchor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchoredProof {
    /// The certified checkpoint covering the event.
    pub checkpoint: CertifiedCheckpoint,
    /// The event hash's path to the checkpoint root.
    pub inclusion: InclusionProof,
    /// The checkpoint's Bitcoin anchor.
    pub anchor: Anchor,
}

/// One event of a proof bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenEvent {
    /// The certified event.
    pub event: CertifiedEvent,
    /// Its anchoring, or `None` while it is pending (not yet in an anchored checkpoint).
    pub anchored: Option<AnchoredProof>,
}

/// Everything needed to check an item's history and its Bitcoin anchors offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofBundle {
    /// The item.
    pub item: ItemId,
    /// Its manufacturer's certified registration.
    pub manufacturer: CertifiedEvent,
    /// The item's events from its mint.
    pub events: Vec<ProvenEvent>,
}

/// The result of checking a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    /// The item's verified state.
    pub state: ItemState,
    /// Per event: its anchor, or `None` if pending.
    pub anchors: Vec<Option<(u64, AnchorFacts)>>,
}

/// Verifies a proof bundle: the certified history (as a scanner does), and for every anchored
/// event its inclusion in a certified checkpoint of this federation and that checkpoint's anchor.
pub fn verify_bundle(
    federation: &Federation,
    bundle: &ProofBundle,
) -> Result<BundleReport, ProofError> {
    let history: Vec<CertifiedEvent> = bundle.events.iter().map(|p| p.event.clone()).collect();
    let state = verify_item_history(federation, bundle.item, &bundle.manufacturer, &history)
        .map_err(ProofError::History)?;
    let mut anchors = Vec::new();
    for (index, p) in bundle.events.iter().enumerate() {
        let Some(a) = &p.anchored else {
            anchors.push(None);
            continue;
        };
        let err = |source| ProofError::Anchor { index, source };
        let cp = a.checkpoint.verify(federation).map_err(err)?;
        a.inclusion
            .verify(&p.event.certificate.event.0, &a.checkpoint.checkpoint.root)
            .map_err(|e| err(CheckpointError::Merkle(e)))?;
        if a.inclusion.total != a.checkpoint.checkpoint.count {
            return Err(err(CheckpointError::BadCount(a.inclusion.total as usize)));
        }
        let facts = a.anchor.verify(&cp).map_err(err)?;
        anchors.push(Some((a.checkpoint.checkpoint.number, facts)));
    }
    Ok(BundleReport { state, anchors })
}

/// Why a checkpoint or an anchor does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Zero or too many events.
    #[error("a checkpoint covers 1..={MAX_CHECKPOINT_EVENTS} events, not {0}")]
    BadCount(usize),
    /// Merkle failure.
    #[error("merkle: {0}")]
    Merkle(MerkleError),
    /// Checkpoint of another federation.
    #[error("checkpoint of another federation")]
    WrongFederation,
    /// Certificate of something else.
    #[error("certificate is not for this checkpoint")]
    CertificateForOther,
    /// Bad quorum certificate.
    #[error("checkpoint certificate: {0}")]
    Certificate(CertificateError),
    /// Not a transaction.
    #[error("anchor transaction does not decode")]
    BadTransaction,
    /// The transaction does not carry this checkpoint.
    #[error("anchor transaction has no OP_RETURN with this checkpoint's hash")]
    PayloadMismatch,
    /// Not a block header.
    #[error("block header does not decode")]
    BadHeader,
    /// The branch does not lead to the header's Merkle root.
    #[error("transaction Merkle branch does not lead to the block's Merkle root")]
    BranchMismatch,
    /// Header fails its proof of work.
    #[error("block header fails its proof of work")]
    BadProofOfWork,
}

/// Why a proof bundle does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The certified history fails.
    #[error("history: {0}")]
    History(VerifyError),
    /// An event's anchoring fails.
    #[error("event {index}: anchor: {source}")]
    Anchor {
        /// Position.
        index: usize,
        /// Cause.
        source: CheckpointError,
    },
}

mod hex_bytes {
    use bitcoin::hex::{DisplayHex, FromHex};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&b.to_lower_hex_string())
        } else {
            s.serialize_bytes(b)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Vec::<u8>::from_hex(&s).map_err(D::Error::custom)
        } else {
            Vec::<u8>::deserialize(d)
        }
    }
}

/// A final checkpoint with the events it covers (ascending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalCheckpoint {
    /// The checkpoint and its certificate.
    pub certified: CertifiedCheckpoint,
    /// The covered event hashes, ascending.
    pub events: Vec<EventHash>,
}

#[cfg(test)]
mod tests;
