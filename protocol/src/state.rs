//! The item state machine (table in `docs/state-machine.md`) and the records of the other two
//! chains: manufacturers and offers. Pure functions: state in, event in, new state or a typed
//! error out. Callers run [`Event::check`] (signature, federation, field limits) first.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, Subject};
use crate::federation::Federation;
use crate::ids::{EventHash, ItemId, ManufacturerId, OfferId};
use crate::invoice::{compute_invoice, Invoice, InvoiceError, PayoutRole};
use crate::keys::PublicKey;

/// A sale in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    /// The accepted offer.
    pub offer: OfferId,
    /// Who pays and gets the item.
    pub buyer: PublicKey,
    /// Who sells (the owner while locked).
    pub seller: PublicKey,
    /// What must be paid, by when.
    pub invoice: Invoice,
}

/// Where an item is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemStatus {
    /// ACTIVE_HELD: held by its owner, free to transfer, sell, report or retire.
    Active,
    /// LOCKED_IN_ESCROW: a sale is waiting for its payment; only Settle or ExpireEscrow move it.
    LockedInEscrow(Box<Escrow>),
    /// Reported stolen by its owner: no transfer or sale until recovered.
    Stolen,
    /// Retired for good: no further events.
    Retired,
}

impl ItemStatus {
    /// SCREAMING name, as in the docs and API.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Active => "ACTIVE_HELD",
            Self::LockedInEscrow(_) => "LOCKED_IN_ESCROW",
            Self::Stolen => "STOLEN",
            Self::Retired => "RETIRED",
        }
    }
}

/// An item's current state: the result of applying its certified chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemState {
    /// Item.
    pub id: ItemId,
    /// Its manufacturer.
    pub manufacturer: ManufacturerId,
    /// Serial number.
    pub serial: String,
    /// Product description.
    pub product: String,
    /// Current owner.
    pub owner: PublicKey,
    /// Status.
    pub status: ItemStatus,
    /// Height of the last event applied.
    pub height: u64,
    /// Hash of the last event applied.
    pub head: EventHash,
}

/// A registered manufacturer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManufacturerRecord {
    /// Id (hash of the key).
    pub id: ManufacturerId,
    /// Name.
    pub name: String,
    /// Signing key for mints.
    pub key: PublicKey,
    /// The registration event.
    pub registration: EventHash,
}

impl ManufacturerRecord {
    /// The record a `RegisterManufacturer` event creates.
    pub fn from_event(event: &Event, hash: EventHash) -> Result<Self, TransitionError> {
        match &event.body.kind {
            EventKind::RegisterManufacturer { name } => Ok(Self {
                id: ManufacturerId::of(&event.body.author),
                name: name.clone(),
                key: event.body.author,
                registration: hash,
            }),
            k => Err(TransitionError::WrongChain { kind: k.name() }),
        }
    }
}

/// An open offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferRecord {
    /// Id (hash of the `CreateOffer` event).
    pub id: OfferId,
    /// Item.
    pub item: ItemId,
    /// Height its acceptance must have.
    pub item_height: u64,
    /// Buyer (author).
    pub buyer: PublicKey,
    /// Expected seller.
    pub seller: PublicKey,
    /// Price.
    pub price_sats: u64,
}

impl OfferRecord {
    /// The record a `CreateOffer` event creates.
    pub fn from_event(event: &Event, hash: EventHash) -> Result<Self, TransitionError> {
        match &event.body.kind {
            EventKind::CreateOffer {
                item,
                item_height,
                seller,
                price_sats,
            } => Ok(Self {
                id: OfferId::from(hash),
                item: *item,
                item_height: *item_height,
                buyer: event.body.author,
                seller: *seller,
                price_sats: *price_sats,
            }),
            k => Err(TransitionError::WrongChain { kind: k.name() }),
        }
    }

    /// Whether the item, as it stands, can take this offer: it exists and is held, the expected
    /// seller owns it, the offer targets its next height, and the buyer is not the seller.
    pub fn check_against(&self, item: Option<&ItemState>) -> Result<(), TransitionError> {
        let item = item.ok_or(TransitionError::NotMinted { item: self.item })?;
        if item.status != ItemStatus::Active {
            return Err(TransitionError::InvalidInState {
                kind: "create_offer",
                status: item.status.name(),
            });
        }
        if item.owner != self.seller {
            return Err(TransitionError::OfferMismatch(
                "seller is not the current owner",
            ));
        }
        if self.item_height != item.height + 1 {
            return Err(TransitionError::OfferMismatch(
                "offer is for another item height",
            ));
        }
        if self.buyer == self.seller {
            return Err(TransitionError::OfferMismatch("buyer is the seller"));
        }
        Ok(())
    }
}

/// Applies one event to an item. `state` is `None` before the item is minted; `hash` is the
/// event's hash. Returns the new state; the input is untouched on error.
pub fn apply_item_event(
    federation: &Federation,
    state: Option<&ItemState>,
    event: &Event,
    hash: EventHash,
) -> Result<ItemState, TransitionError> {
    let b = &event.body;
    let kind = b.kind.name();
    let Subject::Item(item) = event.subject(hash) else {
        return Err(TransitionError::WrongChain { kind });
    };
    let Some(state) = state else {
        return mint(event, item, hash);
    };
    if matches!(b.kind, EventKind::Mint { .. }) {
        return Err(TransitionError::AlreadyMinted { item });
    }
    if item != state.id {
        return Err(TransitionError::WrongItem {
            expected: state.id,
            got: item,
        });
    }
    if b.height != state.height + 1 {
        return Err(TransitionError::WrongHeight {
            expected: state.height + 1,
            got: b.height,
        });
    }
    if b.prev != state.head {
        return Err(TransitionError::WrongPrev {
            expected: state.head,
            got: b.prev,
        });
    }
    let author = b.author;
    let invalid = || TransitionError::InvalidInState {
        kind,
        status: state.status.name(),
    };
    let unauthorized = || TransitionError::NotAuthorized { kind, author };
    let require_owner = || {
        if author == state.owner {
            Ok(())
        } else {
            Err(unauthorized())
        }
    };
    let mut next = state.clone();
    next.height = b.height;
    next.head = hash;
    match (&b.kind, &state.status) {
        (EventKind::Transfer { to, .. }, ItemStatus::Active) => {
            require_owner()?;
            if *to == state.owner {
                return Err(TransitionError::TransferToSelf);
            }
            next.owner = *to;
        }
        (EventKind::AcceptOffer { offer, invoice }, ItemStatus::Active) => {
            require_owner()?;
            next.status = ItemStatus::LockedInEscrow(Box::new(accept(
                federation, state, b.height, offer, invoice,
            )?));
        }
        (EventKind::Settle { offer, .. }, ItemStatus::LockedInEscrow(escrow)) => {
            check_party(escrow, offer, author, kind)?;
            next.owner = escrow.buyer;
            next.status = ItemStatus::Active;
        }
        (EventKind::ExpireEscrow { offer, .. }, ItemStatus::LockedInEscrow(escrow)) => {
            check_party(escrow, offer, author, kind)?;
            next.owner = escrow.seller;
            next.status = ItemStatus::Active;
        }
        (EventKind::ReportStolen { .. }, ItemStatus::Active) => {
            require_owner()?;
            next.status = ItemStatus::Stolen;
        }
        (EventKind::Recover { .. }, ItemStatus::Stolen) => {
            require_owner()?;
            next.status = ItemStatus::Active;
        }
        (EventKind::Retire { .. }, ItemStatus::Active) => {
            require_owner()?;
            next.status = ItemStatus::Retired;
        }
        _ => return Err(invalid()),
    }
    Ok(next)
}

fn mint(event: &Event, item: ItemId, hash: EventHash) -> Result<ItemState, TransitionError> {
    let b = &event.body;
    match &b.kind {
        EventKind::Mint {
            serial,
            product,
            owner,
        } if b.height == 0 && b.prev == EventHash::ZERO => Ok(ItemState {
            id: item,
            manufacturer: ManufacturerId::of(&b.author),
            serial: serial.clone(),
            product: product.clone(),
            owner: *owner,
            status: ItemStatus::Active,
            height: 0,
            head: hash,
        }),
        EventKind::Mint { .. } => Err(TransitionError::WrongHeight {
            expected: 0,
            got: b.height,
        }),
        _ => Err(TransitionError::NotMinted { item }),
    }
}

fn accept(
    federation: &Federation,
    state: &ItemState,
    height: u64,
    offer: &Event,
    invoice: &Invoice,
) -> Result<Escrow, TransitionError> {
    let offer_hash = offer.hash();
    let record = OfferRecord::from_event(offer, offer_hash)?;
    if record.item != state.id {
        return Err(TransitionError::OfferMismatch("offer is for another item"));
    }
    if record.item_height != height {
        return Err(TransitionError::OfferMismatch(
            "offer is for another item height",
        ));
    }
    if record.seller != state.owner {
        return Err(TransitionError::OfferMismatch(
            "seller is not the current owner",
        ));
    }
    if record.buyer == state.owner {
        return Err(TransitionError::OfferMismatch("buyer is the seller"));
    }
    let seller_payout = match invoice.outputs.first() {
        Some(o) if o.role == PayoutRole::Seller => o.script_pubkey.clone(),
        _ => return Err(TransitionError::InvoiceMismatch),
    };
    let expected = compute_invoice(
        federation,
        record.id,
        record.price_sats,
        seller_payout,
        invoice.deadline_height,
    )
    .map_err(TransitionError::Invoice)?;
    if expected != *invoice {
        return Err(TransitionError::InvoiceMismatch);
    }
    Ok(Escrow {
        offer: record.id,
        buyer: record.buyer,
        seller: record.seller,
        invoice: expected,
    })
}

fn check_party(
    escrow: &Escrow,
    offer: &OfferId,
    author: PublicKey,
    kind: &'static str,
) -> Result<(), TransitionError> {
    if *offer != escrow.offer {
        return Err(TransitionError::WrongOffer {
            expected: escrow.offer,
            got: *offer,
        });
    }
    if author != escrow.buyer && author != escrow.seller {
        return Err(TransitionError::NotAuthorized { kind, author });
    }
    Ok(())
}

/// Why an event cannot be applied to the state it was submitted against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// Not an event of this kind of chain.
    #[error("{kind} does not belong to this chain")]
    WrongChain {
        /// Event kind.
        kind: &'static str,
    },
    /// The event names another item.
    #[error("event is for item {got}, not {expected}")]
    WrongItem {
        /// This item.
        expected: ItemId,
        /// The event's.
        got: ItemId,
    },
    /// Mint of an existing item.
    #[error("item {item} is already minted")]
    AlreadyMinted {
        /// Item.
        item: ItemId,
    },
    /// Event for an item that does not exist.
    #[error("item {item} has not been minted")]
    NotMinted {
        /// Item.
        item: ItemId,
    },
    /// Not the next height (a replay, or a gap).
    #[error("expected height {expected}, got {got}")]
    WrongHeight {
        /// Next height.
        expected: u64,
        /// The event's.
        got: u64,
    },
    /// Does not link to the current head.
    #[error("previous hash {got} is not the current head {expected}")]
    WrongPrev {
        /// Current head.
        expected: EventHash,
        /// The event's.
        got: EventHash,
    },
    /// The author is not entitled to this event.
    #[error("{author} may not make {kind} on this item")]
    NotAuthorized {
        /// Event kind.
        kind: &'static str,
        /// Author.
        author: PublicKey,
    },
    /// The event is not allowed in the item's status.
    #[error("{kind} is not allowed while the item is {status}")]
    InvalidInState {
        /// Event kind.
        kind: &'static str,
        /// Status.
        status: &'static str,
    },
    /// Transfer to the current owner.
    #[error("transfer to the current owner")]
    TransferToSelf,
    /// The embedded offer does not fit this item now.
    #[error("offer does not match: {0}")]
    OfferMismatch(&'static str),
    /// Settle/expire name another sale than the one in escrow.
    #[error("escrow holds offer {expected}, not {got}")]
    WrongOffer {
        /// Offer in escrow.
        expected: OfferId,
        /// The event's.
        got: OfferId,
    },
    /// The invoice is not the one the fee schedule gives.
    #[error("invoice is not the one the federation's fee schedule gives")]
    InvoiceMismatch,
    /// No valid invoice exists for this sale.
    #[error("invoice: {0}")]
    Invoice(InvoiceError),
}

impl TransitionError {
    /// Stable machine-readable code (API error codes, metrics labels).
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongChain { .. } => "wrong_chain",
            Self::WrongItem { .. } => "wrong_item",
            Self::AlreadyMinted { .. } => "already_minted",
            Self::NotMinted { .. } => "not_minted",
            Self::WrongHeight { .. } => "wrong_height",
            Self::WrongPrev { .. } => "wrong_prev",
            Self::NotAuthorized { .. } => "not_authorized",
            Self::InvalidInState { .. } => "invalid_in_state",
            Self::TransferToSelf => "transfer_to_self",
            Self::OfferMismatch(_) => "offer_mismatch",
            Self::WrongOffer { .. } => "wrong_offer",
            Self::InvoiceMismatch => "invoice_mismatch",
            Self::Invoice(_) => "invoice_invalid",
        }
    }
}
