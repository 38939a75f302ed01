//! Checkpoints anchored on a real regtest bitcoind: proof bundles, reorgs, outages.

use std::time::Duration;

use anyhow::{Context, Result};
use bitcoin::BlockHash;
use hallmark_node::client::Author;
use hallmark_protocol::checkpoint::verify_bundle;
use hallmark_protocol::{EventHash, EventKind, ItemId, ManufacturerId};
use hallmark_tests::regtest::{federation_on, Bitcoind};
use hallmark_tests::{poll_until, Harness};
use hallmark_wallet::RpcApiExt as _;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");
const WAIT: Duration = Duration::from_secs(10);

async fn federation(btc: &Bitcoind) -> Result<Harness> {
    federation_with(btc, 30).await
}

async fn federation_with(btc: &Bitcoind, bump_after_secs: u64) -> Result<Harness> {
    let h = federation_on(BIN, btc, |o| {
        o.payments = hallmark_node::config::PaymentMode::Mock;
        o.checkpoint_every_events = 4;
        o.checkpoint_every_secs = 1;
        o.anchor_timeout_secs = 4;
        if let Some(b) = &mut o.bitcoin {
            b.bump_after_secs = bump_after_secs;
        }
    })
    .await?;
    // Mature the operators' coinbases.
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
    anchored_on(h, btc, n, &[0, 1, 2, 3]).await
}

async fn anchored_on(h: &Harness, btc: &Bitcoind, n: u64, ops: &[usize]) -> Result<BlockHash> {
    poll_until(
        Duration::from_secs(60),
        &format!("checkpoint {n} anchored on all operators"),
        || async {
            // Mine whatever the operators broadcast.
            if !btc.client().mempool().ok()?.is_empty() {
                btc.mine(1, &Bitcoind::burn_address()).ok()?;
            }
            let mut block = None;
            for &i in ops {
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

    // The same through the command line: an auditor with its own bitcoind, an offline check of a
    // downloaded bundle against trusted headers, and an OpenTimestamps export the stock client
    // verifies.
    cli_checks(&h, &btc, &items[2], &block)?;

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

fn cli_checks(h: &Harness, btc: &Bitcoind, item: &ItemId, block: &BlockHash) -> Result<()> {
    let fed = h.path().join("federation.toml");
    let (user, pass) = btc.credentials();
    let run = |args: &[&str]| -> Result<(i32, String)> {
        let out = Command::new(BIN)
            .args(args)
            .arg("--federation")
            .arg(&fed)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let rpc = [
        "--bitcoin-rpc",
        btc.rpc.url.as_str(),
        "--rpc-user",
        user.as_str(),
        "--rpc-password",
        pass.as_str(),
    ];

    let (code, out) = run(&[&["audit"][..], &rpc[..]].concat())?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("checkpoint 0: OK, anchored") && out.contains("AUDIT PASSED"),
        "{out}"
    );

    let tmp = tempfile::tempdir()?;
    let bundle_path = tmp.path().join("bundle.json");
    let headers = tmp.path().join("headers.txt");
    let item = item.to_string();
    let (code, out) = run(&[
        "proof",
        "get",
        &item,
        "--out",
        bundle_path.to_str().unwrap(),
    ])?;
    assert_eq!(code, 0, "{out}");
    std::fs::write(
        &headers,
        btc.cli(&["getblockheader", &block.to_string(), "false"])? + "\n",
    )?;
    let (code, out) = run(&[
        "verify-proof",
        bundle_path.to_str().unwrap(),
        "--headers",
        headers.to_str().unwrap(),
    ])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("VALID"), "{out}");
    // A header set that does not contain the anchor's block: refused.
    std::fs::write(
        &headers,
        btc.cli(&["getblockheader", &btc.cli(&["getblockhash", "1"])?, "false"])? + "\n",
    )?;
    let (code, out) = run(&[
        "verify-proof",
        bundle_path.to_str().unwrap(),
        "--headers",
        headers.to_str().unwrap(),
    ])?;
    assert_eq!(code, 20, "{out}");
    assert!(out.contains("not among the trusted headers"), "{out}");
    // A tampered OP_RETURN payload: refused with that reason.
    let mut bundle: hallmark_protocol::checkpoint::ProofBundle =
        serde_json::from_str(&std::fs::read_to_string(&bundle_path)?)?;
    let a = bundle.events[0].anchored.as_mut().context("anchored")?;
    let cp = a.checkpoint.checkpoint.hash().0;
    let at = a
        .anchor
        .tx
        .windows(32)
        .position(|w| w == cp)
        .context("payload in tx")?;
    a.anchor.tx[at + 5] ^= 1;
    std::fs::write(&bundle_path, serde_json::to_string(&bundle)?)?;
    let (code, out) = run(&[
        "verify-proof",
        bundle_path.to_str().unwrap(),
        "--bitcoin-rpc",
        &btc.rpc.url,
        "--rpc-user",
        &user,
        "--rpc-password",
        &pass,
    ])?;
    assert_eq!(code, 20, "{out}");
    assert!(out.contains("no OP_RETURN with this checkpoint"), "{out}");

    // OpenTimestamps: the stock client verifies the exported proof against bitcoind.
    let ots_path = tmp.path().join("mint.ots");
    let (code, out) = run(&[
        "proof",
        "export-ots",
        &item,
        "--event",
        "0",
        "--out",
        ots_path.to_str().unwrap(),
        "--json",
    ])?;
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let digest = v["digest"].as_str().context("digest")?.to_string();
    let node = btc
        .rpc
        .url
        .replacen("http://", &format!("http://{user}:{pass}@"), 1);
    let ots = Command::new("ots")
        .args([
            "--no-cache",
            "--btc-regtest",
            "--bitcoin-node",
            &node,
            "verify",
            "-d",
            &digest,
        ])
        .arg(&ots_path)
        .output()
        .context("running the OpenTimestamps client `ots` (pip install opentimestamps-client)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&ots.stdout),
        String::from_utf8_lossy(&ots.stderr)
    );
    assert!(
        ots.status.success() && text.contains("Success"),
        "ots verify: {text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_leader_is_replaced_for_proposing_and_anchoring_and_stuck_anchors_are_fee_bumped(
) -> Result<()> {
    let btc = Bitcoind::start()?;
    let mut h = federation_with(&btc, 2).await?;
    // Operator 0 would propose and anchor checkpoint 0: it is down.
    h.stop(0)?;
    let m = h.author();
    let c = h.client(1);
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
    for k in 0..3 {
        let ev = m.event(
            0,
            EventHash::ZERO,
            EventKind::Mint {
                serial: format!("S{k}"),
                product: "P".into(),
                owner: m.key.public_key(),
            },
        );
        c.submit(&ev, WAIT).await?.certified()?;
    }
    // Operator 1 proposes in its place, and after the anchor timeout anchors in its place.
    let first = poll_until(
        Duration::from_secs(60),
        "an anchor transaction in the mempool",
        || async { btc.client().mempool().ok()?.first().copied() },
    )
    .await?;
    // Nobody mines for a while: the anchor's fee is bumped (RBF), replacing it in the mempool.
    // (Later operators may also anchor the still-unconfirmed checkpoint meanwhile.)
    poll_until(
        Duration::from_secs(30),
        "the anchor to be replaced by a fee bump",
        || async {
            let pool = btc.client().mempool().ok()?;
            (!pool.is_empty() && !pool.contains(&first)).then_some(())
        },
    )
    .await
    .with_context(|| h.log_tail(1))?;
    let block = anchored_on(&h, &btc, 0, &[1, 2, 3]).await?;
    let v = h.client(2).checkpoints(0).await?;
    let txid: bitcoin::Txid =
        serde_json::from_value(v["checkpoints"][0]["anchor"]["txid"].clone())?;
    assert_ne!(
        txid, first,
        "the replaced transaction is not what confirmed"
    );
    let height = v["checkpoints"][0]["anchor"]["anchor"]["height"]
        .as_u64()
        .context("height")?;
    assert_eq!(btc.client().block_hash(height)?, block);
    Ok(())
}
