//! Domain-tagged SHA-256 (BIP-340 style): `SHA256(SHA256(tag) || SHA256(tag) || msg)`.
//!
//! Every hash Hallmark computes has its own tag, so a value of one domain can never be
//! reinterpreted as one of another. A tagged hash is a `prepend(64-byte prefix)` followed by
//! `sha256` — expressible as OpenTimestamps operations.

use std::sync::OnceLock;

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

    /// Every tag above (their hash engines are prepared once, see [`super::tagged_hash`]).
    pub const ALL: [&str; 9] = [
        EVENT,
        MANUFACTURER_ID,
        ITEM_ID,
        OPERATOR_ID,
        FEDERATION_ID,
        VOTE_LEAF,
        VOTE_BATCH,
        MERKLE_NODE,
        CHECKPOINT,
    ];
}

/// The 64-byte prefix `SHA256(tag) || SHA256(tag)`.
pub fn tag_prefix(tag: &str) -> [u8; 64] {
    let t = sha256::Hash::hash(tag.as_bytes()).to_byte_array();
    let mut p = [0u8; 64];
    p[..32].copy_from_slice(&t);
    p[32..].copy_from_slice(&t);
    p
}

/// A hash engine that has taken `tag`'s prefix. The prefix is one whole SHA-256 block, so the
/// engine of each known tag is prepared once and copied: a tagged hash then costs what a plain
/// hash of its parts costs, not one hash of the tag and one block more.
fn tagged_engine(tag: &str) -> sha256::HashEngine {
    static PREPARED: OnceLock<Vec<(&'static str, sha256::HashEngine)>> = OnceLock::new();
    let prepare = |tag: &str| {
        let mut e = sha256::Hash::engine();
        e.input(&tag_prefix(tag));
        e
    };
    let prepared = PREPARED.get_or_init(|| tags::ALL.iter().map(|t| (*t, prepare(t))).collect());
    match prepared.iter().find(|(t, _)| *t == tag) {
        Some((_, e)) => e.clone(),
        None => prepare(tag),
    }
}

/// `SHA256(SHA256(tag) || SHA256(tag) || parts[0] || parts[1] || ...)`.
pub fn tagged_hash(tag: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut e = tagged_engine(tag);
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
        let set: std::collections::HashSet<_> = tags::ALL.iter().collect();
        assert_eq!(set.len(), tags::ALL.len());
    }

    #[test]
    fn prepared_and_unknown_tags_hash_as_bip340_says() {
        // The prepared engines (every tag of `tags::ALL`) and a tag outside the list.
        for tag in tags::ALL.iter().chain(&["hallmark/test/not-prepared"]) {
            let t = sha256(tag.as_bytes());
            let mut buf = [t, t].concat();
            buf.extend_from_slice(b"xyz");
            assert_eq!(tagged_hash(tag, &[b"x", b"yz"]), sha256(&buf), "{tag}");
        }
    }
}
