//! A Byzantine operator: operator 3's process is replaced by a peer holding its real key that
//! answers catch-up requests with forged histories, votes for two conflicting events, sends
//! oversize gossip, catch-up requests and responses, floods an operator with requests, gossips
//! garbage, relays forged prevotes, or shows its round-0 prevote to one operator only. The three
//! honest operators (a quorum of 3-of-4) must not be fooled, must record the double vote as
//! evidence, must disconnect the bad peer, and must go on certifying.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hallmark_node::client::{Author, Client};
use hallmark_p2p::{P2pConfig, P2pEvent, P2pHandle};
use hallmark_protocol::encoding::encode;
use hallmark_protocol::wire::{Gossip, LogEntry, Rpc, RpcResponse};
use hallmark_protocol::{
    BatchVote, Certificate, CertifiedEvent, Event, EventHash, EventKind, ItemId, ManufacturerId,
    Phase, SigningKey, Vote,
};
use hallmark_tests::{poll_until, Harness};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");
/// Long enough for catch-up rounds and redials on a machine busy with other tests.
const WAIT: Duration = Duration::from_secs(20);
const BYZANTINE: usize = 3;
/// An oversize gossip message: over the 4 MiB every operator accepts.
const OVERSIZE_GOSSIP: usize = hallmark_p2p::MAX_GOSSIP_BYTES + (1 << 20);

/// Operator 3's identity on the network, driven by the test.
struct Byzantine {
    p2p: P2pHandle,
    key: SigningKey,
    cancel: CancellationToken,
    /// What it answers every catch-up request with.
    answer: Arc<Mutex<Vec<u8>>>,
}

impl Drop for Byzantine {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Stops operator 3 and puts the Byzantine peer in its place. It answers every catch-up request
/// with `forged`.
async fn impersonate(h: &mut Harness, forged: RpcResponse) -> Result<Byzantine> {
    h.stop(BYZANTINE)?;
    let key = h.operator_key(BYZANTINE)?;
    let answer = Arc::new(Mutex::new(encode(&forged)));
    let (p2p, cancel) = connect(h, &key, answer.clone()).await?;
    Ok(Byzantine {
        p2p,
        key,
        cancel,
        answer,
    })
}

/// Starts the Byzantine peer's network on operator 3's address and waits until the honest
/// operators are connected to it.
async fn connect(
    h: &Harness,
    key: &SigningKey,
    answer: Arc<Mutex<Vec<u8>>>,
) -> Result<(P2pHandle, CancellationToken)> {
    let cancel = CancellationToken::new();
    let (p2p, mut events, _task) = hallmark_p2p::spawn(
        P2pConfig {
            secret: key.secret_bytes(),
            listen: h.peers[BYZANTINE].address.clone(),
            members: h
                .peers
                .iter()
                .filter(|p| p.index != BYZANTINE)
                .map(|p| (p.peer_id, p.address.clone()))
                .collect(),
            topic: format!("hallmark/{}/v1", h.federation.id()),
            gossip_limit: OVERSIZE_GOSSIP + 1024,
        },
        cancel.clone(),
    )
    .await?;
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let P2pEvent::Request { reply, .. } = ev {
                let bytes = answer.lock().expect("not poisoned").clone();
                let _ = reply.send(bytes);
            }
        }
    });
    for i in 0..BYZANTINE {
        h.wait_connected(i, 3).await?;
    }
    Ok((p2p, cancel))
}

impl Byzantine {
    /// Gossips operator 3's prevote and commit for `ev` in round 0, with `ev` itself.
    async fn equivocate(&self, h: &Harness, ev: &Event, nonce: u64) -> Result<()> {
        let votes = vec![Vote::prevote(ev.hash(), 0), Vote::commit(ev.hash(), 0)];
        self.gossip(h, vec![ev.clone()], votes, nonce).await
    }

    /// Gossips `events` (as an operator sends them, ahead of its votes), then a batch of
    /// operator 3's `votes`.
    async fn gossip(
        &self,
        h: &Harness,
        events: Vec<Event>,
        votes: Vec<Vote>,
        nonce: u64,
    ) -> Result<()> {
        let batch = BatchVote::sign(&self.key, h.federation.id(), votes)?.to_batch_vote();
        if !events.is_empty() {
            self.p2p.broadcast(encode(&Gossip::Events(events)));
        }
        let msg = Gossip::Votes {
            checkpoints: Vec::new(),
            batch,
            nonce,
        };
        self.p2p.broadcast(encode(&msg));
        Ok(())
    }
}

/// `N` transfers of `item` by its `owner` to `N` different new owners, at the same height.
async fn conflicting_transfers<const N: usize>(
    h: &Harness,
    c: &Client,
    owner: &Author,
    item: &ItemId,
) -> Result<[Event; N]> {
    let state = c.item(item).await?.context("minted")?;
    Ok(std::array::from_fn::<_, N, _>(|_| h.author()).map(|to| {
        owner.next(
            &state,
            EventKind::Transfer {
                item: *item,
                to: to.key.public_key(),
            },
        )
    }))
}

/// Waits until every honest operator holds at least `records` pieces of evidence.
async fn await_evidence(h: &Harness, records: u64) -> Result<()> {
    for i in 0..BYZANTINE {
        poll_until(WAIT, "evidence of the double vote", || async {
            let info = h.client(i).info().await.ok()?;
            (info["evidence_records"].as_u64()? >= records).then_some(())
        })
        .await
        .with_context(|| h.log_tail(i))?;
    }
    Ok(())
}

/// Waits until every honest operator holds the same event at height 1 of `item`; returns it.
async fn certified_everywhere(h: &Harness, item: &ItemId) -> Result<EventHash> {
    poll_until(WAIT, "one transfer certified everywhere", || async {
        let mut heads = Vec::new();
        for i in 0..BYZANTINE {
            let s = h.client(i).item(item).await.ok()??;
            (s.height == 1).then_some(())?;
            heads.push(s.head);
        }
        heads.windows(2).all(|w| w[0] == w[1]).then(|| heads[0])
    })
    .await
}

/// Waits until all four operators hold as many events as operator 0 holds now.
async fn all_hold_what_operator_0_holds(h: &Harness, what: &str) -> Result<()> {
    let log_len = h.client(0).info().await?["log_len"].clone();
    for i in 0..4 {
        poll_until(WAIT, what, || async {
            (h.client(i).info().await.ok()?["log_len"] == log_len).then_some(())
        })
        .await?;
    }
    Ok(())
}

/// A catch-up response naming nothing: an empty log.
fn empty_log() -> RpcResponse {
    RpcResponse {
        log_len: 0,
        events: Vec::new(),
        next_checkpoint: 0,
        checkpoints: Vec::new(),
        log: Vec::new(),
    }
}

/// Registers `maker` as a manufacturer.
async fn register(c: &Client, maker: &Author) -> Result<()> {
    c.submit(
        &maker.event(
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
    Ok(())
}

/// A mint of watch `serial` by `maker` to `owner` (signed, not submitted).
fn mint_event(maker: &Author, owner: &Author, serial: &str) -> Event {
    maker.event(
        0,
        EventHash::ZERO,
        EventKind::Mint {
            serial: serial.into(),
            product: "Watch".into(),
            owner: owner.key.public_key(),
        },
    )
}

/// Mints item `serial` of the registered `maker` to `owner`.
async fn minted(c: &Client, maker: &Author, owner: &Author, serial: &str) -> Result<ItemId> {
    let mint = mint_event(maker, owner, serial);
    c.submit(&mint, WAIT).await?.certified()?;
    Ok(ItemId::new(
        &ManufacturerId::of(&maker.key.public_key()),
        serial,
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_byzantine_operator_fools_nobody_and_is_disconnected() -> Result<()> {
    let mut h = Harness::start(BIN, 4, 3).await?;
    let (maker, owner) = (h.author(), h.author());
    let c = h.client(0);
    register(&c, &maker).await?;
    let item = minted(&c, &maker, &owner, "SN-1").await?;

    // The forged history it serves: an item minted by a key that never registered, certified
    // by operator 3 alone (its signature is real, but one is not a quorum). (A forger claiming a
    // longer log is asked again at once and banned within milliseconds; here each honest
    // operator asks once, so the other misbehaviours can be shown.)
    let forger = h.author();
    let fake_mint = forger.event(
        0,
        EventHash::ZERO,
        EventKind::Mint {
            serial: "FAKE-1".into(),
            product: "Counterfeit".into(),
            owner: forger.key.public_key(),
        },
    );
    let key3 = h.operator_key(BYZANTINE)?;
    let vote = Vote::commit(fake_mint.hash(), 0);
    let att = BatchVote::sign(&key3, h.federation.id(), vec![vote])?
        .attestation(0)
        .context("attestation")?;
    // Its log names the fake event (honest operators then fetch it by hash: it answers every
    // request with the same response, so they get the forged certified event).
    let forged = RpcResponse {
        log_len: 1,
        log: vec![LogEntry {
            event: fake_mint.hash(),
            round: 0,
            phase: Phase::Commit,
            signers: vec![3, 3, 3],
        }],
        events: vec![CertifiedEvent {
            event: fake_mint.clone(),
            certificate: Certificate {
                event: fake_mint.hash(),
                round: 0,
                phase: Phase::Commit,
                attestations: vec![att.clone(), att.clone(), att],
            },
        }],
        next_checkpoint: 0,
        checkpoints: Vec::new(),
    };
    let fake_item = ItemId::new(&ManufacturerId::of(&forger.key.public_key()), "FAKE-1");
    // Every operator holds the mint before operator 3 is replaced (the one asked answers first;
    // the others certify a moment later).
    all_hold_what_operator_0_holds(&h, "the mint certified everywhere").await?;
    let log_len = c.info().await?["log_len"].clone();
    let byz = impersonate(&mut h, forged).await?;

    // 1. Forged catch-up responses are refused (and counted against the sender).
    poll_until(WAIT, "forged responses counted", || async {
        (h.metric(0, "hallmark_p2p_offences_total").await.ok()? >= 1.0).then_some(())
    })
    .await?;
    for i in 0..BYZANTINE {
        ensure!(
            h.client(i).item(&fake_item).await?.is_none(),
            "operator {i} took the forged item"
        );
        ensure!(h.client(i).info().await?["log_len"] == log_len);
    }
    // From here on it serves an empty log: every forged answer is an offence, and enough of
    // them would get it banned before the steps below.
    let quiet = encode(&empty_log());
    *byz.answer.lock().expect("not poisoned") = quiet.clone();

    // 2. Equivocation: operator 3 prevotes and commits two conflicting transfers of one item,
    //    sent at once (each honest operator may see either first) ...
    let late_item = minted(&c, &maker, &owner, "SN-LATE").await?;
    let later_item = minted(&c, &maker, &owner, "SN-LATER").await?;
    let [a, b] = conflicting_transfers(&h, &c, &owner, &item).await?;
    for (n, ev) in [&a, &b].into_iter().enumerate() {
        byz.equivocate(&h, ev, n as u64).await?;
    }
    await_evidence(&h, 1).await?;
    // The honest three settle on one of the two, identically; never both.
    let winner = certified_everywhere(&h, &item).await?;
    ensure!(winner == a.hash() || winner == b.hash());
    for i in 0..BYZANTINE {
        let loser = if winner == a.hash() { &b } else { &a };
        ensure!(h.client(i).event(&loser.hash()).await?.is_none());
    }
    //    ... and the second one only after the first is certified everywhere: an operator that
    //    decided before a conflicting vote reached it still records the evidence.
    let [a, b] = conflicting_transfers(&h, &c, &owner, &late_item).await?;
    byz.equivocate(&h, &a, 2).await?;
    ensure!(certified_everywhere(&h, &late_item).await? == a.hash());
    byz.equivocate(&h, &b, 3).await?;
    await_evidence(&h, 2).await?;
    for i in 0..BYZANTINE {
        ensure!(h.client(i).event(&b.hash()).await?.is_none());
    }
    //    ... and, once the first is certified, the votes for the second before the second itself.
    let [a, b] = conflicting_transfers(&h, &c, &owner, &later_item).await?;
    byz.equivocate(&h, &a, 4).await?;
    ensure!(certified_everywhere(&h, &later_item).await? == a.hash());
    let (prevote, commit) = (Vote::prevote(b.hash(), 0), Vote::commit(b.hash(), 0));
    byz.gossip(&h, Vec::new(), vec![prevote, commit], 5).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // (It goes just ahead of a repeat of a vote already seen: only the held votes can conflict.)
    let repeat = Vote::prevote(a.hash(), 0);
    byz.gossip(&h, vec![b.clone()], vec![repeat], 6).await?;
    await_evidence(&h, 3).await?;

    // 3. Oversize messages. Gossip over the 4 MiB limit is refused by every honest operator from
    //    its frame's length prefix (nothing is buffered: the stream is dropped) and counted as an
    //    offence; catch-up responses and requests over the 16 MiB limit are refused by the
    //    request codec and counted too. The honest operators go on certifying and their memory
    //    does not follow the sizes.
    let offences = |i: usize| h.metric(i, "hallmark_p2p_offences_total");
    let mut before = Vec::new();
    let mut rss_before = Vec::new();
    for i in 0..BYZANTINE {
        before.push((i, offences(i).await?));
        rss_before.push((i, h.rss_mb(i)?));
    }
    ensure!(
        byz.p2p.broadcast(vec![7; OVERSIZE_GOSSIP]) == BYZANTINE,
        "the oversize message is queued to the three honest operators"
    );
    *byz.answer.lock().expect("not poisoned") = vec![0; hallmark_p2p::MAX_RPC_BYTES as usize + 1];
    // Every honest operator asks each peer in turn for its log, so each soon gets one.
    let logged = |i: usize, what: &str| {
        std::fs::read_to_string(h.operator_dir(i).join("operator.log"))
            .is_ok_and(|log| log.contains(what))
    };
    for &(i, before) in &before {
        poll_until(
            WAIT,
            "oversize gossip and catch-up response counted",
            || async {
                // (One offence for the gossip message, at least one for a catch-up response.)
                let counted = offences(i).await.ok()? >= before + 2.0;
                let refused = format!(
                    "bytes refused (the limit is {}): stream dropped",
                    hallmark_p2p::MAX_GOSSIP_BYTES
                );
                let gossip = logged(i, &refused);
                let catchup = logged(i, "catch-up response over the size limit");
                (counted && gossip && catchup).then_some(())
            },
        )
        .await
        .with_context(|| h.log_tail(i))?;
    }
    let op1 = h.peers[1].peer_id;
    let counted = offences(1).await?;
    let big_request = vec![0; hallmark_p2p::MAX_RPC_BYTES as usize + 1];
    ensure!(
        byz.p2p.request(op1, big_request).await.is_err(),
        "an oversize request is not answered"
    );
    poll_until(WAIT, "an oversize catch-up request counted", || async {
        let counted = offences(1).await.ok()? > counted;
        (counted && logged(1, "catch-up request empty or over the size limit")).then_some(())
    })
    .await
    .with_context(|| h.log_tail(1))?;
    minted(&c, &maker, &owner, "SN-BIG").await?;
    for &(i, before) in &rss_before {
        let rss = h.rss_mb(i)?;
        println!("operator {i}: RSS {before:.1} MB -> {rss:.1} MB");
        // A response is read up to the 16 MiB limit before it is refused, a few at a time.
        ensure!(
            rss - before < 96.0,
            "operator {i}'s memory grew with the oversize messages: {before:.1} MB -> {rss:.1} MB"
        );
    }
    *byz.answer.lock().expect("not poisoned") = quiet;
    // (The honest operators dropped the Byzantine peer's gossip streams with its oversize
    // message; its writers open new ones, which step 5 relies on.)

    // 4. A request flood at operator 0: served up to its allowance (a burst of 200, then 50/s),
    //    then refused; the flooder is disconnected. The flooder can only send as fast as the
    //    operator answers (at most 100 streams in flight), so on a loaded machine one wave may
    //    not outrun the refill: it keeps flooding until banned (bounded).
    let op0 = h.peers[0].peer_id;
    let rpc = encode(&Rpc::LogRange { from: 0, limit: 1 });
    let started = std::time::Instant::now();
    let mut refused = 0;
    loop {
        let floods = (0..600).map(|_| byz.p2p.request(op0, rpc.clone()));
        let answers = futures::future::join_all(floods).await;
        refused += answers.iter().filter(|r| r.is_err()).count();
        if h.metric(0, "hallmark_p2p_members_banned_total").await? >= 1.0 {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "operator 0 did not ban the flooder within 30 s ({refused} requests refused)"
        );
    }
    ensure!(refused > 0, "some of the flood's requests are refused");

    // 5. Garbage gossip: every honest operator rejects it and disconnects the sender.
    for n in 0..40u32 {
        let mut junk = vec![0xff; 64];
        junk.extend_from_slice(&n.to_be_bytes());
        byz.p2p.broadcast(junk);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..BYZANTINE {
        poll_until(WAIT, "the Byzantine peer is cut off", || async {
            let info = h.client(i).info().await.ok()?;
            (info["peers_connected"].as_i64()? == 2).then_some(())
        })
        .await
        .with_context(|| h.log_tail(i))?;
    }
    for i in 1..BYZANTINE {
        ensure!(h.metric(i, "hallmark_p2p_members_banned_total").await? >= 1.0);
    }

    // The honest quorum goes on: a new item is certified by the three alone.
    minted(&c, &maker, &owner, "SN-2").await?;
    for i in 0..BYZANTINE {
        ensure!(h.client(i).info().await?["evidence_records"].as_u64() >= Some(3));
    }
    Ok(())
}

/// A federation of four with a registered manufacturer, and a valid mint of `serial` by it
/// that nobody submitted.
async fn with_an_unsubmitted_mint(serial: &str) -> Result<(Harness, Event)> {
    let h = Harness::start(BIN, 4, 3).await?;
    let (maker, owner) = (h.author(), h.author());
    register(&h.client(0), &maker).await?;
    all_hold_what_operator_0_holds(&h, "the registration certified everywhere").await?;
    Ok((h, mint_event(&maker, &owner, serial)))
}

/// Votes that come before their event are held for it; when the event is then certified
/// without becoming a candidate (its certificate came by catch-up first), they are dropped, not
/// held for ever.
#[tokio::test(flavor = "multi_thread")]
async fn votes_held_for_an_event_go_when_its_certificate_comes_first() -> Result<()> {
    let (mut h, mint) = with_an_unsubmitted_mint("SN-EARLY").await?;
    // A real certificate for it: commit votes signed with the keys of operators 0, 2 and 3 (a
    // quorum).
    let commit = Vote::commit(mint.hash(), 0);
    let mut attestations = Vec::new();
    for i in [0, 2, BYZANTINE] {
        let batch = BatchVote::sign(&h.operator_key(i)?, h.federation.id(), vec![commit])?;
        attestations.push(batch.attestation(0).context("attestation")?);
    }
    let certified = CertifiedEvent {
        event: mint.clone(),
        certificate: Certificate {
            event: mint.hash(),
            round: 0,
            phase: Phase::Commit,
            attestations,
        },
    };
    certified.verify(&h.federation)?;
    let byz = impersonate(&mut h, empty_log()).await?;
    // Operator 3's votes for the mint, without the mint: held by every honest operator.
    let votes = vec![Vote::prevote(mint.hash(), 0), commit];
    byz.gossip(&h, Vec::new(), votes, 0).await?;
    let held = |i: usize| h.metric(i, "hallmark_consensus_held_votes");
    for i in 0..BYZANTINE {
        poll_until(WAIT, "the early votes held", || async {
            (held(i).await.ok()? >= 2.0).then_some(())
        })
        .await
        .with_context(|| h.log_tail(i))?;
    }
    // Its log now names the mint, which the honest operators fetch and take certified.
    *byz.answer.lock().expect("not poisoned") = encode(&RpcResponse {
        log_len: 1,
        log: vec![LogEntry {
            event: mint.hash(),
            round: 0,
            phase: Phase::Commit,
            signers: vec![0, 2, 3],
        }],
        events: vec![certified],
        ..empty_log()
    });
    for i in 0..BYZANTINE {
        poll_until(WAIT, "the mint certified by catch-up", || async {
            h.client(i).event(&mint.hash()).await.ok()?.map(|_| ())
        })
        .await
        .with_context(|| h.log_tail(i))?;
        poll_until(WAIT, "no votes held", || async {
            (held(i).await.ok()? == 0.0).then_some(())
        })
        .await
        .with_context(|| h.log_tail(i))?;
    }
    *byz.answer.lock().expect("not poisoned") = encode(&empty_log());
    Ok(())
}

/// Round-0 prevotes relayed at a stalled slot (`Gossip::Relayed`) count as their signers'
/// votes, whoever relays them; a relayed prevote whose attestation does not verify is refused
/// and counts as an offence of the relaying peer.
#[tokio::test(flavor = "multi_thread")]
async fn relayed_prevotes_count_as_their_signers_and_forged_ones_are_offences() -> Result<()> {
    let (mut h, mint) = with_an_unsubmitted_mint("SN-RELAYED").await?;
    // Operator 0's round-0 prevote for it, relayed by operator 3.
    let prevote = Vote::prevote(mint.hash(), 0);
    let batch = BatchVote::sign(&h.operator_key(0)?, h.federation.id(), vec![prevote])?;
    let att = batch.attestation(0).context("attestation")?;
    let byz = impersonate(&mut h, empty_log()).await?;
    byz.p2p
        .broadcast(encode(&Gossip::Relayed(vec![(prevote, att.clone())])));
    let held = |i: usize| h.metric(i, "hallmark_consensus_held_votes");
    let relayed = |i: usize| {
        h.metric(
            i,
            "hallmark_signatures_checked_total{kind=\"operator_relayed\",result=\"valid\"}",
        )
    };
    for i in 1..BYZANTINE {
        poll_until(WAIT, "the relayed prevote checked and held", || async {
            let ok = relayed(i).await.ok()? >= 1.0 && held(i).await.ok()? >= 1.0;
            ok.then_some(())
        })
        .await
        .with_context(|| h.log_tail(i))?;
    }
    // The same prevote with another operator's signature: refused, an offence.
    let offences = |i: usize| h.metric(i, "hallmark_p2p_offences_total");
    let before = offences(1).await?;
    let mut forged = att;
    forged.operator = h.federation.operator_ids()[1];
    byz.p2p
        .broadcast(encode(&Gossip::Relayed(vec![(prevote, forged)])));
    poll_until(WAIT, "the forged relay counted as an offence", || async {
        (offences(1).await.ok()? > before).then_some(())
    })
    .await
    .with_context(|| h.log_tail(1))?;
    let invalid = h
        .metric(
            1,
            "hallmark_signatures_checked_total{kind=\"operator_relayed\",result=\"invalid\"}",
        )
        .await?;
    ensure!(invalid >= 1.0, "the forged relay is counted invalid");
    Ok(())
}

/// Events sent ahead of their first prevote (`Gossip::Events`) are validated and voted on by
/// whoever receives them: here operator 3 sends a mint nobody submitted and never votes, and
/// the three others certify it on their commits. An event whose author signature does not
/// verify is refused and counts as an offence of the sender.
#[tokio::test(flavor = "multi_thread")]
async fn events_sent_ahead_are_voted_on_and_forged_ones_are_offences() -> Result<()> {
    let (mut h, mint) = with_an_unsubmitted_mint("SN-AHEAD").await?;
    let byz = impersonate(&mut h, empty_log()).await?;
    let offences = |i: usize| h.metric(i, "hallmark_p2p_offences_total");
    let before = offences(1).await?;
    byz.p2p
        .broadcast(encode(&Gossip::Events(vec![mint.clone()])));
    for i in 0..BYZANTINE {
        let ce = poll_until(WAIT, "the mint sent ahead certified", || async {
            h.client(i).event(&mint.hash()).await.ok()?
        })
        .await
        .with_context(|| h.log_tail(i))?;
        let signers = ce.certificate.signer_indices(&h.federation);
        ensure!(
            ce.certificate.phase == Phase::Commit && !signers.contains(&Some(BYZANTINE)),
            "certified on the commits of the three that voted: {signers:?}"
        );
    }
    ensure!(offences(1).await? == before, "a valid event is no offence");
    // A mint by another author, with the first mint's signature.
    let mut forged = mint_event(&h.author(), &h.author(), "SN-FORGED");
    forged.signature = mint.signature;
    byz.p2p
        .broadcast(encode(&Gossip::Events(vec![forged.clone()])));
    poll_until(WAIT, "the forged event counted as an offence", || async {
        (offences(1).await.ok()? > before).then_some(())
    })
    .await
    .with_context(|| h.log_tail(1))?;
    ensure!(
        h.client(1).event(&forged.hash()).await?.is_none(),
        "the forged event is not certified"
    );
    Ok(())
}

/// A Byzantine operator shows its round-0 prevote to one honest operator only, so that the
/// honest operators' views of round 0 differ: with fast certificates, an unlocked operator
/// without a polka prevotes in later rounds the event that more than `f` round-0 prevotes
/// went to, else the lowest-hash candidate, and here operator 0 (which saw two round-0
/// prevotes for its event) and operators 1 and 2 (which saw one for each of three events)
/// choose differently in every round. The slot stalls until operator 0 relays the round-0
/// prevote it holds (`Gossip::Relayed`): then all three choose alike and certify one event.
/// (Without the relay the item stays stuck: checked by hand with it turned off.)
#[tokio::test(flavor = "multi_thread")]
async fn a_stall_from_round_0_prevotes_shown_to_some_only_ends_by_relay() -> Result<()> {
    let mut h = Harness::start(BIN, 4, 3).await?;
    let (maker, owner) = (h.author(), h.author());
    let c = h.client(0);
    register(&c, &maker).await?;
    let mut items = Vec::new();
    for k in 0..4 {
        items.push(minted(&c, &maker, &owner, &format!("SN-SPLIT-{k}")).await?);
    }
    all_hold_what_operator_0_holds(&h, "the mints certified everywhere").await?;
    let byz = impersonate(&mut h, empty_log()).await?;
    let op0 = hallmark_p2p::peer_id_of(&h.federation.operator(0).context("operator 0")?.key);
    let relayed = |i: usize| {
        h.metric(
            i,
            "hallmark_signatures_checked_total{kind=\"operator_relayed\",result=\"valid\"}",
        )
    };
    let mut relay_needed = 0;
    for item in items {
        // Three conflicting transfers, by hash: operator 0 gets the highest, 1 the middle one,
        // 2 the lowest, all at once; operator 3 prevotes the highest, to operator 0 only.
        let mut events = conflicting_transfers::<3>(&h, &c, &owner, &item).await?;
        events.sort_by_key(Event::hash);
        let before = relayed(1).await? + relayed(2).await?;
        let mut tasks = Vec::new();
        for (i, ev) in [(0, &events[2]), (1, &events[1]), (2, &events[0])] {
            let (c, ev) = (h.client(i), ev.clone());
            tasks.push(tokio::spawn(async move { c.submit(&ev, WAIT).await }));
        }
        let prevote = Vote::prevote(events[2].hash(), 0);
        let batch = BatchVote::sign(&byz.key, h.federation.id(), vec![prevote])?;
        let ahead = Gossip::Events(vec![events[2].clone()]);
        ensure!(
            byz.p2p.send_to(&op0, encode(&ahead)),
            "queued to operator 0"
        );
        let msg = Gossip::Votes {
            checkpoints: Vec::new(),
            batch: batch.to_batch_vote(),
            nonce: 1,
        };
        ensure!(byz.p2p.send_to(&op0, encode(&msg)), "queued to operator 0");
        // (The submissions of the two that lose are not certified: their answers do not count.)
        for t in tasks {
            let _ = t.await?;
        }
        // One of the three is certified, and the same one on every honest operator.
        let certified = poll_until(
            WAIT,
            "the transfer certified on every honest operator",
            || async {
                let mut seen = None;
                for i in 0..BYZANTINE {
                    let state = h.client(i).item(&item).await.ok()??;
                    if state.height != 1 || seen.is_some_and(|s| s != state.head) {
                        return None;
                    }
                    seen = Some(state.head);
                }
                seen
            },
        )
        .await
        .with_context(|| h.log_tail(0))?;
        ensure!(events.iter().any(|e| e.hash() == certified));
        relay_needed += usize::from(relayed(1).await? + relayed(2).await? > before);
    }
    println!("{relay_needed} of 4 conflicts were decided after a relay");
    ensure!(
        relay_needed > 0,
        "no conflict needed the relay: the test exercised nothing"
    );
    Ok(())
}

/// Operator 3 is connected but never votes (the Byzantine peer, silent), so no fast certificate
/// can come: the honest operators hold their round-0 commits back at first, then stop holding
/// once eight holds in a row ran out (`node/src/engine/fast.rs`), and go on certifying on
/// commits throughout.
#[tokio::test(flavor = "multi_thread")]
async fn held_commits_stop_being_held_while_a_connected_operator_is_silent() -> Result<()> {
    let mut h = Harness::start(BIN, 4, 3).await?;
    let (maker, owner) = (h.author(), h.author());
    let _byz = impersonate(&mut h, empty_log()).await?;
    let c = h.client(0);
    register(&c, &maker).await?;
    // (Each certified, or `minted` fails.)
    for k in 0..40 {
        minted(&h.client(k % 3), &maker, &owner, &format!("SN-SILENT-{k}")).await?;
    }
    let (mut expired, mut not_held, mut fast) = (0.0, 0.0, 0.0);
    for i in 0..BYZANTINE {
        expired += h.held_commits(i, "expired").await?;
        not_held += h.held_commits(i, "not_held").await?;
        fast += h.held_commits(i, "fast").await?;
    }
    println!("held commits: {expired} ran out, {not_held} not held, {fast} fast");
    ensure!(
        fast == 0.0,
        "no fast certificate without operator 3's prevotes"
    );
    ensure!(expired >= 8.0, "holds ran out ({expired})");
    ensure!(not_held >= 1.0, "holding was suspended ({not_held})");
    Ok(())
}
