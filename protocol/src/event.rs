//! Events: every change of an item's life, signed by the party entitled to make it.
//!
//! Every event belongs to a *chain* — its [`Subject`]: a manufacturer's registration, an offer,
//! or an item. Within a chain, events have consecutive heights starting at 0, and each names the
//! hash of the one before it. The federation certifies at most one event per (subject, height).

use bitcoin::Txid;
use serde::{Deserialize, Serialize};

use crate::encoding::encode;
use crate::hash::{tagged_hash, tags};
use crate::ids::{EventHash, FederationId, ItemId, ManufacturerId, OfferId};
use crate::invoice::Invoice;
use crate::keys::{KeyError, PublicKey, Signature, SigningKey};

/// Longest manufacturer name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest serial number, in bytes.
pub const MAX_SERIAL_LEN: usize = 128;
/// Longest product description, in bytes.
pub const MAX_PRODUCT_LEN: usize = 256;

/// What an event does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A manufacturer registers its key (the author) under a name. Chain: the manufacturer.
    RegisterManufacturer {
        /// Display name.
        name: String,
    },
    /// The manufacturer (author) creates item `serial`, held by `owner`. Chain: the item.
    Mint {
        /// Serial number, unique per manufacturer.
        serial: String,
        /// What the item is, e.g. "Chronograph ref. 5711".
        product: String,
        /// First owner (often the manufacturer itself).
        owner: PublicKey,
    },
    /// The owner (author) gives the item to `to`.
    Transfer {
        /// Item.
        item: ItemId,
        /// New owner.
        to: PublicKey,
    },
    /// A buyer (author) offers to buy an item from its current owner. Chain: the offer itself
    /// (its id is this event's hash). The offer is only good at `item_height`: once anything
    /// else happens to the item it is stale, so it can never be replayed.
    CreateOffer {
        /// Item.
        item: ItemId,
        /// Height the seller's `AcceptOffer` must have on the item's chain.
        item_height: u64,
        /// The owner the buyer expects to buy from.
        seller: PublicKey,
        /// Price in satoshis.
        price_sats: u64,
    },
    /// The owner (author) accepts a buyer's signed offer: the item is locked in escrow under
    /// the invoice. The whole signed offer is embedded so the item's chain verifies on its own.
    AcceptOffer {
        /// The buyer's `CreateOffer` event.
        offer: Box<Event>,
        /// What must be paid, computed by [`crate::invoice::compute_invoice`].
        invoice: Invoice,
    },
    /// The invoice was paid by `payment`: ownership moves to the buyer. Author: buyer or seller.
    /// Operators co-sign only after checking the payment on their own Bitcoin node.
    Settle {
        /// Item.
        item: ItemId,
        /// The sale.
        offer: OfferId,
        /// The paying transaction.
        payment: Txid,
    },
    /// The deadline passed without a confirmed payment: the item returns to the seller.
    /// Author: buyer or seller.
    ExpireEscrow {
        /// Item.
        item: ItemId,
        /// The sale.
        offer: OfferId,
    },
    /// The owner (author) reports the item stolen: it cannot be sold or transferred.
    ReportStolen {
        /// Item.
        item: ItemId,
    },
    /// The owner (author) reports a stolen item recovered.
    Recover {
        /// Item.
        item: ItemId,
    },
    /// The owner (author) retires the item for good (destroyed, decommissioned).
    Retire {
        /// Item.
        item: ItemId,
    },
}

impl EventKind {
    /// Short name for errors, logs and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RegisterManufacturer { .. } => "register_manufacturer",
            Self::Mint { .. } => "mint",
            Self::Transfer { .. } => "transfer",
            Self::CreateOffer { .. } => "create_offer",
            Self::AcceptOffer { .. } => "accept_offer",
            Self::Settle { .. } => "settle",
            Self::ExpireEscrow { .. } => "expire_escrow",
            Self::ReportStolen { .. } => "report_stolen",
            Self::Recover { .. } => "recover",
            Self::Retire { .. } => "retire",
        }
    }
}

/// The chain an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    /// A manufacturer's registration chain.
    Manufacturer(ManufacturerId),
    /// An item's life.
    Item(ItemId),
    /// An offer.
    Offer(OfferId),
    /// The federation's checkpoint chain (its heights are checkpoint numbers). No event has this
    /// subject; checkpoints are agreed on in slots of it.
    Checkpoint,
}

/// The signed part of an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBody {
    /// The federation this event is for.
    pub federation: FederationId,
    /// Position in its chain, from 0.
    pub height: u64,
    /// Hash of the event at `height - 1`; [`EventHash::ZERO`] at height 0.
    pub prev: EventHash,
    /// Author's clock, milliseconds since the Unix epoch (operators check it is recent).
    pub timestamp_ms: u64,
    /// Random, so that otherwise equal events differ.
    pub nonce: u64,
    /// The signer.
    pub author: PublicKey,
    /// What it does.
    pub kind: EventKind,
}

impl EventBody {
    /// The event's hash: the tagged hash of the canonical bytes of the body.
    pub fn hash(&self) -> EventHash {
        EventHash(tagged_hash(tags::EVENT, &[&encode(self)]))
    }

    /// Signs the body with the author's key. Fails if `key` is not `self.author`'s.
    pub fn sign(self, key: &SigningKey) -> Result<Event, EventError> {
        if key.public_key() != self.author {
            return Err(EventError::WrongSigningKey);
        }
        let signature = key.sign(&self.hash().0);
        Ok(Event {
            body: self,
            signature,
        })
    }
}

/// A signed event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What is signed.
    pub body: EventBody,
    /// The author's signature of the event hash.
    pub signature: Signature,
}

impl Event {
    /// The event's hash (of the body only).
    pub fn hash(&self) -> EventHash {
        self.body.hash()
    }

    /// The chain this event belongs to. `hash` is this event's hash (passed in because callers
    /// have it already; an offer's id is its creating event's hash).
    pub fn subject(&self, hash: EventHash) -> Subject {
        match &self.body.kind {
            EventKind::RegisterManufacturer { .. } => {
                Subject::Manufacturer(ManufacturerId::of(&self.body.author))
            }
            EventKind::Mint { serial, .. } => {
                Subject::Item(ItemId::new(&ManufacturerId::of(&self.body.author), serial))
            }
            EventKind::CreateOffer { .. } => Subject::Offer(OfferId::from(hash)),
            EventKind::AcceptOffer { offer, .. } => match &offer.body.kind {
                EventKind::CreateOffer { item, .. } => Subject::Item(*item),
                // A malformed accept still needs a subject; `check` rejects it.
                _ => Subject::Offer(OfferId::from(hash)),
            },
            EventKind::Transfer { item, .. }
            | EventKind::Settle { item, .. }
            | EventKind::ExpireEscrow { item, .. }
            | EventKind::ReportStolen { item }
            | EventKind::Recover { item }
            | EventKind::Retire { item } => Subject::Item(*item),
        }
    }

    /// Stateless checks every operator and client runs first: the federation, field limits,
    /// genesis rules, and the author's signature. Returns the event's hash.
    pub fn check(&self, federation: FederationId) -> Result<EventHash, EventError> {
        let b = &self.body;
        if b.federation != federation {
            return Err(EventError::WrongFederation {
                expected: federation,
                got: b.federation,
            });
        }
        let genesis = matches!(
            b.kind,
            EventKind::RegisterManufacturer { .. }
                | EventKind::Mint { .. }
                | EventKind::CreateOffer { .. }
        );
        if genesis && (b.height != 0 || b.prev != EventHash::ZERO) {
            return Err(EventError::GenesisNotAtZero {
                kind: b.kind.name(),
            });
        }
        if !genesis && b.height == 0 {
            return Err(EventError::NotGenesis {
                kind: b.kind.name(),
            });
        }
        match &b.kind {
            EventKind::RegisterManufacturer { name } => {
                check_text("name", name, MAX_NAME_LEN)?;
            }
            EventKind::Mint {
                serial, product, ..
            } => {
                check_text("serial", serial, MAX_SERIAL_LEN)?;
                check_text("product", product, MAX_PRODUCT_LEN)?;
            }
            EventKind::CreateOffer { price_sats, .. } if *price_sats == 0 => {
                return Err(EventError::ZeroPrice);
            }
            EventKind::AcceptOffer { offer, .. } => {
                if !matches!(offer.body.kind, EventKind::CreateOffer { .. }) {
                    return Err(EventError::NotAnOffer);
                }
                offer.check(federation)?;
            }
            _ => {}
        }
        let hash = self.hash();
        b.author
            .verify(&hash.0, &self.signature)
            .map_err(|_: KeyError| EventError::BadSignature)?;
        Ok(hash)
    }
}

fn check_text(field: &'static str, s: &str, max: usize) -> Result<(), EventError> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(EventError::BadField { field, max });
    }
    Ok(())
}

/// Why an event fails its stateless checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Signed for another federation.
    #[error("event is for federation {got}, not {expected}")]
    WrongFederation {
        /// This federation.
        expected: FederationId,
        /// The event's.
        got: FederationId,
    },
    /// The author's signature does not verify.
    #[error("author signature does not verify")]
    BadSignature,
    /// A first-of-chain event not at height 0 with a zero prev.
    #[error("{kind} must be at height 0 with no previous event")]
    GenesisNotAtZero {
        /// Event kind.
        kind: &'static str,
    },
    /// A follow-up event at height 0.
    #[error("{kind} cannot start a chain")]
    NotGenesis {
        /// Event kind.
        kind: &'static str,
    },
    /// A text field empty, too long, or with control characters.
    #[error("{field} must be 1..={max} bytes without control characters")]
    BadField {
        /// Field.
        field: &'static str,
        /// Limit.
        max: usize,
    },
    /// Offer at price zero.
    #[error("offer price must be positive")]
    ZeroPrice,
    /// `AcceptOffer` embeds something other than a `CreateOffer`.
    #[error("accept_offer must embed a create_offer event")]
    NotAnOffer,
    /// Signing with a key other than the author's.
    #[error("signing key is not the event's author")]
    WrongSigningKey,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{body, federation, key};

    #[test]
    fn check_accepts_a_well_formed_event() {
        let f = federation(3, 4);
        let m = key(10);
        let e = body(
            &f,
            &m,
            0,
            EventHash::ZERO,
            EventKind::RegisterManufacturer {
                name: "Acme".into(),
            },
        )
        .sign(&m)
        .unwrap();
        assert_eq!(e.check(f.id()), Ok(e.hash()));
        assert_eq!(
            e.subject(e.hash()),
            Subject::Manufacturer(ManufacturerId::of(&m.public_key()))
        );
    }

    #[test]
    fn check_rejections() {
        let f = federation(3, 4);
        let m = key(10);
        let reg = |h: u64, name: &str| {
            body(
                &f,
                &m,
                h,
                EventHash::ZERO,
                EventKind::RegisterManufacturer { name: name.into() },
            )
            .sign(&m)
            .unwrap()
        };
        struct Case {
            name: &'static str,
            event: Event,
            want: EventError,
        }
        let mut forged = reg(0, "Acme");
        forged.signature.0[5] ^= 1;
        let mut other_fed = reg(0, "Acme");
        other_fed.body.federation = FederationId([7; 32]);
        let other_fed = other_fed.body.sign(&m).unwrap();
        let mut wrong_author = reg(0, "Acme");
        wrong_author.body.author = key(11).public_key();
        let cases = vec![
            Case {
                name: "forged signature",
                event: forged,
                want: EventError::BadSignature,
            },
            Case {
                name: "signed by a non-author",
                event: wrong_author,
                want: EventError::BadSignature,
            },
            Case {
                name: "wrong federation",
                event: other_fed,
                want: EventError::WrongFederation {
                    expected: f.id(),
                    got: FederationId([7; 32]),
                },
            },
            Case {
                name: "genesis above zero",
                event: reg(1, "Acme"),
                want: EventError::GenesisNotAtZero {
                    kind: "register_manufacturer",
                },
            },
            Case {
                name: "empty name",
                event: reg(0, ""),
                want: EventError::BadField {
                    field: "name",
                    max: MAX_NAME_LEN,
                },
            },
            Case {
                name: "control characters",
                event: reg(0, "a\nb"),
                want: EventError::BadField {
                    field: "name",
                    max: MAX_NAME_LEN,
                },
            },
            Case {
                name: "transfer at zero",
                event: body(
                    &f,
                    &m,
                    0,
                    EventHash::ZERO,
                    EventKind::Retire {
                        item: ItemId([1; 32]),
                    },
                )
                .sign(&m)
                .unwrap(),
                want: EventError::NotGenesis { kind: "retire" },
            },
        ];
        for c in cases {
            assert_eq!(c.event.check(f.id()), Err(c.want), "{}", c.name);
        }
    }

    #[test]
    fn signing_with_the_wrong_key_is_refused() {
        let f = federation(3, 4);
        let b = body(
            &f,
            &key(1),
            0,
            EventHash::ZERO,
            EventKind::RegisterManufacturer { name: "A".into() },
        );
        assert_eq!(b.sign(&key(2)), Err(EventError::WrongSigningKey));
    }
}
