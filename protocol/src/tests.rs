//! Cross-module tests: every transition and its errors, certificates, client verification,
//! fixed encoding vectors, and property tests.

use crate::merkle::MerkleError;
use crate::testkit::{body, certify, federation, key, operator_key, script};
use crate::*;
use bitcoin::hashes::Hash as _;
use bitcoin::hex::DisplayHex;
use proptest::prelude::*;

const PRICE: u64 = 1_000_000;
const DEADLINE: u32 = 500;

struct World {
    fed: Federation,
    mfr: SigningKey,
}

impl World {
    fn new() -> Self {
        Self {
            fed: federation(3, 4),
            mfr: key(1),
        }
    }

    fn registration(&self) -> CertifiedEvent {
        let e = body(
            &self.fed,
            &self.mfr,
            0,
            EventHash::ZERO,
            EventKind::RegisterManufacturer {
                name: "Acme Watches".into(),
            },
        )
        .sign(&self.mfr)
        .unwrap();
        certify(&self.fed, e)
    }

    fn mint(&self, serial: &str, owner: &SigningKey) -> Event {
        body(
            &self.fed,
            &self.mfr,
            0,
            EventHash::ZERO,
            EventKind::Mint {
                serial: serial.into(),
                product: "Chronograph".into(),
                owner: owner.public_key(),
            },
        )
        .sign(&self.mfr)
        .unwrap()
    }

    fn next(&self, state: &ItemState, author: &SigningKey, kind: EventKind) -> Event {
        body(&self.fed, author, state.height + 1, state.head, kind)
            .sign(author)
            .unwrap()
    }

    fn offer(&self, state: &ItemState, buyer: &SigningKey, price: u64) -> Event {
        body(
            &self.fed,
            buyer,
            0,
            EventHash::ZERO,
            EventKind::CreateOffer {
                item: state.id,
                item_height: state.height + 1,
                seller: state.owner,
                price_sats: price,
            },
        )
        .sign(buyer)
        .unwrap()
    }

    fn accept(&self, state: &ItemState, seller: &SigningKey, offer: Event) -> Event {
        let OfferRecord { id, price_sats, .. } =
            OfferRecord::from_event(&offer, offer.hash()).unwrap();
        let invoice = compute_invoice(&self.fed, id, price_sats, script(7), DEADLINE).unwrap();
        self.next(
            state,
            seller,
            EventKind::AcceptOffer {
                offer: Box::new(offer),
                invoice,
            },
        )
    }

    fn apply(&self, state: Option<&ItemState>, e: &Event) -> Result<ItemState, TransitionError> {
        let h = e.check(self.fed.id()).expect("test events are well formed");
        apply_item_event(&self.fed, state, e, h)
    }
}

fn minted(w: &World, owner: &SigningKey) -> ItemState {
    w.apply(None, &w.mint("SN-1", owner)).unwrap()
}

fn locked(w: &World, seller: &SigningKey, buyer: &SigningKey) -> (ItemState, OfferId) {
    let s = minted(w, seller);
    let offer = w.offer(&s, buyer, PRICE);
    let id = OfferId::from(offer.hash());
    (w.apply(Some(&s), &w.accept(&s, seller, offer)).unwrap(), id)
}

#[test]
fn mint_creates_an_active_item_owned_by_the_named_owner() {
    let w = World::new();
    let owner = key(2);
    let s = minted(&w, &owner);
    assert_eq!(s.owner, owner.public_key());
    assert_eq!(s.status, ItemStatus::Active);
    assert_eq!(s.height, 0);
    assert_eq!(
        s.id,
        ItemId::new(&ManufacturerId::of(&w.mfr.public_key()), "SN-1")
    );
}

#[test]
fn every_valid_transition() {
    let w = World::new();
    let (alice, bob, carol) = (key(2), key(3), key(4));
    let s0 = minted(&w, &alice);

    // ACTIVE_HELD --Transfer(owner)--> ACTIVE_HELD, new owner.
    let s1 = w
        .apply(
            Some(&s0),
            &w.next(
                &s0,
                &alice,
                EventKind::Transfer {
                    item: s0.id,
                    to: bob.public_key(),
                },
            ),
        )
        .unwrap();
    assert_eq!((s1.owner, s1.height), (bob.public_key(), 1));

    // ACTIVE_HELD --ReportStolen--> STOLEN --Recover--> ACTIVE_HELD.
    let s2 = w
        .apply(
            Some(&s1),
            &w.next(&s1, &bob, EventKind::ReportStolen { item: s1.id }),
        )
        .unwrap();
    assert_eq!(s2.status, ItemStatus::Stolen);
    let s3 = w
        .apply(
            Some(&s2),
            &w.next(&s2, &bob, EventKind::Recover { item: s2.id }),
        )
        .unwrap();
    assert_eq!(s3.status, ItemStatus::Active);

    // ACTIVE_HELD --AcceptOffer--> LOCKED_IN_ESCROW --Settle--> ACTIVE_HELD, buyer owns.
    let offer = w.offer(&s3, &carol, PRICE);
    let offer_id = OfferId::from(offer.hash());
    let s4 = w.apply(Some(&s3), &w.accept(&s3, &bob, offer)).unwrap();
    let ItemStatus::LockedInEscrow(escrow) = &s4.status else {
        panic!("not locked")
    };
    assert_eq!(
        (escrow.buyer, escrow.seller, escrow.offer),
        (carol.public_key(), bob.public_key(), offer_id)
    );
    assert_eq!(
        escrow
            .invoice
            .outputs
            .iter()
            .map(|o| o.amount_sats)
            .sum::<u64>(),
        PRICE
    );
    let payment = bitcoin::Txid::from_byte_array([5; 32]);
    let s5 = w
        .apply(
            Some(&s4),
            &w.next(
                &s4,
                &carol,
                EventKind::Settle {
                    item: s4.id,
                    offer: offer_id,
                    payment,
                },
            ),
        )
        .unwrap();
    assert_eq!(
        (s5.owner, s5.status.clone()),
        (carol.public_key(), ItemStatus::Active)
    );

    // LOCKED_IN_ESCROW --ExpireEscrow--> ACTIVE_HELD, seller keeps it.
    let offer = w.offer(&s5, &alice, PRICE);
    let offer_id = OfferId::from(offer.hash());
    let s6 = w.apply(Some(&s5), &w.accept(&s5, &carol, offer)).unwrap();
    let s7 = w
        .apply(
            Some(&s6),
            &w.next(
                &s6,
                &carol,
                EventKind::ExpireEscrow {
                    item: s6.id,
                    offer: offer_id,
                },
            ),
        )
        .unwrap();
    assert_eq!(
        (s7.owner, s7.status.clone()),
        (carol.public_key(), ItemStatus::Active)
    );

    // ACTIVE_HELD --Retire--> RETIRED, and nothing after.
    let s8 = w
        .apply(
            Some(&s7),
            &w.next(&s7, &carol, EventKind::Retire { item: s7.id }),
        )
        .unwrap();
    assert_eq!(s8.status, ItemStatus::Retired);
    let after = w.next(
        &s8,
        &carol,
        EventKind::Transfer {
            item: s8.id,
            to: alice.public_key(),
        },
    );
    assert_eq!(
        w.apply(Some(&s8), &after),
        Err(TransitionError::InvalidInState {
            kind: "transfer",
            status: "RETIRED"
        })
    );
}

#[test]
fn every_invalid_transition_is_a_typed_error() {
    let w = World::new();
    let (alice, bob, carol) = (key(2), key(3), key(4));
    let active = minted(&w, &alice);
    let (locked, offer_id) = locked(&w, &alice, &bob);
    let stolen = w
        .apply(
            Some(&active),
            &w.next(&active, &alice, EventKind::ReportStolen { item: active.id }),
        )
        .unwrap();
    let payment = bitcoin::Txid::from_byte_array([5; 32]);
    let id = active.id;

    struct Case {
        name: &'static str,
        state: ItemState,
        event: Event,
        want: TransitionError,
    }
    let mut wrong_height = w.next(&active, &alice, EventKind::Retire { item: id });
    wrong_height.body.height = 5;
    let wrong_height = wrong_height.body.sign(&alice).unwrap();
    let mut wrong_prev = w.next(&active, &alice, EventKind::Retire { item: id });
    wrong_prev.body.prev = EventHash([9; 32]);
    let wrong_prev = wrong_prev.body.sign(&alice).unwrap();
    let stale_offer = {
        let mut o = w.offer(&active, &bob, PRICE);
        if let EventKind::CreateOffer { item_height, .. } = &mut o.body.kind {
            *item_height = 7;
        }
        o.body.sign(&bob).unwrap()
    };
    let bad_invoice = {
        let o = w.offer(&active, &bob, PRICE);
        let mut inv =
            compute_invoice(&w.fed, OfferId::from(o.hash()), PRICE, script(7), DEADLINE).unwrap();
        inv.outputs[1].amount_sats -= 1;
        inv.outputs[0].amount_sats += 1;
        w.next(
            &active,
            &alice,
            EventKind::AcceptOffer {
                offer: Box::new(o),
                invoice: inv,
            },
        )
    };
    let cheap_offer = w.offer(&active, &bob, 1_000);
    let cheap = {
        let id = OfferId::from(cheap_offer.hash());
        let inv = Invoice {
            offer: id,
            price_sats: 1_000,
            outputs: vec![],
            deadline_height: DEADLINE,
        };
        w.next(
            &active,
            &alice,
            EventKind::AcceptOffer {
                offer: Box::new(cheap_offer),
                invoice: inv,
            },
        )
    };
    let self_offer = w.accept(&active, &alice, w.offer(&active, &alice, PRICE));
    let cases = vec![
        Case {
            name: "mint twice",
            state: active.clone(),
            event: w.mint("SN-1", &alice),
            want: TransitionError::AlreadyMinted { item: id },
        },
        Case {
            name: "gap in heights",
            state: active.clone(),
            event: wrong_height,
            want: TransitionError::WrongHeight {
                expected: 1,
                got: 5,
            },
        },
        Case {
            name: "broken link",
            state: active.clone(),
            event: wrong_prev,
            want: TransitionError::WrongPrev {
                expected: active.head,
                got: EventHash([9; 32]),
            },
        },
        Case {
            name: "transfer by non-owner",
            state: active.clone(),
            event: w.next(
                &active,
                &bob,
                EventKind::Transfer {
                    item: id,
                    to: bob.public_key(),
                },
            ),
            want: TransitionError::NotAuthorized {
                kind: "transfer",
                author: bob.public_key(),
            },
        },
        Case {
            name: "transfer to self",
            state: active.clone(),
            event: w.next(
                &active,
                &alice,
                EventKind::Transfer {
                    item: id,
                    to: alice.public_key(),
                },
            ),
            want: TransitionError::TransferToSelf,
        },
        Case {
            name: "transfer of another item",
            state: active.clone(),
            event: w.next(
                &active,
                &alice,
                EventKind::Transfer {
                    item: ItemId([1; 32]),
                    to: bob.public_key(),
                },
            ),
            want: TransitionError::WrongItem {
                expected: id,
                got: ItemId([1; 32]),
            },
        },
        Case {
            name: "accept by non-owner",
            state: active.clone(),
            event: w.accept(&active, &carol, w.offer(&active, &bob, PRICE)),
            want: TransitionError::NotAuthorized {
                kind: "accept_offer",
                author: carol.public_key(),
            },
        },
        Case {
            name: "accept a stale offer",
            state: active.clone(),
            event: w.accept(&active, &alice, stale_offer),
            want: TransitionError::OfferMismatch("offer is for another item height"),
        },
        Case {
            name: "accept own offer",
            state: active.clone(),
            event: self_offer,
            want: TransitionError::OfferMismatch("buyer is the seller"),
        },
        Case {
            name: "invoice not from the fee schedule",
            state: active.clone(),
            event: bad_invoice,
            want: TransitionError::InvoiceMismatch,
        },
        Case {
            name: "price below dust",
            state: active.clone(),
            event: cheap,
            want: TransitionError::InvoiceMismatch,
        },
        Case {
            name: "offer for a locked item",
            state: locked.clone(),
            event: w.accept(&locked, &alice, w.offer(&locked, &carol, PRICE)),
            want: TransitionError::InvalidInState {
                kind: "accept_offer",
                status: "LOCKED_IN_ESCROW",
            },
        },
        Case {
            name: "transfer while locked",
            state: locked.clone(),
            event: w.next(
                &locked,
                &alice,
                EventKind::Transfer {
                    item: id,
                    to: carol.public_key(),
                },
            ),
            want: TransitionError::InvalidInState {
                kind: "transfer",
                status: "LOCKED_IN_ESCROW",
            },
        },
        Case {
            name: "settle by a stranger",
            state: locked.clone(),
            event: w.next(
                &locked,
                &carol,
                EventKind::Settle {
                    item: id,
                    offer: offer_id,
                    payment,
                },
            ),
            want: TransitionError::NotAuthorized {
                kind: "settle",
                author: carol.public_key(),
            },
        },
        Case {
            name: "settle another offer",
            state: locked.clone(),
            event: w.next(
                &locked,
                &bob,
                EventKind::Settle {
                    item: id,
                    offer: OfferId([3; 32]),
                    payment,
                },
            ),
            want: TransitionError::WrongOffer {
                expected: offer_id,
                got: OfferId([3; 32]),
            },
        },
        Case {
            name: "expire another offer",
            state: locked.clone(),
            event: w.next(
                &locked,
                &alice,
                EventKind::ExpireEscrow {
                    item: id,
                    offer: OfferId([3; 32]),
                },
            ),
            want: TransitionError::WrongOffer {
                expected: offer_id,
                got: OfferId([3; 32]),
            },
        },
        Case {
            name: "settle when not locked",
            state: active.clone(),
            event: w.next(
                &active,
                &alice,
                EventKind::Settle {
                    item: id,
                    offer: offer_id,
                    payment,
                },
            ),
            want: TransitionError::InvalidInState {
                kind: "settle",
                status: "ACTIVE_HELD",
            },
        },
        Case {
            name: "expire when not locked",
            state: active.clone(),
            event: w.next(
                &active,
                &alice,
                EventKind::ExpireEscrow {
                    item: id,
                    offer: offer_id,
                },
            ),
            want: TransitionError::InvalidInState {
                kind: "expire_escrow",
                status: "ACTIVE_HELD",
            },
        },
        Case {
            name: "recover when not stolen",
            state: active.clone(),
            event: w.next(&active, &alice, EventKind::Recover { item: id }),
            want: TransitionError::InvalidInState {
                kind: "recover",
                status: "ACTIVE_HELD",
            },
        },
        Case {
            name: "report stolen by non-owner",
            state: active.clone(),
            event: w.next(&active, &bob, EventKind::ReportStolen { item: id }),
            want: TransitionError::NotAuthorized {
                kind: "report_stolen",
                author: bob.public_key(),
            },
        },
        Case {
            name: "transfer a stolen item",
            state: stolen.clone(),
            event: w.next(
                &stolen,
                &alice,
                EventKind::Transfer {
                    item: id,
                    to: bob.public_key(),
                },
            ),
            want: TransitionError::InvalidInState {
                kind: "transfer",
                status: "STOLEN",
            },
        },
        Case {
            name: "retire a stolen item",
            state: stolen.clone(),
            event: w.next(&stolen, &alice, EventKind::Retire { item: id }),
            want: TransitionError::InvalidInState {
                kind: "retire",
                status: "STOLEN",
            },
        },
        Case {
            name: "recover by non-owner",
            state: stolen.clone(),
            event: w.next(&stolen, &bob, EventKind::Recover { item: id }),
            want: TransitionError::NotAuthorized {
                kind: "recover",
                author: bob.public_key(),
            },
        },
    ];
    for c in cases {
        let before = c.state.clone();
        assert_eq!(w.apply(Some(&c.state), &c.event), Err(c.want), "{}", c.name);
        assert_eq!(c.state, before, "{}: state unchanged", c.name);
    }
    // Events of other chains and events before the mint.
    let reg = w.registration().event;
    assert_eq!(
        w.apply(Some(&active), &reg),
        Err(TransitionError::WrongChain {
            kind: "register_manufacturer"
        })
    );
    let transfer = w.next(
        &active,
        &alice,
        EventKind::Transfer {
            item: id,
            to: bob.public_key(),
        },
    );
    assert_eq!(
        w.apply(None, &transfer),
        Err(TransitionError::NotMinted { item: id })
    );
}

#[test]
fn offer_checks_against_the_item() {
    let w = World::new();
    let (alice, bob) = (key(2), key(3));
    let s = minted(&w, &alice);
    let o = w.offer(&s, &bob, PRICE);
    let rec = OfferRecord::from_event(&o, o.hash()).unwrap();
    assert_eq!(rec.check_against(Some(&s)), Ok(()));
    assert_eq!(
        rec.check_against(None),
        Err(TransitionError::NotMinted { item: s.id })
    );
    let (l, _) = locked(&w, &alice, &key(4));
    assert!(matches!(
        rec.check_against(Some(&l)),
        Err(TransitionError::InvalidInState { .. })
    ));
    let own = w.offer(&s, &alice, PRICE);
    let own = OfferRecord::from_event(&own, own.hash()).unwrap();
    assert_eq!(
        own.check_against(Some(&s)),
        Err(TransitionError::OfferMismatch("buyer is the seller"))
    );
}

// ---- certificates ----

fn vote_for(w: &World) -> Vote {
    Vote::commit(w.registration().event.hash(), 0)
}

fn attest(w: &World, op: u32, vote: Vote) -> Attestation {
    BatchVote::sign(&operator_key(op), w.fed.id(), vec![vote])
        .unwrap()
        .attestation(0)
        .unwrap()
}

#[test]
fn certificate_rules() {
    let w = World::new();
    let v = vote_for(&w);
    let cert = |ops: &[u32]| Certificate {
        event: v.event,
        round: 0,
        phase: Phase::Commit,
        attestations: ops.iter().map(|o| attest(&w, *o, v)).collect(),
    };
    assert_eq!(cert(&[0, 1, 2]).verify(&w.fed), Ok(()));
    assert_eq!(cert(&[3, 1, 2, 0]).verify(&w.fed), Ok(()));
    assert_eq!(
        cert(&[0, 1]).verify(&w.fed),
        Err(CertificateError::TooFewSignatures { have: 2, need: 3 })
    );
    let dup = cert(&[0, 1, 1]);
    assert_eq!(
        dup.verify(&w.fed),
        Err(CertificateError::DuplicateSigner(w.fed.operator_ids()[1]))
    );

    // A non-member's signature (operator 4 of a 4-operator federation).
    let outsider = attest(&w, 4, v);
    let mut c = cert(&[0, 1]);
    c.attestations.push(outsider.clone());
    assert_eq!(
        c.verify(&w.fed),
        Err(CertificateError::NotAMember(outsider.operator))
    );

    // A member id with someone else's signature.
    let mut c = cert(&[0, 1, 2]);
    c.attestations[2].signature = outsider.signature;
    assert_eq!(
        c.verify(&w.fed),
        Err(CertificateError::BadSignature(w.fed.operator_ids()[2]))
    );

    // The certificate of one event does not certify another, nor another round.
    let mut c = cert(&[0, 1, 2]);
    c.event = EventHash([1; 32]);
    assert!(matches!(
        c.verify(&w.fed),
        Err(CertificateError::BadSignature(_))
    ));
    let mut c = cert(&[0, 1, 2]);
    c.round = 1;
    assert!(matches!(
        c.verify(&w.fed),
        Err(CertificateError::BadSignature(_))
    ));
    // Prevotes are not commit votes: m prevotes do not make a certificate.
    let pre = Vote::prevote(v.event, 0);
    let c = Certificate {
        event: v.event,
        round: 0,
        phase: Phase::Commit,
        attestations: (0..3).map(|o| attest(&w, o, pre)).collect(),
    };
    assert!(matches!(
        c.verify(&w.fed),
        Err(CertificateError::BadSignature(_))
    ));

    // Signatures from another federation with the same operators do not count.
    let mut params = w.fed.params().clone();
    params.name = "other".into();
    let other = Federation::new(params).unwrap();
    assert!(matches!(
        cert(&[0, 1, 2]).verify(&other),
        Err(CertificateError::BadSignature(_))
    ));
}

#[test]
fn one_signature_covers_a_batch() {
    let w = World::new();
    let votes: Vec<Vote> = (0..100u8)
        .map(|i| Vote::commit(EventHash([i; 32]), 0))
        .collect();
    let batches: Vec<VerifiedBatch> = (0..3)
        .map(|op| {
            let signed = BatchVote::sign(&operator_key(op), w.fed.id(), votes.clone()).unwrap();
            // What travels is the gossip form; the receiver re-verifies it.
            signed.to_batch_vote().verify(&w.fed).unwrap()
        })
        .collect();
    for (i, v) in votes.iter().enumerate() {
        let c = Certificate::assemble(
            &w.fed,
            *v,
            batches.iter().map(|b| b.attestation(i).unwrap()),
        )
        .unwrap();
        assert_eq!(c.verify(&w.fed), Ok(()));
        // ceil(log2(100)) = 7 levels; promotions skip some siblings.
        assert!(c.attestations[0].path.siblings.len() <= 7);
    }
    // A tampered gossip batch does not verify.
    let mut bv = batches[0].to_batch_vote();
    bv.votes[3].event = EventHash([200; 32]);
    assert_eq!(
        bv.verify(&w.fed).err(),
        Some(CertificateError::BadSignature(w.fed.operator_ids()[0]))
    );
    assert!(matches!(
        BatchVote::sign(&operator_key(0), w.fed.id(), vec![]),
        Err(CertificateError::BadBatchSize(0))
    ));
}

/// Every attestation a batch hands out verifies on its own (as a relayed prevote must), whatever
/// the batch's size: its path comes in canonical form (leaf 2 of 7 has the path of leaf 2 of 5).
#[test]
fn every_attestation_of_a_batch_verifies_alone() {
    let w = World::new();
    for size in 1..=9u8 {
        let votes: Vec<Vote> = (0..size)
            .map(|i| Vote::prevote(EventHash([i; 32]), 0))
            .collect();
        let batch = BatchVote::sign(&operator_key(1), w.fed.id(), votes.clone()).unwrap();
        for (i, v) in votes.iter().enumerate() {
            let att = batch.attestation(i).unwrap();
            assert_eq!(att.path, att.path.canonical(), "batch of {size}, vote {i}");
            assert_eq!(att.verify(&w.fed, v), Ok(1), "batch of {size}, vote {i}");
        }
    }
}

#[test]
fn assemble_is_deterministic_and_needs_m() {
    let w = World::new();
    let v = vote_for(&w);
    let a: Vec<Attestation> = (0..4).map(|o| attest(&w, o, v)).collect();
    let c1 = Certificate::assemble(
        &w.fed,
        v,
        [a[3].clone(), a[1].clone(), a[0].clone(), a[2].clone()],
    )
    .unwrap();
    let c2 = Certificate::assemble(&w.fed, v, a.clone()).unwrap();
    assert_eq!(c1, c2);
    assert_eq!(c1.signer_indices(&w.fed), vec![Some(0), Some(1), Some(2)]);
    assert!(matches!(
        Certificate::assemble(&w.fed, v, [a[0].clone(), a[0].clone(), a[1].clone()]),
        Err(CertificateError::TooFewSignatures { have: 2, need: 3 })
    ));
}

#[test]
fn certificates_of_one_event_rank_by_round_then_operator_indices() {
    let w = World::new();
    let cert = |round: u32, ops: [u32; 3]| {
        let v = Vote::commit(w.registration().event.hash(), round);
        Certificate::assemble(&w.fed, v, ops.map(|o| attest(&w, o, v))).unwrap()
    };
    let r0_low = cert(0, [0, 1, 2]);
    let r0_high = cert(0, [1, 2, 3]);
    let r1_low = cert(1, [0, 1, 2]);
    assert!(r0_low.rank(&w.fed) < r0_high.rank(&w.fed));
    assert!(r0_high.rank(&w.fed) < r1_low.rank(&w.fed));
    assert_eq!(r0_low.rank(&w.fed), (0, Phase::Commit, vec![0, 1, 2]));
    // A fast certificate (all round-0 prevotes) comes before every commit certificate, even
    // one with fewer signers (which a comparison of signer lists alone would put first).
    let pre = Vote::prevote(w.registration().event.hash(), 0);
    let fast = Certificate::assemble(&w.fed, pre, (0..4).map(|o| attest(&w, o, pre))).unwrap();
    assert_eq!(fast.rank(&w.fed), (0, Phase::Prevote, vec![0, 1, 2, 3]));
    assert!(fast.rank(&w.fed) < r0_low.rank(&w.fed));
}

#[test]
fn a_fast_certificate_needs_the_round_0_prevotes_of_every_operator() {
    let w = World::new();
    let v = vote_for(&w);
    let pre = Vote::prevote(v.event, 0);
    let all: Vec<Attestation> = (0..4).map(|o| attest(&w, o, pre)).collect();
    let fast = Certificate::assemble(&w.fed, pre, all.clone()).unwrap();
    assert_eq!(fast.phase, Phase::Prevote);
    assert_eq!(fast.attestations.len(), 4);
    assert_eq!(fast.verify(&w.fed), Ok(()));
    // m prevotes are a polka, not a certificate.
    assert_eq!(
        Certificate::assemble(&w.fed, pre, all[..3].to_vec()),
        Err(CertificateError::TooFewSignatures { have: 3, need: 4 })
    );
    let mut short = fast.clone();
    short.attestations.pop();
    assert_eq!(
        short.verify(&w.fed),
        Err(CertificateError::TooFewSignatures { have: 3, need: 4 })
    );
    // Prevotes of a later round are no fast certificate, however many.
    let late = Vote::prevote(v.event, 1);
    let atts = (0..4).map(|o| attest(&w, o, late));
    assert_eq!(
        Certificate::assemble(&w.fed, late, atts),
        Err(CertificateError::NotFast)
    );
    let mut relabelled = fast.clone();
    relabelled.round = 1;
    assert_eq!(relabelled.verify(&w.fed), Err(CertificateError::NotFast));
    // Commit votes do not pass for prevotes, nor prevotes for commits.
    let mut as_commit = fast.clone();
    as_commit.phase = Phase::Commit;
    assert!(matches!(
        as_commit.verify(&w.fed),
        Err(CertificateError::BadSignature(_))
    ));
    let commits = (0..4).map(|o| attest(&w, o, v)).collect();
    let mut as_prevote = fast;
    as_prevote.attestations = commits;
    assert!(matches!(
        as_prevote.verify(&w.fed),
        Err(CertificateError::BadSignature(_))
    ));
}

#[test]
fn every_single_bit_flip_of_a_certified_event_is_rejected() {
    let w = World::new();
    let event = w.registration().event;
    // The event's vote sits in a batch of 5 with others, so each attestation carries a path.
    let mut votes: Vec<Vote> = (0..4u8)
        .map(|i| Vote::commit(EventHash([i; 32]), 0))
        .collect();
    votes.insert(2, Vote::commit(event.hash(), 0));
    let atts = (0..3).map(|op| {
        BatchVote::sign(&operator_key(op), w.fed.id(), votes.clone())
            .unwrap()
            .attestation(2)
            .unwrap()
    });
    let certificate = Certificate::assemble(&w.fed, votes[2], atts).unwrap();
    assert!(certificate
        .attestations
        .iter()
        .all(|a| !a.path.siblings.is_empty()));
    let ce = CertifiedEvent {
        event: event.clone(),
        certificate,
    };
    assert_eq!(ce.verify(&w.fed).ok(), Some(event.hash()));
    let bytes = encode(&ce);
    let (mut undecodable, mut rejected, mut resized) = (0, 0, 0);
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        match decode::<CertifiedEvent>(&b) {
            Err(_) => undecodable += 1,
            Ok(m) if m == ce => {}
            Ok(m) => {
                // A path's `total` (the batch's leaf count) is not signed, and trees of
                // different sizes can give a leaf the same path: such a flip leads to the same
                // signed root, and only the canonical-path rule refuses it.
                let root = |p: &crate::merkle::InclusionProof| p.root(&votes[2].leaf()).ok();
                let same_root = m.event == ce.event
                    && m.certificate.event == ce.certificate.event
                    && m.certificate.round == ce.certificate.round
                    && m.certificate.phase == ce.certificate.phase
                    && m.certificate.attestations.len() == ce.certificate.attestations.len()
                    && m.certificate
                        .attestations
                        .iter()
                        .zip(&ce.certificate.attestations)
                        .all(|(a, b)| {
                            a.operator == b.operator
                                && a.signature == b.signature
                                && root(&a.path).is_some()
                                && root(&a.path) == root(&b.path)
                        });
                let err = m
                    .verify(&w.fed)
                    .expect_err("a flipped certified event verifies");
                if same_root {
                    assert!(
                        matches!(
                            err,
                            crate::verify::VerifyError::Certificate {
                                source: CertificateError::BadPath(
                                    _,
                                    MerkleError::NotCanonical { .. }
                                ),
                                ..
                            }
                        ),
                        "byte {} bit {}: {err}",
                        bit / 8,
                        bit % 8
                    );
                    resized += 1;
                }
                rejected += 1;
            }
        }
    }
    println!(
        "{} bit flips: {undecodable} undecodable, {rejected} refused ({resized} of them only resized a path: not canonical)",
        bytes.len() * 8
    );
    // Most flips decode into a well-formed but different certified event, which is refused;
    // some only resize a path (the case the canonical rule exists for).
    assert!(
        rejected > bytes.len() * 4,
        "{rejected} rejected, {undecodable} undecodable"
    );
    assert!(
        resized > 0,
        "no flip resized a path: the test no longer covers the rule"
    );
}

// ---- client verification ----

fn history(w: &World) -> (ItemState, Vec<CertifiedEvent>) {
    let (alice, bob) = (key(2), key(3));
    let mint = w.mint("SN-1", &alice);
    let s0 = w.apply(None, &mint).unwrap();
    let t = w.next(
        &s0,
        &alice,
        EventKind::Transfer {
            item: s0.id,
            to: bob.public_key(),
        },
    );
    let s1 = w.apply(Some(&s0), &t).unwrap();
    (s1, vec![certify(&w.fed, mint), certify(&w.fed, t)])
}

#[test]
fn verifies_an_honest_history() {
    let w = World::new();
    let (state, h) = history(&w);
    assert_eq!(
        verify_item_history(&w.fed, state.id, &w.registration(), &h),
        Ok(state)
    );
}

#[test]
fn rejects_dishonest_histories() {
    let w = World::new();
    let (state, h) = history(&w);
    let reg = w.registration();
    let run =
        |h: &[CertifiedEvent], r: &CertifiedEvent| verify_item_history(&w.fed, state.id, r, h);

    let mut tampered = h.clone();
    if let EventKind::Transfer { to, .. } = &mut tampered[1].event.body.kind {
        *to = key(9).public_key();
    }
    assert_eq!(
        run(&tampered, &reg),
        Err(VerifyError::Event {
            index: 1,
            source: EventError::BadSignature
        })
    );

    let mut weak = h.clone();
    weak[1].certificate.attestations.pop();
    assert_eq!(
        run(&weak, &reg),
        Err(VerifyError::Certificate {
            index: 1,
            source: CertificateError::TooFewSignatures { have: 2, need: 3 }
        })
    );

    let mut swapped = h.clone();
    swapped[1].certificate = h[0].certificate.clone();
    assert_eq!(
        run(&swapped, &reg),
        Err(VerifyError::CertificateForOtherEvent { index: 1 })
    );

    assert_eq!(
        run(&h[1..], &reg),
        Err(VerifyError::Transition {
            index: 0,
            source: TransitionError::NotMinted { item: state.id }
        })
    );
    assert_eq!(run(&[], &reg), Err(VerifyError::EmptyHistory));

    // A history of another item.
    let other = certify(&w.fed, w.mint("SN-2", &key(2)));
    assert_eq!(
        run(&[other], &reg),
        Err(VerifyError::WrongItem { index: 0 })
    );

    // A look-alike manufacturer: same name, its own key, its own (certified) registration.
    let fake = World {
        fed: w.fed.clone(),
        mfr: key(66),
    };
    assert!(matches!(
        run(&h, &fake.registration()),
        Err(VerifyError::ManufacturerMismatch { .. })
    ));
    // And an uncertified registration.
    let mut uncertified = reg;
    uncertified.certificate.attestations.truncate(1);
    assert!(matches!(
        run(&h, &uncertified),
        Err(VerifyError::Certificate { index: 0, .. })
    ));
}

// ---- fixed vectors: a change to the canonical format fails here ----
//
// Layout of VECTOR_REGISTER_BODY (postcard): federation id (32 raw bytes) | height varint 00 |
// prev (32 zero bytes) | timestamp varint 80d095ffbc31 (1_700_000_000_000) | nonce 00 |
// author (33 raw bytes) | kind discriminant 00 | name: length 0c + "Acme Watches".
// VECTOR_REGISTER_HASH was checked independently with Python's hashlib:
// sha256(sha256(tag) || sha256(tag) || body) with tag "hallmark/v1/event".

#[test]
fn canonical_encoding_vectors() {
    let w = World::new();
    let reg = w.registration().event;
    assert_eq!(
        encode(&reg.body).to_lower_hex_string(),
        VECTOR_REGISTER_BODY,
        "canonical bytes of a RegisterManufacturer body"
    );
    assert_eq!(reg.hash().to_string(), VECTOR_REGISTER_HASH);
    assert_eq!(reg.signature.0.to_lower_hex_string(), VECTOR_REGISTER_SIG);
    assert_eq!(w.fed.id().to_string(), VECTOR_FEDERATION_ID);
    let mint = w.mint("SN-1", &key(2));
    assert_eq!(encode(&mint).to_lower_hex_string(), VECTOR_MINT_EVENT);
    assert_eq!(decode::<Event>(&encode(&mint)), Ok(mint));
}

const VECTOR_REGISTER_BODY: &str =
    "c502b5c1c0ed8d7cf9dc3535179e6c4345f54fcf61d91d25e105aeb4a4fd1c8700000000000000000000000000000000000000000000000000000000000000000080d095ffbc310003e6c15975388a9fd526ed1010e8a5d8602c2059ec14bba80cc6095fb9992bacb4000c41636d652057617463686573";
const VECTOR_REGISTER_HASH: &str =
    "bfed925b392baeba605ab9013ba470b7b2dd401e8d0e7ac7765b6d87f31fe2be";
const VECTOR_REGISTER_SIG: &str =
    "61126db0d9ce8aafebb2d8cb51bacd1c292fb08d3c3ce00c788fd812fe1a52d844c516789f3d5433503b0d5aca5cbe05ac8bd8a96471d6217f22311b9da23dea";
const VECTOR_FEDERATION_ID: &str =
    "c502b5c1c0ed8d7cf9dc3535179e6c4345f54fcf61d91d25e105aeb4a4fd1c87";
const VECTOR_MINT_EVENT: &str =
    "c502b5c1c0ed8d7cf9dc3535179e6c4345f54fcf61d91d25e105aeb4a4fd1c8700000000000000000000000000000000000000000000000000000000000000000080d095ffbc310003e6c15975388a9fd526ed1010e8a5d8602c2059ec14bba80cc6095fb9992bacb40104534e2d310b4368726f6e6f677261706802e1a72bf2fd3ce9a0257360268f2bbf9b63482dfe379f7db6316035a95fa543ecdac03b91a6519b21ac4ba14d2748536a82d4b2c56ff4293f5ad9687da2aa9c7663a332838162afa2bce0ed90e927441518002ce389d6d8b6266423e218153d4f";

// ---- properties ----

fn arb_kind(keys: Vec<PublicKey>) -> impl Strategy<Value = EventKind> {
    let k = prop::sample::select(keys);
    let item = any::<[u8; 32]>().prop_map(ItemId);
    prop_oneof![
        "[a-zA-Z ]{1,20}".prop_map(|name| EventKind::RegisterManufacturer { name }),
        ("[A-Z0-9-]{1,12}", "[a-z ]{1,20}", k.clone()).prop_map(|(serial, product, owner)| {
            EventKind::Mint {
                serial,
                product,
                owner,
            }
        }),
        (item.clone(), k.clone()).prop_map(|(item, to)| EventKind::Transfer { item, to }),
        (item.clone(), any::<u64>(), k, 1u64..u64::MAX).prop_map(
            |(item, item_height, seller, price_sats)| EventKind::CreateOffer {
                item,
                item_height,
                seller,
                price_sats
            }
        ),
        (item.clone(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(item, o, t)| {
            EventKind::Settle {
                item,
                offer: OfferId(o),
                payment: bitcoin::Txid::from_byte_array(t),
            }
        }),
        item.prop_map(|item| EventKind::Retire { item }),
    ]
}

proptest! {
    #[test]
    fn events_round_trip_through_postcard_and_json(kind in arb_kind((0..4).map(|i| key(i).public_key()).collect()), height in any::<u64>(), nonce in any::<u64>(), ts in any::<u64>()) {
        let w = World::new();
        let mut b = body(&w.fed, &key(1), height, EventHash([3; 32]), kind);
        b.nonce = nonce;
        b.timestamp_ms = ts;
        let e = b.sign(&key(1)).unwrap();
        let bytes = encode(&e);
        prop_assert_eq!(decode::<Event>(&bytes), Ok(e.clone()));
        let json = serde_json::to_string(&e).unwrap();
        prop_assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        // No truncation of canonical bytes decodes.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(decode::<Event>(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode::<Event>(&bytes);
        let _ = decode::<Certificate>(&bytes);
        let _ = decode::<BatchVote>(&bytes);
    }

    #[test]
    fn certificate_threshold(signers in prop::collection::vec(0u32..6, 0..8), corrupt in prop::option::of(0usize..8)) {
        // Operators 0..4 are members; 4 and 5 are not.
        let w = World::new();
        let v = vote_for(&w);
        let mut c = Certificate { event: v.event, round: 0, phase: Phase::Commit, attestations: signers.iter().map(|o| attest(&w, *o, v)).collect() };
        if let Some(i) = corrupt {
            if let Some(a) = c.attestations.get_mut(i) {
                a.signature.0[10] ^= 0x40;
            }
        }
        let distinct: std::collections::HashSet<_> = signers.iter().collect();
        let all_members = signers.iter().all(|s| *s < 4);
        let corrupted = corrupt.is_some_and(|i| i < signers.len());
        let valid = all_members && distinct.len() == signers.len() && !corrupted && signers.len() >= 3;
        prop_assert_eq!(c.verify(&w.fed).is_ok(), valid);
    }

    /// Random sequences of events by random parties: accepted ones always leave a consistent
    /// state, rejected ones change nothing, and ownership moves only by the owner's transfer or
    /// a settled sale.
    #[test]
    fn no_event_sequence_reaches_an_invalid_state(steps in prop::collection::vec((0usize..7, 0u32..4, 0u32..4, any::<bool>()), 1..40)) {
        let w = World::new();
        let keys: Vec<SigningKey> = (2..6).map(key).collect();
        let mut state = w.apply(None, &w.mint("SN-1", &keys[0])).unwrap();
        let mut pending_offer: Option<(OfferId, PublicKey)> = None;
        for (what, a, b, flag) in steps {
            let author = &keys[a as usize];
            let other = keys[b as usize].public_key();
            let id = state.id;
            let event = match what {
                0 => w.next(&state, author, EventKind::Transfer { item: id, to: other }),
                1 => {
                    let buyer = &keys[b as usize];
                    let mut offer = w.offer(&state, buyer, PRICE);
                    if flag {
                        // A stale or foreign offer.
                        if let EventKind::CreateOffer { item_height, .. } = &mut offer.body.kind { *item_height += 1; }
                        offer = offer.body.sign(buyer).unwrap();
                    }
                    w.accept(&state, author, offer)
                }
                2 => {
                    let offer = match (&state.status, flag) {
                        (ItemStatus::LockedInEscrow(e), true) => e.offer,
                        _ => OfferId([1; 32]),
                    };
                    w.next(&state, author, EventKind::Settle { item: id, offer, payment: bitcoin::Txid::from_byte_array([2; 32]) })
                }
                3 => {
                    let offer = match &state.status { ItemStatus::LockedInEscrow(e) => e.offer, _ => OfferId([1; 32]) };
                    w.next(&state, author, EventKind::ExpireEscrow { item: id, offer })
                }
                4 => w.next(&state, author, EventKind::ReportStolen { item: id }),
                5 => w.next(&state, author, EventKind::Recover { item: id }),
                _ => w.next(&state, author, if flag { EventKind::Retire { item: id } } else { EventKind::Transfer { item: ItemId([4; 32]), to: other } }),
            };
            let before = state.clone();
            match w.apply(Some(&state), &event) {
                Ok(next) => {
                    prop_assert_eq!(next.height, before.height + 1);
                    prop_assert_eq!(next.head, event.hash());
                    prop_assert_ne!(&before.status, &ItemStatus::Retired);
                    if next.owner != before.owner {
                        let by_owner_transfer = matches!(event.body.kind, EventKind::Transfer { .. }) && event.body.author == before.owner;
                        let by_settle = matches!(event.body.kind, EventKind::Settle { .. })
                            && pending_offer.is_some_and(|(_, buyer)| buyer == next.owner);
                        prop_assert!(by_owner_transfer || by_settle, "ownership moved by {:?}", event.body.kind.name());
                    }
                    match &next.status {
                        ItemStatus::LockedInEscrow(e) => {
                            prop_assert_eq!(e.seller, next.owner);
                            prop_assert_ne!(e.buyer, e.seller);
                            prop_assert_eq!(e.invoice.outputs.iter().map(|o| o.amount_sats).sum::<u64>(), e.invoice.price_sats);
                            pending_offer = Some((e.offer, e.buyer));
                        }
                        _ => pending_offer = None,
                    }
                    state = next;
                }
                Err(_) => prop_assert_eq!(&state, &before),
            }
        }
    }
}
