#![warn(missing_docs)]
//! Hallmark's protocol: pure types and rules, no I/O and no clock reads.
//!
//! - [`keys`]: secp256k1 ECDSA keys and compact signatures.
//! - [`encoding`], [`hash`]: canonical postcard bytes and domain-tagged SHA-256.
//! - [`ids`]: newtypes for every id and hash.
//! - [`event`]: signed events and their stateless checks.
//! - [`state`]: the item state machine (see `docs/state-machine.md`).
//! - [`federation`], [`invoice`]: the M-of-N rule, operators and fee schedule.
//! - [`merkle`], [`certificate`]: batched votes and quorum certificates.
//! - [`consensus`]: two-phase agreement with rounds and locks on one (subject, height).
//! - [`verify`]: the zero-trust verification a scanning client runs.
//! - [`checkpoint`]: checkpoints, Bitcoin anchors and offline proof bundles.
//! - [`wire`]: what operators send each other (gossip and catch-up messages).

pub mod bytes;
pub mod certificate;
pub mod checkpoint;
pub mod consensus;
pub mod encoding;
pub mod event;
pub mod federation;
pub mod hash;
pub mod ids;
pub mod invoice;
pub mod keys;
pub mod merkle;
pub mod sale;
pub mod state;
pub mod testkit;
pub mod verify;
pub mod wire;

#[cfg(test)]
mod test_util {
    pub use crate::testkit::*;
}
#[cfg(test)]
mod tests;

pub use certificate::{
    Attestation, BatchVote, Certificate, CertificateError, Phase, Rank, VerifiedBatch, Vote,
};
pub use encoding::{decode, encode, DecodeError};
pub use event::{Event, EventBody, EventError, EventKind, Subject};
pub use federation::{
    Federation, FederationParams, FeeSchedule, OperatorEntry, QuorumConfig, QuorumError,
};
pub use ids::{EventHash, FederationId, ItemId, ManufacturerId, MerkleRoot, OfferId, OperatorId};
pub use invoice::{compute_invoice, Invoice, InvoiceError, InvoiceOutput, PayoutRole};
pub use keys::{KeyError, PublicKey, Signature, SigningKey};
pub use state::{
    apply_item_event, Escrow, ItemState, ItemStatus, ManufacturerRecord, OfferRecord,
    TransitionError,
};
pub use verify::{verify_item_history, verify_manufacturer, CertifiedEvent, VerifyError};
