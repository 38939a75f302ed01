//! Checkpoints anchored on a real regtest bitcoind: proof bundles, reorgs, outages.

use std::time::Duration;

use anyhow::{Context, Result};
use bitcoin::{BlockHash, Network};
use hallmark_node::client::Author;
use hallmark_node::config::BitcoinConfig;
use hallmark_protocol::checkpoint::verify_bundle;
use hallmark_protocol::{EventHash, EventKind, ItemId, ManufacturerId};
use hallmark_tests::regtest::Bitcoind;
use hallmark_tests::{poll_until, Harness};
use hallmark_wallet::RpcApiExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");
const WAIT: Duration = Duration::from_secs(10);

async fn federation(btc: &Bitcoind) -> Result<Harness> {
    let (user, password) = btc.credentials();
    let url = btc.rpc.url.clone();
    let h = Harness::start_with(BIN, 4, 3, |o| {
        o.checkpoint_every_events = 4;
        o.checkpoint_every_secs = 1;
        o.anchor_timeout_secs = 4;
        o.bitcoin = Some(BitcoinConfig {
            rpc_url: url,
            rpc_user: Some(user),
            rpc_password: Some(password),
            cookie_file: None,
            network: "regtest".into(),
            fee_floor_sat_vb: 1,
            bump_after_secs: 30,
        });
    })
    .await?;
    // Fund every operator's wallet: one coinbase each, matured by 100 more blocks.
    for i in 0..4 {
        let key = h.operator_key(i)?;
        btc.mine(
            1,
            &hallmark_wallet::first_address(&key.secret_bytes(), Network::Regtest),
        )?;
    }
    btc.mine(100, &Bitcoind::burn_address())?;
    Ok(h)
}

/// Registers a manufacturer and mints `n` items through operator 0.
async fn mint(h: &Harness, n: usize) -> Result<(Author, Vec<ItemId>)> {
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
    let owner = h.author();
    let mut items = Vec::new();
    for k in 0..n {
        let serial = format!("SN-{k}");
        let ev = m.event(
            0,
            EventHash::ZERO,
            EventKind::Mint {
                serial: serial.clone(),
                product: "P".into(),
                owner: owner.key.public_key(),
            },
        );
        c.submit(&ev, WAIT).await?.certified()?;
        items.push(ItemId::new(
            &ManufacturerId::of(&m.key.public_key()),
            &serial,
        ));
    }
    Ok((owner, items))
}

/// Waits until checkpoint `n` is anchored (in a block) on every operator; returns the block hash.
async fn anchored_everywhere(h: &Harness, btc: &Bitcoind, n: u64) -> Result<BlockHash> {
    poll_until(
        Duration::from_secs(60),
        &format!("checkpoint {n} anchored on all operators"),
        || async {
            // Mine whatever the operators broadcast.
            if !btc.client().mempool().ok()?.is_empty() {
                btc.mine(1, &Bitcoind::burn_address()).ok()?;
            }
            let mut block = None;
            for i in 0..4 {
                let v = h.client(i).checkpoints(n).await.ok()?;
                let cp = v["checkpoints"].get(0)?;
                let b: BlockHash = serde_json::from_value(cp["anchor"]["block"].clone()).ok()?;
                if block.is_some_and(|x| x != b) {
                    return None;
                }
                block = Some(b);
            }
            block
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_are_anchored_and_proofs_verify_across_a_reorg_and_an_outage() -> Result<()> {
    let btc = Bitcoind::start()?;
    let h = federation(&btc).await?;
    let (_, items) = mint(&h, 3).await?;

    // Checkpoint 0 covers the registration and the three mints; it is anchored and mined.
    let block = anchored_everywhere(&h, &btc, 0).await?;
    let bundle = h.client(1).proof(&items[2]).await?.context("proof")?;
    let report = verify_bundle(&h.federation, &bundle)?;
    let (number, facts) = report.anchors[0].clone().context("the mint is anchored")?;
    assert_eq!(number, 0);
    assert_eq!(facts.block, block);
    // The block really is in bitcoind's best chain at that height.
    assert_eq!(btc.client().block_hash(facts.height.into())?, facts.block);

    // A reorg removes the anchor's block: the anchor is broadcast again and confirmed in a new
    // block; nothing is lost.
    btc.cli(&["invalidateblock", &block.to_string()])?;
    let reanchored = anchored_everywhere(&h, &btc, 0).await?;
    assert_ne!(reanchored, block, "re-confirmed in another block");
    let bundle = h.client(2).proof(&items[2]).await?.context("proof")?;
    let report = verify_bundle(&h.federation, &bundle)?;
    assert_eq!(
        report.anchors[0].as_ref().map(|(_, f)| f.block),
        Some(reanchored)
    );
    assert_eq!(
        btc.client()
            .block_hash(report.anchors[0].as_ref().unwrap().1.height.into())?,
        reanchored
    );

    // bitcoind goes away: events are still certified; anchoring resumes when it returns.
    btc.stop()?;
    let more = h.author();
    let c = h.client(0);
    c.submit(
        &more.event(
            0,
            EventHash::ZERO,
            EventKind::RegisterManufacturer {
                name: "Beta".into(),
            },
        ),
        WAIT,
    )
    .await?
    .certified()?;
    for k in 0..4 {
        let ev = more.event(
            0,
            EventHash::ZERO,
            EventKind::Mint {
                serial: format!("B-{k}"),
                product: "P".into(),
                owner: more.key.public_key(),
            },
        );
        c.submit(&ev, WAIT).await?.certified()?;
    }
    poll_until(
        WAIT,
        "checkpoint 1 final while bitcoind is down",
        || async {
            (h.client(3).checkpoints(1).await.ok()?["checkpoints"]
                .as_array()?
                .len()
                == 1)
                .then_some(())
        },
    )
    .await?;
    btc.restart()?;
    anchored_everywhere(&h, &btc, 1).await?;
    Ok(())
}
