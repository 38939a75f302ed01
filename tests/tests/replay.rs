//! Replays and mutations against a running federation: every past event submitted again to
//! every operator, every bit of an event's signature and of its canonical bytes flipped, events
//! for another federation. Nothing is certified twice, nothing forged is certified, and every
//! operator's log and state are unchanged afterwards.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bitcoin::hashes::Hash as _;
use hallmark_node::client::Author;
use hallmark_protocol::{
    compute_invoice, encode, CertifiedEvent, Event, EventHash, EventKind, FederationId, ItemId,
    ItemState, ManufacturerId, OfferId,
};
use hallmark_tests::{poll_until, Harness};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");
const WAIT: Duration = Duration::from_secs(10);

async fn certify(h: &Harness, via: usize, ev: &Event) -> Result<CertifiedEvent> {
    h.client(via).submit(ev, WAIT).await?.certified()
}

/// Every operator's whole log, its length and the item's state: what must not change.
async fn snapshot(
    h: &Harness,
    item: &ItemId,
) -> Result<Vec<(u64, Vec<CertifiedEvent>, ItemState)>> {
    let mut out = Vec::new();
    for i in 0..h.len() {
        let c = h.client(i);
        let (len, log) = c.log(0, 1_000).await?;
        out.push((len, log, c.item(item).await?.context("item")?));
    }
    Ok(out)
}

/// A life with every kind of event: registration, mint, transfer, stolen and recovered, an offer
/// accepted into escrow and settled (mock payments), and a second transfer. Returns the item
/// and its owner.
async fn a_full_life(h: &Harness) -> Result<(ItemId, Author)> {
    let maker = h.author();
    let (alice, bob) = (h.author(), h.author());
    let registered = certify(
        h,
        0,
        &maker.event(
            0,
            EventHash::ZERO,
            EventKind::RegisterManufacturer {
                name: "Acme".into(),
            },
        ),
    )
    .await?;
    // The mint goes to operator 1: it must have applied the registration (operator 0 answered
    // when it had the certificate; the others assemble theirs from the same votes a moment later).
    let hash = registered.certificate.event;
    poll_until(WAIT, "the registration at operator 1", || async {
        h.client(1).event(&hash).await.ok()?.map(|_| ())
    })
    .await?;
    let item = ItemId::new(&ManufacturerId::of(&maker.key.public_key()), "SN-1");
    certify(
        h,
        1,
        &maker.event(
            0,
            EventHash::ZERO,
            EventKind::Mint {
                serial: "SN-1".into(),
                product: "Chronograph".into(),
                owner: alice.key.public_key(),
            },
        ),
    )
    .await?;
    // Operator `i`'s view of the item once it has applied `height`.
    let state = |i: usize, height: u64| async move {
        poll_until(WAIT, "item state at the height", || async {
            let s = h.client(i).item(&item).await.ok()??;
            (s.height == height).then_some(s)
        })
        .await
    };
    let s = state(2, 0).await?;
    let to_bob = EventKind::Transfer {
        item,
        to: bob.key.public_key(),
    };
    let ce = certify(h, 2, &alice.next(&s, to_bob)).await?;
    ensure!(ce.event.body.height == 1);
    let s = state(3, 1).await?;
    certify(h, 3, &bob.next(&s, EventKind::ReportStolen { item })).await?;
    let s = state(0, 2).await?;
    certify(h, 0, &bob.next(&s, EventKind::Recover { item })).await?;
    let s = state(1, 3).await?;
    let offer = alice.event(
        0,
        EventHash::ZERO,
        EventKind::CreateOffer {
            item,
            item_height: s.height + 1,
            seller: s.owner,
            price_sats: 1_000_000,
        },
    );
    let offer_id = OfferId::from(certify(h, 1, &offer).await?.certificate.event);
    let invoice = compute_invoice(
        &h.federation,
        offer_id,
        1_000_000,
        bitcoin::ScriptBuf::new_op_return([7u8; 4]),
        1_000,
    )?;
    let accept = bob.next(
        &s,
        EventKind::AcceptOffer {
            offer: Box::new(offer),
            invoice,
        },
    );
    certify(h, 1, &accept).await?;
    let s = state(2, 4).await?;
    let settle = EventKind::Settle {
        item,
        offer: offer_id,
        payment: bitcoin::Txid::from_byte_array([3; 32]),
    };
    certify(h, 2, &alice.next(&s, settle)).await?;
    let s = state(3, 5).await?;
    ensure!(s.owner == alice.key.public_key(), "the buyer owns it");
    let back = EventKind::Transfer {
        item,
        to: bob.key.public_key(),
    };
    certify(h, 3, &alice.next(&s, back)).await?;
    Ok((item, bob))
}

/// Submits raw JSON; returns the HTTP status and the error code if any.
async fn post(http: &reqwest::Client, base: &str, body: &Value) -> Result<(u16, String)> {
    let r = http
        .post(format!("{base}/v1/events?wait_ms=2000"))
        .json(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let v: Value = r.json().await?;
    Ok((
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_and_mutations_are_rejected_and_change_nothing() -> Result<()> {
    let h = Harness::start_with(BIN, 4, 3, |o| o.http_rate_per_sec = 0).await?;
    let (item, owner) = a_full_life(&h).await?;
    // All four hold the same 9 events: registration, offer, and the item's mint, transfer,
    // stolen, recovered, accept, settle, transfer.
    let before = poll_until(WAIT, "identical logs on all four", || async {
        let s = snapshot(&h, &item).await.ok()?;
        let logs_equal = s.windows(2).all(|w| w[0].1 == w[1].1);
        (s[0].0 == 9 && logs_equal).then_some(s)
    })
    .await?;
    let log = before[0].1.clone();

    // 1. Every past event, to every operator: acknowledged with the certificate it already has
    //    (idempotent), never certified a second time.
    for ce in &log {
        for i in 0..h.len() {
            let again = h.client(i).submit(&ce.event, WAIT).await?.certified()?;
            ensure!(
                again.certificate.event == ce.certificate.event,
                "operator {i} answered a replay with another event"
            );
        }
    }

    // 2. Every bit of one event's signature flipped: 512 forgeries, all refused.
    let http = reqwest::Client::new();
    let base = h.client(0).base().to_string();
    let s = h.client(0).item(&item).await?.context("item")?;
    let genuine = owner.next(&s, EventKind::Retire { item });
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for bit in 0..genuine.signature.0.len() * 8 {
        let mut forged = genuine.clone();
        forged.signature.0[bit / 8] ^= 1 << (bit % 8);
        let (status, code) = post(&http, &base, &serde_json::to_value(&forged)?).await?;
        ensure!(
            (400..500).contains(&status),
            "signature bit {bit} flipped: {status} {code}"
        );
        *codes.entry(code).or_default() += 1;
    }
    ensure!(
        codes.keys().all(|c| c == "bad_signature"),
        "codes: {codes:?}"
    );

    // 3. Every bit of the event's canonical bytes flipped: undecodable, or decoded into an event
    //    that is refused (signature, federation, height, author...). Never certified.
    let bytes = encode(&genuine);
    let mut decoded = 0;
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let Ok(ev) = hallmark_protocol::decode::<Event>(&b) else {
            continue;
        };
        if ev == genuine {
            continue;
        }
        decoded += 1;
        let (status, code) = post(&http, &base, &serde_json::to_value(&ev)?).await?;
        ensure!(
            (400..500).contains(&status),
            "byte {} bit {} flipped: {status} {code}",
            bit / 8,
            bit % 8
        );
    }
    ensure!(decoded > 100, "most flips still decode ({decoded})");

    // 4. The genuine event, re-signed for another federation: refused.
    let mut other = genuine.clone();
    other.body.federation = FederationId([9; 32]);
    let other = other.body.sign(&owner.key)?;
    let (status, code) = post(&http, &base, &serde_json::to_value(&other)?).await?;
    ensure!(status == 400 || status == 422, "{status}");
    ensure!(code == "wrong_federation", "{code}");

    // Nothing changed anywhere: same log length, same log, same item state.
    let after = snapshot(&h, &item).await?;
    ensure!(after == before, "an operator's log or state changed");
    // And the genuine event still goes through: the item was not left half-written.
    certify(&h, 0, &genuine).await?;
    Ok(())
}
