//! Scanning: the zero-trust verifier against honest, lagging, unreachable and lying operators.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use hallmark_node::api::History;
use hallmark_node::client::{Author, Client};
use hallmark_node::verifier::{scan, OperatorAnswer, ScanReport, Verdict};
use hallmark_protocol::{
    BatchVote, Certificate, CertifiedEvent, EventHash, EventKind, ItemId, ManufacturerId, Vote,
};
use hallmark_tests::{fake_operator, poll_until, Harness};

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");
const WAIT: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_millis(1500);

struct World {
    h: Harness,
    owner: Author,
    item: ItemId,
    history: History,
}

/// A 3-of-4 federation with one item minted and transferred once.
async fn world() -> Result<World> {
    let h = Harness::start(BIN, 4, 3).await?;
    let m = h.author();
    let c = h.client(0);
    c.submit(
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
    let first = h.author();
    let mint = m.event(
        0,
        EventHash::ZERO,
        EventKind::Mint {
            serial: "SN-1".into(),
            product: "Watch".into(),
            owner: first.key.public_key(),
        },
    );
    c.submit(&mint, WAIT).await?.certified()?;
    let item = ItemId::new(&ManufacturerId::of(&m.key.public_key()), "SN-1");
    let state = c.item(&item).await?.expect("minted");
    let owner = h.author();
    c.submit(
        &first.next(
            &state,
            EventKind::Transfer {
                item,
                to: owner.key.public_key(),
            },
        ),
        WAIT,
    )
    .await?
    .certified()?;
    // Wait until every operator has it, so scans are deterministic.
    let history = poll_until(WAIT, "history everywhere", || async {
        let mut last = None;
        for i in 0..4 {
            let hist = h.client(i).history(&item).await.ok()??;
            if hist.events.len() != 2 {
                return None;
            }
            last = Some(hist);
        }
        last
    })
    .await?;
    Ok(World {
        h,
        owner,
        item,
        history,
    })
}

fn clients(urls: &[String]) -> Vec<(usize, Client)> {
    urls.iter()
        .enumerate()
        .map(|(i, u)| (i, Client::new(u, TIMEOUT)))
        .collect()
}

fn real(w: &World) -> Vec<String> {
    w.h.peers.iter().map(|p| p.http.clone()).collect()
}

async fn scan_urls(w: &World, urls: &[String], item: ItemId) -> ScanReport {
    scan(&w.h.federation, &clients(urls), item, TIMEOUT).await
}

fn json(h: &History) -> serde_json::Value {
    serde_json::to_value(h).expect("history serializes")
}

#[tokio::test(flavor = "multi_thread")]
async fn mint_then_scan_is_authentic_with_the_right_owner() -> Result<()> {
    let w = world().await?;
    let r = scan_urls(&w, &real(&w), w.item).await;
    assert_eq!(r.verdict, Verdict::Authentic, "{r:?}");
    let state = r.state.as_ref().expect("state");
    assert_eq!(state.owner, w.owner.key.public_key());
    assert_eq!(
        r.manufacturer.as_ref().map(|m| m.name.as_str()),
        Some("Acme")
    );
    assert_eq!(r.events, 2);
    assert!(r.operators.iter().all(|o| o.agrees));

    // The same through the command line, with its exit code and JSON.
    let uri = format!("hallmark:{}@{}", w.item, w.h.federation.id());
    let out = Command::new(BIN)
        .args(["scan", &uri, "--json", "--federation"])
        .arg(w.h.path().join("federation.toml"))
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["verdict"], "AUTHENTIC");
    assert_eq!(
        v["state"]["owner"],
        serde_json::json!(w.owner.key.public_key())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_for_unknown_tampered_and_weakly_certified_histories() -> Result<()> {
    let w = world().await?;
    // Nobody minted this id.
    let unknown = ItemId([7; 32]);
    let r = scan_urls(&w, &real(&w), unknown).await;
    assert_eq!(r.verdict, Verdict::Unknown);
    let out = Command::new(BIN)
        .args(["scan", &unknown.to_string(), "--federation"])
        .arg(w.h.path().join("federation.toml"))
        .output()?;
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("UNKNOWN"));

    // Each dishonest history, served by the only operator asked: COUNTERFEIT, with the reason.
    let mut tampered = w.history.clone();
    if let EventKind::Transfer { to, .. } = &mut tampered.events[1].event.body.kind {
        *to = Author::new(w.h.federation.id(), hallmark_node::keyfile::generate())
            .key
            .public_key();
    }
    let mut few = w.history.clone();
    few.events[1].certificate.attestations.truncate(2);
    let mut forged = w.history.clone();
    forged.events[0].certificate.attestations[1].signature =
        forged.events[1].certificate.attestations[1].signature;
    let mut fake_maker = w.history.clone();
    fake_maker.manufacturer = fake_maker.events[0].clone();
    let cases = [
        (
            "tampered event",
            tampered,
            "event 1: author signature does not verify",
        ),
        (
            "too few signatures",
            few,
            // (3 commits, or 4 prevotes for a fast certificate)
            "2 signatures, the quorum needs ",
        ),
        (
            "forged operator signature",
            forged,
            "bad signature from operator",
        ),
        (
            "not a manufacturer registration",
            fake_maker,
            "not a register_manufacturer",
        ),
    ];
    for (name, hist, reason) in cases {
        let url = fake_operator(json(&hist)).await?;
        let r = scan_urls(&w, &[url], w.item).await;
        assert_eq!(r.verdict, Verdict::Counterfeit, "{name}: {r:?}");
        assert!(
            r.reasons.iter().any(|x| x.contains(reason)),
            "{name}: {:?}",
            r.reasons
        );
        assert!(r.state.is_none());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_lying_operator_among_four_is_named_and_does_not_fool_the_client() -> Result<()> {
    let w = world().await?;
    // The liar claims the transfer never happened and the item went to its accomplice instead.
    let mut lie = w.history.clone();
    let accomplice = Author::new(w.h.federation.id(), hallmark_node::keyfile::generate());
    if let EventKind::Transfer { to, .. } = &mut lie.events[1].event.body.kind {
        *to = accomplice.key.public_key();
    }
    let liar = fake_operator(json(&lie)).await?;
    let mut urls = real(&w);
    urls[3] = liar;
    let r = scan_urls(&w, &urls, w.item).await;
    assert_eq!(r.verdict, Verdict::Authentic, "{r:?}");
    assert_eq!(
        r.state.as_ref().map(|s| s.owner),
        Some(w.owner.key.public_key())
    );
    assert!(matches!(
        r.operators[3].answer,
        OperatorAnswer::Invalid { .. }
    ));
    assert!(
        r.reasons
            .iter()
            .any(|x| x.starts_with("operator 3 served a history that fails verification")),
        "{:?}",
        r.reasons
    );

    // A liar that hides the transfer (serves a true but stale prefix) is reported as behind, and
    // the verdict rests on the longest verified history.
    let mut stale = w.history.clone();
    stale.events.truncate(1);
    urls[3] = fake_operator(json(&stale)).await?;
    let r = scan_urls(&w, &urls, w.item).await;
    assert_eq!(r.verdict, Verdict::Authentic);
    assert_eq!(
        r.state.as_ref().map(|s| s.owner),
        Some(w.owner.key.public_key())
    );
    assert!(
        r.reasons.iter().any(|x| x.contains("operator 3 is behind")),
        "{:?}",
        r.reasons
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forked_quorum_is_inconsistent() -> Result<()> {
    let w = world().await?;
    // Three colluding operators (beyond the one fault 3-of-4 tolerates) certify a conflicting
    // transfer; one of them serves that fork.
    // The owner equivocates at height 2, and three colluding operators (beyond the one fault
    // 3-of-4 tolerates) certify the event the honest federation did not.
    let state = w.h.client(0).item(&w.item).await?.expect("item");
    let stranger = Author::new(w.h.federation.id(), hallmark_node::keyfile::generate());
    let fork_event = w.owner.next(
        &state,
        EventKind::Transfer {
            item: w.item,
            to: stranger.key.public_key(),
        },
    );
    let vote = Vote::commit(fork_event.hash(), 0);
    let atts = (0..3).map(|i| {
        BatchVote::sign(
            &w.h.operator_key(i).expect("key"),
            w.h.federation.id(),
            vec![vote],
        )
        .expect("batch")
        .attestation(0)
        .expect("att")
    });
    let cert = Certificate::assemble(&w.h.federation, vote, atts)?;
    let mut fork = w.history.clone();
    fork.events.push(CertifiedEvent {
        event: fork_event,
        certificate: cert,
    });
    // Meanwhile the honest chain moved on differently at the same height.
    w.h.client(0)
        .submit(
            &w.owner
                .next(&state, EventKind::ReportStolen { item: w.item }),
            WAIT,
        )
        .await?
        .certified()?;
    poll_until(WAIT, "operator 1 has height 2", || async {
        (w.h.client(1).item(&w.item).await.ok()??.height == 2).then_some(())
    })
    .await?;
    let mut urls = real(&w);
    urls[3] = fake_operator(json(&fork)).await?;
    let r = scan_urls(&w, &urls, w.item).await;
    assert_eq!(r.verdict, Verdict::Inconsistent, "{r:?}");
    assert!(
        r.reasons
            .iter()
            .any(|x| x.contains("conflicting certified histories") && x.contains('3')),
        "{:?}",
        r.reasons
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_succeeds_with_one_operator_down_within_the_timeout() -> Result<()> {
    let mut w = world().await?;
    // A hung operator (SIGSTOP: connections open, no answers) and a dead one.
    w.h.pause(2)?;
    let started = Instant::now();
    let r = scan_urls(&w, &real(&w), w.item).await;
    let took = started.elapsed();
    w.h.resume(2)?;
    assert_eq!(r.verdict, Verdict::Authentic, "{r:?}");
    assert!(matches!(
        r.operators[2].answer,
        OperatorAnswer::Unreachable { .. }
    ));
    assert!(
        took < TIMEOUT + Duration::from_millis(1000),
        "scan took {took:?} with a {TIMEOUT:?} timeout"
    );

    w.h.kill(1)?;
    let r = scan_urls(&w, &real(&w), w.item).await;
    assert_eq!(r.verdict, Verdict::Authentic);
    assert!(matches!(
        r.operators[1].answer,
        OperatorAnswer::Unreachable { .. }
    ));
    Ok(())
}
