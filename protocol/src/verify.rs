//! Client-side verification: what a scanner runs on the histories operators serve, trusting none
//! of them. Every event's signature and certificate, the manufacturer's certified registration,
//! the chain's heights and links, and every transition of the state machine.

use serde::{Deserialize, Serialize};

use crate::certificate::{Certificate, CertificateError};
use crate::event::{Event, EventError, Subject};
use crate::federation::Federation;
use crate::ids::{EventHash, ItemId, ManufacturerId};
use crate::state::{apply_item_event, ItemState, ManufacturerRecord, TransitionError};

/// An event with its quorum certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedEvent {
    /// The event.
    pub event: Event,
    /// Its certificate.
    pub certificate: Certificate,
}

impl CertifiedEvent {
    /// Checks the event (federation, fields, author signature) and that the certificate is a
    /// valid quorum certificate for exactly this event. Returns the event hash.
    pub fn verify(&self, federation: &Federation) -> Result<EventHash, VerifyError> {
        let hash = self
            .event
            .check(federation.id())
            .map_err(|source| VerifyError::Event { index: 0, source })?;
        if self.certificate.event != hash {
            return Err(VerifyError::CertificateForOtherEvent { index: 0 });
        }
        self.certificate
            .verify(federation)
            .map_err(|source| VerifyError::Certificate { index: 0, source })?;
        Ok(hash)
    }
}

/// Verifies a manufacturer's certified registration.
pub fn verify_manufacturer(
    federation: &Federation,
    registration: &CertifiedEvent,
) -> Result<ManufacturerRecord, VerifyError> {
    let hash = registration.verify(federation)?;
    ManufacturerRecord::from_event(&registration.event, hash)
        .map_err(|_| VerifyError::NotARegistration)
}

/// Verifies an item's whole certified history, from its mint, against the certified
/// registration of its manufacturer. Returns the item's current state.
pub fn verify_item_history(
    federation: &Federation,
    item: ItemId,
    registration: &CertifiedEvent,
    history: &[CertifiedEvent],
) -> Result<ItemState, VerifyError> {
    let manufacturer = verify_manufacturer(federation, registration)?;
    let mut state: Option<ItemState> = None;
    for (index, ce) in history.iter().enumerate() {
        let hash = ce.verify(federation).map_err(|e| e.at(index))?;
        if ce.event.subject(hash) != Subject::Item(item) {
            return Err(VerifyError::WrongItem { index });
        }
        let next = apply_item_event(federation, state.as_ref(), &ce.event, hash)
            .map_err(|source| VerifyError::Transition { index, source })?;
        if next.manufacturer != manufacturer.id {
            return Err(VerifyError::ManufacturerMismatch {
                registered: manufacturer.id,
                minted_by: next.manufacturer,
            });
        }
        state = Some(next);
    }
    state.ok_or(VerifyError::EmptyHistory)
}

/// Why a served history does not verify. `index` is the position in the history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// An event fails its own checks (signature, federation, fields).
    #[error("event {index}: {source}")]
    Event {
        /// Position.
        index: usize,
        /// Cause.
        source: EventError,
    },
    /// The certificate certifies some other event.
    #[error("event {index}: certificate is for another event")]
    CertificateForOtherEvent {
        /// Position.
        index: usize,
    },
    /// The certificate is not a valid quorum certificate.
    #[error("event {index}: certificate: {source}")]
    Certificate {
        /// Position.
        index: usize,
        /// Cause.
        source: CertificateError,
    },
    /// The chain breaks the state machine (heights, links, rules).
    #[error("event {index}: {source}")]
    Transition {
        /// Position.
        index: usize,
        /// Cause.
        source: TransitionError,
    },
    /// An event of another chain inside the history.
    #[error("event {index} belongs to another item")]
    WrongItem {
        /// Position.
        index: usize,
    },
    /// The registration given is not a `RegisterManufacturer`.
    #[error("manufacturer registration is not a register_manufacturer event")]
    NotARegistration,
    /// The item was minted by someone other than the registered manufacturer.
    #[error("item minted by {minted_by}, not by registered manufacturer {registered}")]
    ManufacturerMismatch {
        /// Registered manufacturer.
        registered: ManufacturerId,
        /// Mint author's manufacturer id.
        minted_by: ManufacturerId,
    },
    /// No events at all.
    #[error("empty history: the item was never minted")]
    EmptyHistory,
}

impl VerifyError {
    fn at(self, index: usize) -> Self {
        match self {
            Self::Event { source, .. } => Self::Event { index, source },
            Self::CertificateForOtherEvent { .. } => Self::CertificateForOtherEvent { index },
            Self::Certificate { source, .. } => Self::Certificate { index, source },
            other => other,
        }
    }
}
