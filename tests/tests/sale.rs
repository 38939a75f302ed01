//! BTC sales settled on a real regtest bitcoind, through the CLI as buyers and sellers run it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bitcoin::{Amount, Network, Txid};
use hallmark_node::client::Author;
use hallmark_protocol::{EventHash, EventKind, ItemId, ItemStatus, ManufacturerId, OfferId};
use hallmark_tests::regtest::{federation_on, Bitcoind};
use hallmark_tests::{poll_until, Harness};
use hallmark_wallet::RpcClientRaw as _;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");
const WAIT: Duration = Duration::from_secs(10);
const PRICE: u64 = 2_000_000;

struct Sale<'a> {
    h: &'a Harness,
    btc: &'a Bitcoind,
    dir: tempfile::TempDir,
}

impl Sale<'_> {
    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.key"))
    }

    /// Runs the CLI as `who` (with the bitcoind RPC in its environment).
    fn cli(&self, who: &str, args: &[&str]) -> Result<(i32, Value, String)> {
        let (user, pass) = self.btc.credentials();
        self.h.cli(
            &self.key(who),
            args,
            &[
                ("HALLMARK_BITCOIN_RPC", &self.btc.rpc.url),
                ("HALLMARK_BITCOIN_RPC_USER", &user),
                ("HALLMARK_BITCOIN_RPC_PASSWORD", &pass),
            ],
        )
    }

    fn ok(&self, who: &str, args: &[&str]) -> Result<Value> {
        let (code, json, text) = self.cli(who, args)?;
        if code != 0 {
            bail!("hallmark {args:?} as {who} failed ({code}): {text}");
        }
        Ok(json)
    }

    fn author(&self, who: &str) -> Result<Author> {
        Ok(Author::new(
            self.h.federation.id(),
            hallmark_node::keyfile::read(&self.key(who))?,
        ))
    }

    /// Mines `n` blocks and waits until every operator's anchoring worker has seen them (sale
    /// deadlines are heights the operators check against their view of the tip).
    fn mine(&self, n: u64) -> Result<()> {
        self.btc.mine(n, &Bitcoind::burn_address())?;
        let height: u64 = self.btc.cli(&["getblockcount"])?.parse()?;
        let rt = tokio::runtime::Handle::current();
        for i in 0..self.h.len() {
            tokio::task::block_in_place(|| {
                rt.block_on(poll_until(WAIT, "operators see the tip", || async {
                    let info = self.h.client(i).info().await.ok()?;
                    (info["bitcoin_tip"].as_u64()? >= height).then_some(())
                }))
            })?;
        }
        Ok(())
    }
}

/// Makes the parties' keys, funds the buyer, registers the maker and mints `serial` to the seller.
async fn world<'a>(
    h: &'a Harness,
    btc: &'a Bitcoind,
    serials: &[&str],
) -> Result<(Sale<'a>, Vec<ItemId>)> {
    let s = Sale {
        h,
        btc,
        dir: tempfile::tempdir()?,
    };
    for who in ["maker", "seller", "buyer", "stranger"] {
        s.ok(who, &["key", "new"])?;
    }
    let buyer = s.author("buyer")?;
    btc.mine(
        2,
        &hallmark_wallet::first_address(&buyer.key.secret_bytes(), Network::Regtest),
    )?;
    s.mine(100)?;
    s.ok(
        "maker",
        &["manufacturer", "register", "--name", "Acme Watches"],
    )?;
    let seller = s.author("seller")?.key.public_key().to_string();
    let maker = s.author("maker")?;
    let mut items = Vec::new();
    for serial in serials {
        s.ok("maker", &["mint", "--serial", serial, "--owner", &seller])?;
        items.push(ItemId::new(
            &ManufacturerId::of(&maker.key.public_key()),
            serial,
        ));
    }
    Ok((s, items))
}

/// Offer by the buyer and acceptance by the seller; returns the offer id and the invoice.
fn lock(s: &Sale, item: &ItemId, deadline_blocks: u32) -> Result<(String, Value)> {
    let v = s.ok(
        "buyer",
        &["offer", &item.to_string(), "--price", &PRICE.to_string()],
    )?;
    let offer = v["offer_id"].as_str().context("offer id")?.to_string();
    let payout =
        hallmark_wallet::first_address(&s.author("seller")?.key.secret_bytes(), Network::Regtest)
            .to_string();
    let v = s.ok(
        "seller",
        &[
            "accept",
            &offer,
            "--payout",
            &payout,
            "--deadline-blocks",
            &deadline_blocks.to_string(),
        ],
    )?;
    Ok((offer, v["invoice"].clone()))
}

async fn state(s: &Sale<'_>, item: &ItemId) -> Result<hallmark_protocol::ItemState> {
    s.h.client(0).item(item).await?.context("item")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sale_settles_with_exact_amounts_and_bad_payments_never_do() -> Result<()> {
    let btc = Bitcoind::start()?;
    let h = federation_on(BIN, &btc, |_| {}).await?;
    let (s, items) = world(&h, &btc, &["SN-1", "SN-2", "SN-3", "SN-4"]).await?;

    // 1. The full sale: offer, accept, one payment, settle. Ownership moves; every party got
    //    exactly its invoice amount.
    let (offer, invoice) = lock(&s, &items[0], 20)?;
    assert!(matches!(
        state(&s, &items[0]).await?.status,
        ItemStatus::LockedInEscrow(_)
    ));
    let v = s.ok("buyer", &["pay", &offer])?;
    let txid: Txid = v["txid"].as_str().context("txid")?.parse()?;
    // Unconfirmed: no settlement, the item stays locked.
    let (code, _, text) = s.cli("buyer", &["settle", &offer, "--payment", &txid.to_string()])?;
    assert_ne!(code, 0, "settled on an unconfirmed payment: {text}");
    assert!(
        text.contains("payment_invalid") && text.contains("confirmations"),
        "{text}"
    );
    assert!(matches!(
        state(&s, &items[0]).await?.status,
        ItemStatus::LockedInEscrow(_)
    ));
    s.mine(1)?;
    s.ok("buyer", &["settle", &offer, "--payment", &txid.to_string()])?;
    let st = state(&s, &items[0]).await?;
    assert_eq!(st.owner, s.author("buyer")?.key.public_key());
    assert_eq!(st.status, ItemStatus::Active);
    let (tx, _) = btc.client().raw_tx(&txid)?;
    for o in invoice["outputs"].as_array().context("outputs")? {
        let script = bitcoin::ScriptBuf::from_hex(o["script_pubkey"].as_str().context("script")?)?;
        let paid: Amount = tx
            .output
            .iter()
            .filter(|x| x.script_pubkey == script)
            .map(|x| x.value)
            .sum();
        assert_eq!(
            paid.to_sat(),
            o["amount_sats"].as_u64().context("amount")?,
            "{:?} got exactly its amount",
            o["role"]
        );
    }
    let scan = s.ok("stranger", &["scan", &items[0].to_string()])?;
    assert_eq!(
        scan["state"]["owner"],
        serde_json::json!(s.author("buyer")?.key.public_key())
    );

    // 2. The same payment reused for another sale: refused (it is bound to the first offer).
    let (offer2, _) = lock(&s, &items[1], 20)?;
    let (code, _, text) = s.cli(
        "buyer",
        &["settle", &offer2, "--payment", &txid.to_string()],
    )?;
    assert_ne!(code, 0);
    assert!(text.contains("not bound to offer"), "{text}");

    // 3. Underpayment and a missing fee output (built by hand with the buyer's wallet): refused.
    let inv2 = match state(&s, &items[1]).await?.status {
        ItemStatus::LockedInEscrow(e) => e.invoice,
        other => bail!("not locked: {other:?}"),
    };
    let offer2_id: OfferId = offer2.parse()?;
    for (name, tweak, reason) in [
        ("underpaid", 0usize, "seller output"),
        ("missing operator fee", 1, "operator"),
    ] {
        let mut outputs: Vec<_> = inv2
            .outputs
            .iter()
            .map(|o| (o.script_pubkey.clone(), Amount::from_sat(o.amount_sats)))
            .collect();
        if tweak == 0 {
            outputs[0].1 -= Amount::from_sat(1_000);
        } else {
            outputs.remove(1);
        }
        let bad = tokio::task::block_in_place(|| -> Result<Txid> {
            let mut w = hallmark_node::sales::client_wallet(&s.key("buyer"), &btc_opts(&btc))?;
            w.sync()?;
            Ok(w.pay(
                &outputs,
                Some(&hallmark_protocol::sale::binding_payload(&offer2_id)),
                bitcoin::FeeRate::from_sat_per_vb(2).unwrap(),
            )?
            .compute_txid())
        })?;
        s.mine(1)?;
        let (code, _, text) =
            s.cli("buyer", &["settle", &offer2, "--payment", &bad.to_string()])?;
        assert_ne!(code, 0, "{name}");
        assert!(text.contains(reason), "{name}: {text}");
    }
    assert!(
        matches!(
            state(&s, &items[1]).await?.status,
            ItemStatus::LockedInEscrow(_)
        ),
        "bad payments leave it locked"
    );

    // 4. A payment confirmed after the deadline: no settlement; the escrow expires to the seller.
    let (offer3, _) = lock(&s, &items[2], 1)?;
    s.mine(2)?;
    let v = s.ok("buyer", &["pay", &offer3])?;
    let late: Txid = v["txid"].as_str().context("txid")?.parse()?;
    s.mine(1)?;
    let (code, _, text) = s.cli(
        "buyer",
        &["settle", &offer3, "--payment", &late.to_string()],
    )?;
    assert_ne!(code, 0);
    assert!(text.contains("after the deadline"), "{text}");
    s.ok("seller", &["expire", &offer3])?;
    let st = state(&s, &items[2]).await?;
    assert_eq!(
        (st.owner, st.status),
        (s.author("seller")?.key.public_key(), ItemStatus::Active)
    );

    // 5. Expiry is refused while a paid sale is settleable, and before the deadline.
    let (offer4, _) = lock(&s, &items[3], 5)?;
    let (code, _, text) = s.cli("seller", &["expire", &offer4])?;
    assert_ne!(code, 0);
    assert!(text.contains("cannot expire before height"), "{text}");

    // 6. Clear rejections: an offer for a locked item, an accept by someone who is not the
    //    owner, and a used offer accepted again (replay).
    let (code, _, text) = s.cli(
        "stranger",
        &["offer", &items[3].to_string(), "--price", "5000000"],
    )?;
    assert_ne!(code, 0);
    assert!(
        text.contains("invalid_in_state") || text.contains("LOCKED_IN_ESCROW"),
        "{text}"
    );
    let v = s.ok(
        "stranger",
        &["offer", &items[0].to_string(), "--price", "3000000"],
    )?;
    let offer5 = v["offer_id"].as_str().context("offer")?.to_string();
    let payout = hallmark_wallet::first_address(&[1; 32], Network::Regtest).to_string();
    let (code, _, text) = s.cli("seller", &["accept", &offer5, "--payout", &payout])?;
    assert_ne!(code, 0, "the seller no longer owns it");
    assert!(
        text.contains("not_authorized") || text.contains("offer_mismatch"),
        "{text}"
    );
    // Replay: the first sale's offer accepted again by the new owner.
    let st = state(&s, &items[0]).await?;
    let offer_event = h
        .client(0)
        .event(&EventHash(offer.parse::<OfferId>()?.0))
        .await?
        .context("offer")?
        .event;
    let inv = hallmark_protocol::compute_invoice(
        &h.federation,
        offer.parse()?,
        PRICE,
        bitcoin::ScriptBuf::new_op_return([1u8; 4]),
        10_000,
    )?;
    let replay = s.author("buyer")?.next(
        &st,
        EventKind::AcceptOffer {
            offer: Box::new(offer_event),
            invoice: inv,
        },
    );
    let out = h.client(0).submit(&replay, WAIT).await?;
    assert_eq!(out.code(), Some("offer_mismatch"), "{out:?}");
    Ok(())
}

/// A payment reorged out of the chain is unconfirmed again: no settlement until it is mined
/// again. With bitcoind down, operators say so (`bitcoin_unavailable`, retry later) and co-sign
/// nothing; once it is back, the same settlement goes through.
#[tokio::test(flavor = "multi_thread")]
async fn settlement_waits_out_a_reorg_and_a_bitcoind_outage() -> Result<()> {
    let btc = Bitcoind::start()?;
    let h = federation_on(BIN, &btc, |_| {}).await?;
    let (s, items) = world(&h, &btc, &["SN-1", "SN-2"]).await?;
    let settle = |offer: &str, txid: &Txid| {
        s.cli("buyer", &["settle", offer, "--payment", &txid.to_string()])
    };
    let locked =
        |st: hallmark_protocol::ItemState| matches!(st.status, ItemStatus::LockedInEscrow(_));

    // Reorg: the payment's block is invalidated, the payment is back in the mempool.
    let (offer, _) = lock(&s, &items[0], 20)?;
    let txid: Txid = s.ok("buyer", &["pay", &offer])?["txid"]
        .as_str()
        .context("txid")?
        .parse()?;
    // (Mined to another address than `s.mine` uses, or the replacement block below could be
    // byte-identical to the invalidated one.)
    let elsewhere = hallmark_wallet::first_address(&[7; 32], Network::Regtest);
    let block = btc.mine(1, &elsewhere)?[0];
    btc.cli(&["invalidateblock", &block.to_string()])?;
    let mempool = btc.cli(&["getrawmempool"])?;
    assert!(mempool.contains(&txid.to_string()), "{mempool}");
    let (code, _, text) = settle(&offer, &txid)?;
    assert_ne!(code, 0, "settled on a reorged-out payment: {text}");
    assert!(
        text.contains("payment_invalid") && text.contains("confirmations"),
        "{text}"
    );
    assert!(locked(state(&s, &items[0]).await?));
    s.mine(1)?;
    s.ok("buyer", &["settle", &offer, "--payment", &txid.to_string()])?;
    assert_eq!(
        state(&s, &items[0]).await?.owner,
        s.author("buyer")?.key.public_key()
    );

    // Outage: paid and confirmed, but no operator can see the chain.
    let (offer, _) = lock(&s, &items[1], 20)?;
    let txid: Txid = s.ok("buyer", &["pay", &offer])?["txid"]
        .as_str()
        .context("txid")?
        .parse()?;
    s.mine(1)?;
    btc.stop()?;
    let (code, _, text) = settle(&offer, &txid)?;
    assert_ne!(code, 0, "settled without seeing the chain: {text}");
    assert!(text.contains("bitcoin_unavailable"), "{text}");
    assert!(locked(state(&s, &items[1]).await?));
    let mut refused = 0.0;
    for i in 0..h.len() {
        refused += h
            .metric(
                i,
                "hallmark_events_rejected_total{code=\"bitcoin_unavailable\"}",
            )
            .await?;
    }
    assert!(refused >= 1.0, "counted as bitcoin_unavailable: {refused}");
    btc.restart()?;
    poll_until(WAIT, "settled once bitcoind is back", || async {
        let (code, _, _) = settle(&offer, &txid).ok()?;
        (code == 0).then_some(())
    })
    .await?;
    let st = state(&s, &items[1]).await?;
    assert_eq!(st.owner, s.author("buyer")?.key.public_key());
    assert_eq!(st.status, ItemStatus::Active);
    Ok(())
}

fn btc_opts(btc: &Bitcoind) -> hallmark_node::proofs::BitcoinOpts {
    let (u, p) = btc.credentials();
    hallmark_node::proofs::BitcoinOpts {
        bitcoin_rpc: Some(btc.rpc.url.clone()),
        rpc_user: Some(u),
        rpc_password: Some(p),
        rpc_cookie: None,
    }
}
