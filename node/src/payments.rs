//! Payment adapters: how an operator convinces itself that a sale was paid (before co-signing
//! Settle) or was not (before co-signing ExpireEscrow). One trait, two adapters: bitcoind (the
//! real one: the operator's own node, with `-txindex`) and the seed's mock adapter (tests and
//! offline demos). Lightning is for later. Adapters block: the event loop runs them off-loop.

use bitcoin::Txid;
use hallmark_protocol::sale::{bindings_in, expire_allowed, pays, settle_allowed};
use hallmark_protocol::Escrow;
use hallmark_wallet::{RpcApiExt as _, RpcClient, WalletError};

/// Why an adapter would not vouch for a settlement or an expiry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PaymentError {
    /// The chain says no (unpaid, underpaid, unconfirmed, too late, ...).
    #[error("{0}")]
    Refused(String),
    /// The operator cannot see the chain right now (its bitcoind is down or starting): nothing
    /// is decided, retry later.
    #[error("this operator's bitcoind is unavailable: {0}")]
    Unavailable(String),
}

impl PaymentError {
    /// The API code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(_) => "payment_invalid",
            Self::Unavailable(_) => "bitcoin_unavailable",
        }
    }
}

/// An RPC failure: unavailable if bitcoind could not answer, otherwise a refusal with `context`.
fn rpc_error(e: &WalletError, context: impl FnOnce(&WalletError) -> String) -> PaymentError {
    if e.is_unavailable() {
        PaymentError::Unavailable(e.to_string())
    } else {
        PaymentError::Refused(context(e))
    }
}

fn refused(e: impl std::fmt::Display) -> PaymentError {
    PaymentError::Refused(e.to_string())
}

/// Most blocks an escrow may stay open (the accept's deadline is at most this far ahead).
pub const MAX_ESCROW_BLOCKS: u32 = 1_008;

/// Checks payments.
pub trait PaymentAdapter: Send + Sync + 'static {
    /// Whether `payment` settles `escrow` now.
    fn check_settle(&self, escrow: &Escrow, payment: &Txid) -> Result<(), PaymentError>;
    /// Whether `escrow` may expire now.
    fn check_expire(&self, escrow: &Escrow) -> Result<(), PaymentError>;
    /// The chain height deadlines are measured against, if the adapter knows one.
    fn tip(&self) -> Option<u32>;
    /// Whether accepted offers' deadlines must be checked against the chain.
    fn checks_deadlines(&self) -> bool;
}

/// The seed's mock adapter: every settlement and expiry is accepted.
pub struct MockPayments;

impl PaymentAdapter for MockPayments {
    fn check_settle(&self, _: &Escrow, _: &Txid) -> Result<(), PaymentError> {
        Ok(())
    }
    fn check_expire(&self, _: &Escrow) -> Result<(), PaymentError> {
        Ok(())
    }
    fn tip(&self) -> Option<u32> {
        None
    }
    fn checks_deadlines(&self) -> bool {
        false
    }
}

/// Payments checked on the operator's own bitcoind.
pub struct BitcoindPayments {
    rpc: RpcClient,
    confirmations: u32,
}

impl BitcoindPayments {
    /// An adapter requiring `confirmations` confirmations.
    pub fn new(rpc: RpcClient, confirmations: u32) -> Self {
        Self {
            rpc,
            confirmations: confirmations.max(1),
        }
    }
}

impl PaymentAdapter for BitcoindPayments {
    fn check_settle(&self, escrow: &Escrow, payment: &Txid) -> Result<(), PaymentError> {
        use hallmark_wallet::RpcClientRaw as _;
        let (tx, block) = self.rpc.raw_tx(payment).map_err(|e| {
            rpc_error(&e, |e| {
                format!("payment {payment} not found by this operator's bitcoind: {e}")
            })
        })?;
        pays(&escrow.invoice, &tx).map_err(refused)?;
        let height = match block {
            Some(b) => Some(
                self.rpc
                    .block_height(&b)
                    .map_err(|e| rpc_error(&e, |e| e.to_string()))?,
            ),
            None => None,
        };
        let tip = self
            .rpc
            .block_count()
            .map_err(|e| rpc_error(&e, |e| e.to_string()))? as u32;
        settle_allowed(
            escrow.invoice.deadline_height,
            height,
            tip,
            self.confirmations,
        )
        .map_err(refused)
    }

    fn check_expire(&self, escrow: &Escrow) -> Result<(), PaymentError> {
        let deadline = escrow.invoice.deadline_height;
        let tip = self
            .rpc
            .block_count()
            .map_err(|e| rpc_error(&e, |e| e.to_string()))? as u32;
        expire_allowed(deadline, tip, self.confirmations, None).map_err(refused)?;
        // Look for a payment bound to this offer, confirmed by the deadline.
        for h in deadline.saturating_sub(MAX_ESCROW_BLOCKS)..=deadline.min(tip) {
            let hash = self
                .rpc
                .block_hash(h.into())
                .map_err(|e| rpc_error(&e, |e| e.to_string()))?;
            let block = self
                .rpc
                .block(&hash)
                .map_err(|e| rpc_error(&e, |e| e.to_string()))?;
            for tx in &block.txdata {
                if bindings_in(tx).contains(&escrow.offer) && pays(&escrow.invoice, tx).is_ok() {
                    return expire_allowed(deadline, tip, self.confirmations, Some(h))
                        .map_err(refused);
                }
            }
        }
        Ok(())
    }

    fn tip(&self) -> Option<u32> {
        self.rpc.block_count().ok().map(|h| h as u32)
    }
    fn checks_deadlines(&self) -> bool {
        true
    }
}
