//! Partitions between operators on loopback, made by stopping processes (SIGSTOP: their
//! connections stay open but nothing is read or answered): with a quorum connected the
//! federation goes on and the cut-off minority catches up after healing; without a quorum
//! nothing is certified, and healing finishes the work — never with conflicting certificates.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hallmark_node::client::{Author, SubmitOutcome};
use hallmark_protocol::{EventHash, EventKind, ItemId, ManufacturerId};
use hallmark_tests::{poll_until, Harness};

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");
const WAIT: Duration = Duration::from_secs(10);

async fn registered(h: &Harness) -> Result<Author> {
    let m = h.author();
    h.client(0)
        .submit(
            &m.event(
                0,
                EventHash::ZERO,
                EventKind::RegisterManufacturer {
                    name: "Acme".into(),
                },
            ),
            WAIT,
        )
        .await?
        .certified()?;
    Ok(m)
}

fn mint(m: &Author, owner: &Author, serial: &str) -> hallmark_protocol::Event {
    m.event(
        0,
        EventHash::ZERO,
        EventKind::Mint {
            serial: serial.into(),
            product: "Watch".into(),
            owner: owner.key.public_key(),
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_minority_falls_behind_then_catches_up() -> Result<()> {
    let h = Harness::start(BIN, 4, 3).await?;
    let m = registered(&h).await?;
    let owner = h.author();
    h.pause(3)?;
    let mut hashes = Vec::new();
    for k in 0..20 {
        let ev = mint(&m, &owner, &format!("P-{k}"));
        let ce = h.client(k % 3).submit(&ev, WAIT).await?.certified()?;
        hashes.push(ce.certificate.event);
    }
    h.resume(3)?;
    let c3 = h.client(3);
    poll_until(Duration::from_secs(20), "operator 3 caught up", || async {
        for hash in &hashes {
            c3.event(hash).await.ok()??;
        }
        Some(())
    })
    .await?;
    let len0 = h.client(0).info().await?["log_len"].clone();
    ensure!(c3.info().await?["log_len"] == len0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_quorum_nothing_is_certified_and_healing_decides_once() -> Result<()> {
    let h = Harness::start(BIN, 4, 3).await?;
    let m = registered(&h).await?;
    let owner = h.author();
    let ce = h
        .client(0)
        .submit(&mint(&m, &owner, "SN-1"), WAIT)
        .await?
        .certified()?;
    let item = ItemId::new(&ManufacturerId::of(&m.key.public_key()), "SN-1");
    // Operator 0 answered once it held the certificate; the others assemble theirs a moment
    // later, and one that has not yet would refuse the transfer below as ahead of its chain.
    poll_until(WAIT, "the mint on every operator", || async {
        for i in 0..4 {
            h.client(i).item(&item).await.ok()??;
        }
        Some(())
    })
    .await?;
    // Two against two: neither side has 3 of 4. The owner equivocates across the cut.
    h.pause(2)?;
    h.pause(3)?;
    let (to_a, to_b) = (h.author(), h.author());
    let a = owner.event(
        1,
        ce.certificate.event,
        EventKind::Transfer {
            item,
            to: to_a.key.public_key(),
        },
    );
    let b = owner.event(
        1,
        ce.certificate.event,
        EventKind::Transfer {
            item,
            to: to_b.key.public_key(),
        },
    );
    let short = Duration::from_millis(1500);
    let (c0, c1) = (h.client(0), h.client(1));
    let (ra, rb) = tokio::join!(c0.submit(&a, short), c1.submit(&b, short));
    for r in [ra?, rb?] {
        ensure!(
            matches!(r, SubmitOutcome::Pending(_)),
            "no certificate without a quorum: {r:?}"
        );
    }
    for i in 0..2 {
        ensure!(h.client(i).item(&item).await?.context("item")?.height == 0);
    }
    h.resume(2)?;
    h.resume(3)?;
    // After healing, the federation decides the height once, the same way everywhere.
    let head = poll_until(
        Duration::from_secs(30),
        "one transfer everywhere",
        || async {
            let mut heads = Vec::new();
            for i in 0..4 {
                let s = h.client(i).item(&item).await.ok()??;
                (s.height == 1).then_some(())?;
                heads.push(s.head);
            }
            heads.windows(2).all(|w| w[0] == w[1]).then(|| heads[0])
        },
    )
    .await?;
    ensure!(head == a.hash() || head == b.hash());
    let loser = if head == a.hash() { b.hash() } else { a.hash() };
    for i in 0..4 {
        ensure!(
            h.client(i).event(&loser).await?.is_none(),
            "two certificates"
        );
        ensure!(h.client(i).info().await?["evidence_records"] == 0);
    }
    Ok(())
}
