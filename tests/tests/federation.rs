//! A real federation of operator processes: certification, agreement, catch-up, crash safety.

use std::time::Duration;

use anyhow::Result;
use hallmark_node::client::Author;
use hallmark_protocol::{
    verify_item_history, CertifiedEvent, EventHash, EventKind, ItemId, ItemState, ManufacturerId,
};
use hallmark_tests::{poll_until, Harness};

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");
const WAIT: Duration = Duration::from_secs(10);

/// Registers a manufacturer through operator `via`; returns its author handle.
async fn manufacturer(h: &Harness, via: usize) -> Result<Author> {
    let m = h.author();
    let reg = m.event(
        0,
        EventHash::ZERO,
        EventKind::RegisterManufacturer {
            name: "Acme Watches".into(),
        },
    );
    h.client(via).submit(&reg, WAIT).await?.certified()?;
    Ok(m)
}

async fn mint(
    h: &Harness,
    via: usize,
    m: &Author,
    serial: &str,
    owner: &Author,
) -> Result<CertifiedEvent> {
    let ev = m.event(
        0,
        EventHash::ZERO,
        EventKind::Mint {
            serial: serial.into(),
            product: "Chronograph".into(),
            owner: owner.key.public_key(),
        },
    );
    h.client(via).submit(&ev, WAIT).await?.certified()
}

fn item_id(m: &Author, serial: &str) -> ItemId {
    ItemId::new(&ManufacturerId::of(&m.key.public_key()), serial)
}

/// Waits until every listed operator serves the same history for `item`, ending at `height`.
async fn converged(
    h: &Harness,
    ops: &[usize],
    item: ItemId,
    height: u64,
) -> Result<Vec<CertifiedEvent>> {
    poll_until(
        Duration::from_secs(30),
        "identical histories on all operators",
        || async {
            let mut first: Option<Vec<CertifiedEvent>> = None;
            for &i in ops {
                let hist = h.client(i).history(&item).await.ok()??;
                if hist.events.last()?.event.body.height != height {
                    return None;
                }
                match &first {
                    None => first = Some(hist.events),
                    Some(f) if *f == hist.events => {}
                    Some(_) => return None,
                }
            }
            first
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn mint_is_certified_and_identical_on_all_four() -> Result<()> {
    let h = Harness::start(BIN, 4, 3).await?;
    let m = manufacturer(&h, 0).await?;
    let owner = h.author();
    let ce = mint(&h, 0, &m, "SN-1", &owner).await?;
    ce.certificate.verify(&h.federation)?;
    let item = item_id(&m, "SN-1");
    let events = converged(&h, &[0, 1, 2, 3], item, 0).await?;
    assert_eq!(events[0].event, ce.event);
    // Every operator serves a history a client verifies on its own.
    for i in 0..4 {
        let hist = h.client(i).history(&item).await?.expect("history");
        let state: ItemState =
            verify_item_history(&h.federation, item, &hist.manufacturer, &hist.events)?;
        assert_eq!(state.owner, owner.key.public_key());
    }
    Ok(())
}
