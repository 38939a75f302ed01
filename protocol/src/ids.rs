//! Identifiers: each a 32-byte domain-tagged hash in its own newtype.

use crate::hash::{tagged_hash, tags};
use crate::hash_newtype;
use crate::keys::PublicKey;

hash_newtype!(
    /// A manufacturer: the tagged hash of its public key.
    ManufacturerId
);
hash_newtype!(
    /// An item: the tagged hash of its manufacturer's id and its serial number.
    ItemId
);
hash_newtype!(
    /// An offer to buy an item: the hash of the `CreateOffer` event that made it.
    OfferId
);
hash_newtype!(
    /// An event: the tagged hash of the canonical bytes of its body (not of its signature).
    EventHash
);
hash_newtype!(
    /// An operator of the federation: the tagged hash of its public key.
    OperatorId
);
hash_newtype!(
    /// A federation: the tagged hash of its canonical parameters. Every event names one, so an
    /// event can never be replayed into another federation.
    FederationId
);
hash_newtype!(
    /// The root of a Merkle tree of Hallmark hashes.
    MerkleRoot
);

impl ManufacturerId {
    /// The id of the manufacturer holding `key`.
    pub fn of(key: &PublicKey) -> Self {
        Self(tagged_hash(tags::MANUFACTURER_ID, &[&key.to_bytes()]))
    }
}

impl ItemId {
    /// The id of item `serial` of `manufacturer`.
    pub fn new(manufacturer: &ManufacturerId, serial: &str) -> Self {
        Self(tagged_hash(
            tags::ITEM_ID,
            &[&manufacturer.0, serial.as_bytes()],
        ))
    }
}

impl OperatorId {
    /// The id of the operator holding `key`.
    pub fn of(key: &PublicKey) -> Self {
        Self(tagged_hash(tags::OPERATOR_ID, &[&key.to_bytes()]))
    }
}

impl From<EventHash> for OfferId {
    fn from(h: EventHash) -> Self {
        Self(h.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::key;

    #[test]
    fn ids_display_as_hex_and_parse_back() {
        let m = ManufacturerId::of(&key(1).public_key());
        let s = m.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<ManufacturerId>().unwrap(), m);
        assert!("zz".parse::<ManufacturerId>().is_err());
    }

    #[test]
    fn json_is_hex_and_postcard_is_raw() {
        let i = ItemId::new(&ManufacturerId::of(&key(1).public_key()), "SN-1");
        let j = serde_json::to_string(&i).unwrap();
        assert_eq!(j, format!("\"{i}\""));
        assert_eq!(serde_json::from_str::<ItemId>(&j).unwrap(), i);
        assert_eq!(crate::encoding::encode(&i), i.0.to_vec());
    }

    #[test]
    fn domains_separate_equal_inputs() {
        let k = key(1).public_key();
        assert_ne!(ManufacturerId::of(&k).0, OperatorId::of(&k).0);
    }
}
