//! Sale invoices, computed deterministically from the federation's fee schedule, so every
//! operator and every client computes the same outputs for the same sale.
//!
//! Rule: operator fee = `price * operator_fee_bps / 10_000`, split evenly among all operators in
//! configuration order; the remainder of that split goes to the treasury, whose own fee is
//! `price * treasury_fee_bps / 10_000`. The seller gets the rest. Zero-amount fee outputs are
//! left out; any other output below the dust limit makes the price too low for a sale.

use bitcoin::ScriptBuf;
use serde::{Deserialize, Serialize};

use crate::federation::Federation;
use crate::ids::{OfferId, OperatorId};

/// Who an invoice output pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutRole {
    /// The seller's payout.
    Seller,
    /// One operator's share of the operator fee.
    Operator(OperatorId),
    /// The protocol treasury.
    Treasury,
}

/// One output the payment transaction must contain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceOutput {
    /// Who it pays.
    pub role: PayoutRole,
    /// The script it pays to.
    pub script_pubkey: ScriptBuf,
    /// At least this much.
    pub amount_sats: u64,
}

/// What the buyer must pay, in one transaction, for the item to be settled to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// The sale.
    pub offer: OfferId,
    /// Total price.
    pub price_sats: u64,
    /// Outputs: the seller's first, then the operators', then the treasury's.
    pub outputs: Vec<InvoiceOutput>,
    /// The payment must be confirmed in a block at or below this height.
    pub deadline_height: u32,
}

/// Longest script accepted for a payout (a P2WSH or P2TR output is 34 bytes).
pub const MAX_PAYOUT_SCRIPT_LEN: usize = 64;

/// Computes the invoice of a sale.
pub fn compute_invoice(
    federation: &Federation,
    offer: OfferId,
    price_sats: u64,
    seller_payout: ScriptBuf,
    deadline_height: u32,
) -> Result<Invoice, InvoiceError> {
    if seller_payout.is_empty() || seller_payout.len() > MAX_PAYOUT_SCRIPT_LEN {
        return Err(InvoiceError::BadPayoutScript);
    }
    let p = federation.params();
    let fees = p.fees;
    let n = p.operators.len() as u64;
    let pct = |bps: u32| -> u64 {
        // u128: price up to 21e14 sats times bps up to 1e4 stays far inside.
        (u128::from(price_sats) * u128::from(bps) / 10_000) as u64
    };
    let operator_total = pct(fees.operator_fee_bps);
    let per_operator = operator_total / n;
    let treasury = pct(fees.treasury_fee_bps) + (operator_total - per_operator * n);
    let seller = price_sats - per_operator * n - treasury;

    let mut outputs = vec![InvoiceOutput {
        role: PayoutRole::Seller,
        script_pubkey: seller_payout,
        amount_sats: seller,
    }];
    if per_operator > 0 {
        for (id, op) in federation.operator_ids().iter().zip(&p.operators) {
            outputs.push(InvoiceOutput {
                role: PayoutRole::Operator(*id),
                script_pubkey: op.payout.clone(),
                amount_sats: per_operator,
            });
        }
    }
    if treasury > 0 {
        outputs.push(InvoiceOutput {
            role: PayoutRole::Treasury,
            script_pubkey: p.treasury.clone(),
            amount_sats: treasury,
        });
    }
    if outputs.iter().any(|o| o.amount_sats < fees.dust_limit_sats) {
        return Err(InvoiceError::PriceTooLow {
            price_sats,
            dust_limit_sats: fees.dust_limit_sats,
        });
    }
    Ok(Invoice {
        offer,
        price_sats,
        outputs,
        deadline_height,
    })
}

/// Why an invoice cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// Some output would be dust.
    #[error("price {price_sats} sats leaves an invoice output below the dust limit of {dust_limit_sats} sats")]
    PriceTooLow {
        /// Price asked.
        price_sats: u64,
        /// The limit.
        dust_limit_sats: u64,
    },
    /// Empty or oversized seller script.
    #[error("seller payout script must be 1..={MAX_PAYOUT_SCRIPT_LEN} bytes")]
    BadPayoutScript,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{federation, script};
    use proptest::prelude::*;

    #[test]
    fn splits_fees_and_sends_remainder_to_treasury() {
        // 3-of-4, operator fee 1%, treasury 0.5%.
        let f = federation(3, 4);
        let inv = compute_invoice(&f, OfferId([1; 32]), 1_000_003, script(9), 500).unwrap();
        // operator total 10_000 / 4 = 2_500 each, no remainder; treasury 5_000.
        let amounts: Vec<u64> = inv.outputs.iter().map(|o| o.amount_sats).collect();
        assert_eq!(amounts, vec![985_003, 2_500, 2_500, 2_500, 2_500, 5_000]);
        assert_eq!(amounts.iter().sum::<u64>(), 1_000_003);
        let inv = compute_invoice(&f, OfferId([1; 32]), 1_000_300, script(9), 500).unwrap();
        // operator total 10_003 -> 2_500 each, remainder 3 to the treasury (5_001 + 3).
        assert_eq!(inv.outputs[5].amount_sats, 5_004);
        assert_eq!(inv.outputs[0].amount_sats, 1_000_300 - 10_000 - 5_004);
    }

    #[test]
    fn dust_outputs_make_the_price_too_low() {
        let f = federation(3, 4);
        assert!(matches!(
            compute_invoice(&f, OfferId([1; 32]), 100_000, script(9), 500),
            Err(InvoiceError::PriceTooLow { .. })
        ));
        assert_eq!(
            compute_invoice(&f, OfferId([1; 32]), 1_000_000, ScriptBuf::new(), 500),
            Err(InvoiceError::BadPayoutScript)
        );
    }

    proptest! {
        #[test]
        fn outputs_always_sum_to_price(price in 0u64..2_100_000_000_000_000) {
            let f = federation(3, 4);
            if let Ok(inv) = compute_invoice(&f, OfferId([1; 32]), price, script(9), 10) {
                prop_assert_eq!(inv.outputs.iter().map(|o| o.amount_sats).sum::<u64>(), price);
                prop_assert!(inv.outputs.iter().all(|o| o.amount_sats >= 546));
            }
        }
    }
}
