//! Deterministic fixtures for tests, benchmarks and the offline demo: keys derived from small
//! integers, a federation of such keys, event bodies. Never use these keys for anything real.

use bitcoin::hashes::Hash as _;
use bitcoin::{ScriptBuf, WPubkeyHash};

use crate::certificate::{BatchVote, Certificate, Vote};
use crate::event::{Event, EventBody, EventKind};
use crate::federation::{Federation, FederationParams, FeeSchedule, OperatorEntry, QuorumConfig};
use crate::hash::sha256;
use crate::ids::EventHash;
use crate::keys::SigningKey;
use crate::verify::CertifiedEvent;

/// Key number `i`: the secret is `SHA256("hallmark-test-key" || i)`.
pub fn key(i: u32) -> SigningKey {
    let mut seed = b"hallmark-test-key".to_vec();
    seed.extend_from_slice(&i.to_be_bytes());
    SigningKey::from_bytes(&sha256(&seed)).expect("a SHA-256 output is a valid secret key")
}

/// Key of operator `i` of [`federation`].
pub fn operator_key(i: u32) -> SigningKey {
    key(1_000 + i)
}

/// A P2WPKH script paying to a hash made of byte `i`.
pub fn script(i: u8) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([i; 20]))
}

/// An `m`-of-`n` federation of [`operator_key`]s with the default fee schedule.
pub fn federation(m: u32, n: u32) -> Federation {
    let quorum = QuorumConfig::new(m, n).expect("test quorum is valid");
    Federation::new(FederationParams {
        name: "hallmark-test".into(),
        quorum,
        max_faulty: quorum.tolerated_faults(),
        operators: (0..n)
            .map(|i| OperatorEntry {
                key: operator_key(i).public_key(),
                payout: script(100 + i as u8),
            })
            .collect(),
        treasury: script(200),
        fees: FeeSchedule::default(),
    })
    .expect("test federation is valid")
}

/// An unsigned body by `author` with a fixed timestamp and a nonce from the height.
pub fn body(
    federation: &Federation,
    author: &SigningKey,
    height: u64,
    prev: EventHash,
    kind: EventKind,
) -> EventBody {
    EventBody {
        federation: federation.id(),
        height,
        prev,
        timestamp_ms: 1_700_000_000_000 + height,
        nonce: height,
        author: author.public_key(),
        kind,
    }
}

/// Certifies `event` with the first `m` operators of [`federation`], each as a batch of one.
pub fn certify(federation: &Federation, event: Event) -> CertifiedEvent {
    let vote = Vote::commit(event.hash(), 0);
    let attestations = (0..federation.quorum().m()).map(|i| {
        BatchVote::sign(&operator_key(i), federation.id(), vec![vote])
            .expect("a batch of one is valid")
            .attestation(0)
            .expect("index 0 exists")
    });
    let certificate =
        Certificate::assemble(federation, vote, attestations).expect("m attestations suffice");
    CertifiedEvent { event, certificate }
}
