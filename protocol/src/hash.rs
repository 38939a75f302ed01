//! Domain-tagged SHA-256 (BIP-340 style): `SHA256(SHA256(tag) || SHA256(tag) || msg)`.
//!
//! Every hash Hallmark computes has its own tag, so a value of one domain can never be
//! reinterpreted as one of another. A tagged hash is a `prepend(64-byte prefix)` followed by
//! `sha256` — expressible as OpenTimestamps operations.

use bitcoin::hashes::{sha256, Hash as _, HashEngine as _};

/// The tags. Bumping a version changes every hash of that domain.
pub mod tags {
    /// [`crate::EventHash`]: the canonical bytes of an event body.
    pub const EVENT: &str = "hallmark/v1/event";
    /// [`crate::ManufacturerId`]: a manufacturer's compressed public key.
    pub const MANUFACTURER_ID: &str = "hallmark/v1/manufacturer-id";
    /// [`crate::ItemId`]: manufacturer id and serial.
    pub const ITEM_ID: &str = "hallmark/v1/item-id";
    /// [`crate::OperatorId`]: an operator's compressed public key.
    pub const OPERATOR_ID: &str = "hallmark/v1/operator-id";
    /// [`crate::FederationId`]: the canonical federation parameters.
    pub const FEDERATION_ID: &str = "hallmark/v1/federation-id";
    /// A leaf of an operator's vote batch: event hash and round.
    pub const VOTE_LEAF: &str = "hallmark/v1/vote-leaf";
    /// What an operator signs for a vote batch: federation id and batch root.
    pub const VOTE_BATCH: &str = "hallmark/v1/vote-batch";
    /// An interior node of every Hallmark Merkle tree.
    pub const MERKLE_NODE: &str = "hallmark/v1/merkle-node";
    /// [`crate::checkpoint::CheckpointHash`]: the canonical bytes of a checkpoint.
    pub const CHECKPOINT: &str = "hallmark/v1/checkpoint";
}

/// The 64-byte prefix `SHA256(tag) || SHA256(tag)`.
pub fn tag_prefix(tag: &str) -> [u8; 64] {
    let t = sha256::Hash::hash(tag.as_bytes()).to_byte_array();
    let mut p = [0u8; 64];
    p[..32].copy_from_slice(&t);
    p[32..].copy_from_slice(&t);
    p
}

/// `SHA256(SHA256(tag) || SHA256(tag) || parts[0] || parts[1] || ...)`.
pub fn tagged_hash(tag: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    e.input(&tag_prefix(tag));
    for p in parts {
        e.input(p);
    }
    sha256::Hash::from_engine(e).to_byte_array()
}

/// Plain SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    sha256::Hash::hash(data).to_byte_array()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hex::DisplayHex;

    #[test]
    fn tagged_hash_matches_bip340_construction() {
        // BIP-340's own definition, computed by hand.
        let tag = sha256(b"hallmark/v1/event");
        let mut buf = tag.to_vec();
        buf.extend_from_slice(&tag);
        buf.extend_from_slice(b"abc");
        assert_eq!(tagged_hash(tags::EVENT, &[b"a", b"bc"]), sha256(&buf));
    }

    #[test]
    fn tagged_hash_vector() {
        // Pins the construction: a change here changes every id in the system.
        assert_eq!(
            tagged_hash(tags::EVENT, &[b""]).to_lower_hex_string(),
            "f6ad715b9ba053bd45b2fbea27107ee6042cbe2cc35633eb277542d22ba14366"
        );
    }

    #[test]
    fn tags_are_distinct() {
        let all = [
            tags::EVENT,
            tags::MANUFACTURER_ID,
            tags::ITEM_ID,
            tags::OPERATOR_ID,
            tags::FEDERATION_ID,
            tags::VOTE_LEAF,
            tags::VOTE_BATCH,
            tags::MERKLE_NODE,
            tags::CHECKPOINT,
        ];
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
    }
}
