//! Sale commands: the buyer's and seller's side of a BTC sale, and the client's BDK wallet.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Amount, FeeRate, Network, Txid};
use clap::Subcommand;
use hallmark_protocol::sale::binding_payload;
use hallmark_protocol::{
    compute_invoice, EventHash, EventKind, ItemState, ItemStatus, OfferId, OfferRecord,
};
use hallmark_wallet::{ChangeSetStore, HallmarkWallet};
use serde_json::json;

use crate::commands::Ctx;
use crate::keyfile;
use crate::proofs::BitcoinOpts;
use crate::verifier::Verdict;

/// A wallet change set kept in a JSON file next to the key (written atomically).
pub struct FileStore(pub PathBuf);

impl ChangeSetStore for FileStore {
    fn load(&self) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(&self.0) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    fn save(&self, bytes: &[u8]) -> Result<(), String> {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &self.0).map_err(|e| e.to_string())
    }
}

/// The wallet of the key in `key_file`, persisted in `<key_file>.wallet.json`.
pub fn client_wallet(key_file: &Path, btc: &BitcoinOpts) -> Result<HallmarkWallet<FileStore>> {
    let key = keyfile::read(key_file)?;
    let rpc = btc
        .rpc_client()?
        .context("the wallet needs a bitcoind: --bitcoin-rpc with credentials")?;
    let store = FileStore(key_file.with_extension("wallet.json"));
    Ok(HallmarkWallet::open(
        &key.secret_bytes(),
        Network::Regtest,
        store,
        rpc,
    )?)
}

/// `wallet` subcommands (regtest).
#[derive(Subcommand, Debug)]
pub enum WalletCmd {
    /// A fresh receiving address of your wallet.
    Address,
    /// Sync from bitcoind and show the balance.
    Balance,
}

/// `wallet ...`.
pub fn wallet(ctx: &Ctx, cmd: &WalletCmd, key: &Path, btc: &BitcoinOpts) -> Result<u8> {
    let mut w = tokio::task::block_in_place(|| client_wallet(key, btc))?;
    match cmd {
        WalletCmd::Address => {
            let a = w.address()?;
            ctx.print(&json!({"address": a.to_string()}), &a.to_string());
        }
        WalletCmd::Balance => {
            tokio::task::block_in_place(|| w.sync())?;
            let b = w.balance();
            ctx.print(
                &json!({"balance_sats": b.to_sat()}),
                &format!("{} sats", b.to_sat()),
            );
        }
    }
    Ok(0)
}

async fn verified_item(ctx: &Ctx, item: hallmark_protocol::ItemId) -> Result<ItemState> {
    let report = ctx.scan(item).await;
    match report.state {
        Some(s) if report.verdict == Verdict::Authentic => Ok(s),
        _ => bail!(
            "item {item}: scan says {:?} ({})",
            report.verdict,
            report.reasons.join("; ")
        ),
    }
}

async fn offer_record(ctx: &Ctx, offer: &OfferId) -> Result<OfferRecord> {
    for (_, c) in ctx.operators() {
        if let Ok(Some(ce)) = c.event(&EventHash(offer.0)).await {
            // Zero trust: the offer must be certified and be a CreateOffer.
            let hash = ce
                .verify(ctx.federation())
                .context("the served offer does not verify")?;
            return OfferRecord::from_event(&ce.event, hash).context("not an offer");
        }
    }
    bail!("no operator knows offer {offer}")
}

async fn escrowed(
    ctx: &Ctx,
    offer: &OfferId,
) -> Result<(OfferRecord, ItemState, hallmark_protocol::Escrow)> {
    let rec = offer_record(ctx, offer).await?;
    let state = verified_item(ctx, rec.item).await?;
    match &state.status {
        ItemStatus::LockedInEscrow(e) if e.offer == *offer => {
            let e = (**e).clone();
            Ok((rec, state, e))
        }
        _ => bail!(
            "item {} is {}, not in escrow for offer {offer}",
            rec.item,
            state.status.name()
        ),
    }
}

/// `offer ITEM --price SATS` (buyer).
pub async fn offer(ctx: &Ctx, item: &str, price: u64) -> Result<u8> {
    let item = ctx.item(item)?;
    let state = verified_item(ctx, item).await?;
    let a = ctx.author()?;
    let ev = a.event(
        0,
        EventHash::ZERO,
        EventKind::CreateOffer {
            item,
            item_height: state.height + 1,
            seller: state.owner,
            price_sats: price,
        },
    );
    let ce = ctx.submit(&ev).await?;
    let id = OfferId::from(ce.certificate.event);
    ctx.print(
        &json!({"offer_id": id, "item_id": item, "price_sats": price, "seller": state.owner, "certified": ce}),
        &format!("offer {id}\n  item   {item}\n  price  {price} sats\n  seller {}", state.owner),
    );
    Ok(0)
}

/// The best chain height as the operators report it.
async fn operators_tip(ctx: &Ctx) -> Result<u32> {
    let mut tip = None;
    for (_, c) in ctx.operators() {
        if let Ok(info) = c.info().await {
            if let Some(t) = info["bitcoin_tip"].as_u64() {
                tip = tip.max(Some(t as u32));
            }
        }
    }
    tip.context("no operator reports a Bitcoin tip: give --deadline-height")
}

/// `accept OFFER --payout ADDRESS` (seller).
pub async fn accept(
    ctx: &Ctx,
    offer: &str,
    payout: &str,
    deadline_blocks: u32,
    deadline_height: Option<u32>,
) -> Result<u8> {
    let offer: OfferId = offer.parse().context("an offer id is 64 hex digits")?;
    let rec = offer_record(ctx, &offer).await?;
    let state = verified_item(ctx, rec.item).await?;
    let payout: Address<NetworkUnchecked> = payout.parse().context("bad payout address")?;
    let payout = payout.assume_checked().script_pubkey();
    let deadline = match deadline_height {
        Some(h) => h,
        None => operators_tip(ctx).await? + deadline_blocks,
    };
    let invoice = compute_invoice(ctx.federation(), offer, rec.price_sats, payout, deadline)?;
    let offer_event = ctx
        .operators()
        .first()
        .context("no operators")?
        .1
        .event(&EventHash(offer.0))
        .await?
        .context("offer vanished")?
        .event;
    let a = ctx.author()?;
    let ev = a.next(
        &state,
        EventKind::AcceptOffer {
            offer: Box::new(offer_event),
            invoice: invoice.clone(),
        },
    );
    let ce = ctx.submit(&ev).await?;
    let lines: Vec<String> = invoice
        .outputs
        .iter()
        .map(|o| format!("    {:>12} sats  {:?}", o.amount_sats, o.role))
        .collect();
    ctx.print(
        &json!({"offer_id": offer, "item_id": rec.item, "invoice": invoice, "certified": ce}),
        &format!("accepted offer {offer}: item {} is LOCKED IN ESCROW until height {deadline}\n  invoice ({} sats):\n{}", rec.item, invoice.price_sats, lines.join("\n")),
    );
    Ok(0)
}

/// `pay OFFER` (buyer): one transaction paying every invoice output, bound to the offer.
pub async fn pay(
    ctx: &Ctx,
    offer: &str,
    key: &Path,
    btc: &BitcoinOpts,
    fee_rate: u64,
) -> Result<u8> {
    let offer: OfferId = offer.parse().context("an offer id is 64 hex digits")?;
    let (_, _, escrow) = escrowed(ctx, &offer).await?;
    let outputs: Vec<_> = escrow
        .invoice
        .outputs
        .iter()
        .map(|o| (o.script_pubkey.clone(), Amount::from_sat(o.amount_sats)))
        .collect();
    let tx = tokio::task::block_in_place(|| -> Result<_> {
        let mut w = client_wallet(key, btc)?;
        w.sync()?;
        Ok(w.pay(
            &outputs,
            Some(&binding_payload(&offer)),
            FeeRate::from_sat_per_vb(fee_rate).context("fee rate")?,
        )?)
    })?;
    let txid = tx.compute_txid();
    ctx.print(
        &json!({"offer_id": offer, "txid": txid, "outputs": escrow.invoice.outputs.len()}),
        &format!("paid offer {offer} in one transaction {txid} ({} invoice outputs + binding); after it confirms, run `hallmark settle {offer} --payment {txid}`", escrow.invoice.outputs.len()),
    );
    Ok(0)
}

/// `settle OFFER --payment TXID` (buyer or seller).
pub async fn settle(ctx: &Ctx, offer: &str, payment: Txid) -> Result<u8> {
    let offer: OfferId = offer.parse().context("an offer id is 64 hex digits")?;
    let (rec, state, _) = escrowed(ctx, &offer).await?;
    let ce = ctx
        .submit(&ctx.author()?.next(
            &state,
            EventKind::Settle {
                item: rec.item,
                offer,
                payment,
            },
        ))
        .await?;
    ctx.print(
        &json!({"offer_id": offer, "item_id": rec.item, "new_owner": rec.buyer, "certified": ce}),
        &format!("settled: item {} now belongs to {}", rec.item, rec.buyer),
    );
    Ok(0)
}

/// `expire OFFER` (seller or buyer).
pub async fn expire(ctx: &Ctx, offer: &str) -> Result<u8> {
    let offer: OfferId = offer.parse().context("an offer id is 64 hex digits")?;
    let (rec, state, _) = escrowed(ctx, &offer).await?;
    let ce = ctx
        .submit(&ctx.author()?.next(
            &state,
            EventKind::ExpireEscrow {
                item: rec.item,
                offer,
            },
        ))
        .await?;
    ctx.print(
        &json!({"offer_id": offer, "item_id": rec.item, "certified": ce}),
        &format!(
            "escrow expired: item {} is back with {}",
            rec.item, rec.seller
        ),
    );
    Ok(0)
}
