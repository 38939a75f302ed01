//! OpenTimestamps export: an event's anchoring as a standard `.ots` proof that the stock
//! OpenTimestamps client verifies against a bitcoind (`ots --btc-regtest verify -d <event hash>
//! file.ots`), with no Hallmark code involved.
//!
//! The digest is the event hash. The operations rebuild, with nothing but prepend, append and
//! sha256: the tagged Merkle path to the checkpoint root; the checkpoint hash (its canonical bytes
//! around the root, behind the tag prefix); the anchoring transaction's txid (its non-witness
//! bytes around the checkpoint hash, double sha256); and the transaction's Merkle branch to the
//! block header's Merkle root, attested by a Bitcoin block-header attestation at its height.

use bitcoin::block::Header;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash as _;
use bitcoin::Transaction;
use hallmark_protocol::checkpoint::AnchoredProof;
use hallmark_protocol::encoding::encode;
use hallmark_protocol::hash::{tag_prefix, tags};
use hallmark_protocol::merkle::{path_shape, Step};
use hallmark_protocol::EventHash;

const HEADER_MAGIC: &[u8] = b"\x00OpenTimestamps\x00\x00Proof\x00\xbf\x89\xe2\xe8\x84\xe8\x92\x94";
const MAJOR_VERSION: u64 = 1;
const OP_SHA256: u8 = 0x08;
const OP_APPEND: u8 = 0xf0;
const OP_PREPEND: u8 = 0xf1;
const BITCOIN_ATTESTATION_TAG: [u8; 8] = [0x05, 0x88, 0x96, 0x0d, 0x73, 0xd7, 0x19, 0x01];

/// One OpenTimestamps operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// msg || arg
    Append(Vec<u8>),
    /// arg || msg
    Prepend(Vec<u8>),
    /// sha256(msg)
    Sha256,
}

impl Op {
    /// Applies the operation.
    pub fn apply(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Op::Append(a) => [msg, a].concat(),
            Op::Prepend(a) => [a.as_slice(), msg].concat(),
            Op::Sha256 => hallmark_protocol::hash::sha256(msg).to_vec(),
        }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum OtsError {
    /// The proof is malformed.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The operations do not reach the block's Merkle root (the proof is inconsistent).
    #[error("operations do not reach the block header's Merkle root")]
    Mismatch,
}

/// The operations from `event` to the anchoring block's Merkle root, and that block's height.
pub fn operations(event: &EventHash, proof: &AnchoredProof) -> Result<(Vec<Op>, u32), OtsError> {
    let mut ops = Vec::new();
    let node_prefix = tag_prefix(tags::MERKLE_NODE).to_vec();
    // 1. The event hash up to the checkpoint root.
    let shape = path_shape(proof.inclusion.index, proof.inclusion.total)
        .ok_or(OtsError::Malformed("inclusion position"))?;
    let mut siblings = proof.inclusion.siblings.iter();
    for step in shape {
        match step {
            Step::Promote => continue,
            Step::Left => ops.push(Op::Prepend(
                siblings
                    .next()
                    .ok_or(OtsError::Malformed("inclusion path"))?
                    .0
                    .to_vec(),
            )),
            Step::Right => ops.push(Op::Append(
                siblings
                    .next()
                    .ok_or(OtsError::Malformed("inclusion path"))?
                    .0
                    .to_vec(),
            )),
        }
        ops.push(Op::Prepend(node_prefix.clone()));
        ops.push(Op::Sha256);
    }
    // 2. The checkpoint hash: tag prefix || canonical bytes, with the root inside them.
    let cp = &proof.checkpoint.checkpoint;
    let bytes = encode(cp);
    let at = find(&bytes, &cp.root.0).ok_or(OtsError::Malformed("root not in checkpoint bytes"))?;
    ops.push(Op::Prepend(
        [tag_prefix(tags::CHECKPOINT).as_slice(), &bytes[..at]].concat(),
    ));
    if at + 32 < bytes.len() {
        ops.push(Op::Append(bytes[at + 32..].to_vec()));
    }
    ops.push(Op::Sha256);
    // 3. The txid: double sha256 of the non-witness transaction around the checkpoint hash.
    let mut tx: Transaction =
        deserialize(&proof.anchor.tx).map_err(|_| OtsError::Malformed("transaction"))?;
    for input in &mut tx.input {
        input.witness.clear();
    }
    let raw = serialize(&tx);
    let at = find(&raw, &cp.hash().0).ok_or(OtsError::Malformed(
        "checkpoint hash not in the transaction",
    ))?;
    if at > 0 {
        ops.push(Op::Prepend(raw[..at].to_vec()));
    }
    if at + 32 < raw.len() {
        ops.push(Op::Append(raw[at + 32..].to_vec()));
    }
    ops.push(Op::Sha256);
    ops.push(Op::Sha256);
    // 4. The transaction's branch up to the block's Merkle root.
    let mut i = proof.anchor.branch.index;
    for s in &proof.anchor.branch.siblings {
        ops.push(if i.is_multiple_of(2) {
            Op::Append(s.to_vec())
        } else {
            Op::Prepend(s.to_vec())
        });
        ops.push(Op::Sha256);
        ops.push(Op::Sha256);
        i /= 2;
    }
    // Check it all leads where the header says.
    let header: Header =
        deserialize(&proof.anchor.header).map_err(|_| OtsError::Malformed("header"))?;
    let end = ops.iter().fold(event.0.to_vec(), |m, op| op.apply(&m));
    if end != header.merkle_root.to_byte_array() {
        return Err(OtsError::Mismatch);
    }
    Ok((ops, proof.anchor.height))
}

fn find(hay: &[u8], needle: &[u8; 32]) -> Option<usize> {
    hay.windows(32).position(|w| w == needle)
}

fn varuint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn varbytes(out: &mut Vec<u8>, b: &[u8]) {
    varuint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// The `.ots` file: a detached timestamp of the event hash (as a SHA-256 digest) with a Bitcoin
/// block-header attestation.
pub fn timestamp_file(event: &EventHash, proof: &AnchoredProof) -> Result<Vec<u8>, OtsError> {
    let (ops, height) = operations(event, proof)?;
    let mut out = HEADER_MAGIC.to_vec();
    varuint(&mut out, MAJOR_VERSION);
    out.push(OP_SHA256);
    out.extend_from_slice(&event.0);
    for op in &ops {
        match op {
            Op::Append(a) => {
                out.push(OP_APPEND);
                varbytes(&mut out, a);
            }
            Op::Prepend(a) => {
                out.push(OP_PREPEND);
                varbytes(&mut out, a);
            }
            Op::Sha256 => out.push(OP_SHA256),
        }
    }
    // The attestation: no more ops, 0x00, then tag and payload.
    out.push(0x00);
    out.extend_from_slice(&BITCOIN_ATTESTATION_TAG);
    let mut payload = Vec::new();
    varuint(&mut payload, u64::from(height));
    varbytes(&mut out, &payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varuint_is_leb128() {
        let mut v = Vec::new();
        varuint(&mut v, 300);
        assert_eq!(v, vec![0xac, 0x02]);
        let mut v = Vec::new();
        varuint(&mut v, 0);
        assert_eq!(v, vec![0]);
    }
}
