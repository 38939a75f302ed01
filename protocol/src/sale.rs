//! The money side of a sale, as pure rules: what a payment must contain, and when Settle or
//! ExpireEscrow may be certified, by block heights.
//!
//! **Binding.** The one payment transaction carries an OP_RETURN `b"HMKP" || 0x01 || offer id`,
//! so it can settle exactly one sale: a transaction binds one offer.
//!
//! **Settle vs expire.** With deadline `D` (in the invoice) and `c` required confirmations:
//! - Settle is valid iff the bound payment pays every invoice output in full and is confirmed in
//!   a block at height `h <= D` with `tip - h + 1 >= c`.
//! - ExpireEscrow is valid iff `tip >= D + c` and no transaction bound to the offer that pays the
//!   invoice is confirmed at a height `<= D`.
//!
//! Both are events at the same (item, height), so quorum intersection certifies at most one of
//! them; the rule makes the two conditions exclusive at any chain state (a qualifying payment at
//! `h <= D` makes expiry invalid forever after; no such payment by `D` makes settlement invalid),
//! and the `c`-confirmation margins keep shallow reorganisations from flipping a decision.

use bitcoin::{Amount, ScriptBuf, Transaction};

use crate::ids::OfferId;
use crate::invoice::{Invoice, PayoutRole};

/// Magic of a sale binding.
pub const SALE_MAGIC: &[u8; 4] = b"HMKP";
/// Version byte of a sale binding.
pub const SALE_VERSION: u8 = 1;

/// The OP_RETURN payload binding a payment to `offer`.
pub fn binding_payload(offer: &OfferId) -> [u8; 37] {
    let mut p = [0u8; 37];
    p[..4].copy_from_slice(SALE_MAGIC);
    p[4] = SALE_VERSION;
    p[5..].copy_from_slice(&offer.0);
    p
}

/// The offers a transaction binds itself to.
pub fn bindings_in(tx: &Transaction) -> Vec<OfferId> {
    tx.output
        .iter()
        .filter(|o| o.script_pubkey.is_op_return())
        .filter_map(|o| {
            let b = o.script_pubkey.as_bytes();
            (b.len() == 39 && b[1] == 37 && &b[2..6] == SALE_MAGIC && b[6] == SALE_VERSION)
                .then(|| OfferId(b[7..39].try_into().expect("32 bytes")))
        })
        .collect()
}

/// Why a payment does not pay an invoice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// No OP_RETURN binding to this offer.
    #[error("the transaction is not bound to offer {0} (missing its OP_RETURN)")]
    NotBound(OfferId),
    /// Bound to several offers: could be used to argue two sales.
    #[error("the transaction binds more than one offer")]
    BindsSeveral,
    /// An output short or missing.
    #[error("{role} output to {script} pays {paid}, the invoice asks {asked}")]
    Underpaid {
        /// Whose output.
        role: String,
        /// Where.
        script: ScriptBuf,
        /// Paid to that script.
        paid: Amount,
        /// Asked for that script.
        asked: Amount,
    },
    /// Confirmed after the deadline.
    #[error("confirmed at height {height}, after the deadline {deadline}")]
    Late {
        /// Block height of the payment.
        height: u32,
        /// Deadline.
        deadline: u32,
    },
    /// Not (yet) enough confirmations.
    #[error("{confirmations} confirmations, {needed} needed")]
    Unconfirmed {
        /// Confirmations so far.
        confirmations: u32,
        /// Needed.
        needed: u32,
    },
    /// Expiry asked before the deadline plus margin.
    #[error("the escrow cannot expire before height {earliest} (tip is {tip})")]
    NotExpired {
        /// Earliest height.
        earliest: u32,
        /// Tip.
        tip: u32,
    },
    /// Expiry asked although a qualifying payment exists.
    #[error("a payment that settles this sale was confirmed at height {0}")]
    Paid(u32),
}

/// Whether `tx` pays `invoice` in full (outputs per script at least the amounts asked, the
/// invoice's amounts to one script added up) and binds itself to the invoice's offer only.
pub fn pays(invoice: &Invoice, tx: &Transaction) -> Result<(), PaymentError> {
    let bindings = bindings_in(tx);
    if bindings.len() > 1 {
        return Err(PaymentError::BindsSeveral);
    }
    if bindings.first() != Some(&invoice.offer) {
        return Err(PaymentError::NotBound(invoice.offer));
    }
    let mut asked: Vec<(&ScriptBuf, Amount, String)> = Vec::new();
    for o in &invoice.outputs {
        let role = match o.role {
            PayoutRole::Seller => "seller".to_string(),
            PayoutRole::Operator(id) => format!("operator {}", &id.to_string()[..8]),
            PayoutRole::Treasury => "treasury".to_string(),
        };
        match asked.iter_mut().find(|(s, _, _)| **s == o.script_pubkey) {
            Some(e) => e.1 += Amount::from_sat(o.amount_sats),
            None => asked.push((&o.script_pubkey, Amount::from_sat(o.amount_sats), role)),
        }
    }
    for (script, want, role) in asked {
        let paid: Amount = tx
            .output
            .iter()
            .filter(|o| &o.script_pubkey == script)
            .map(|o| o.value)
            .sum();
        if paid < want {
            return Err(PaymentError::Underpaid {
                role,
                script: script.clone(),
                paid,
                asked: want,
            });
        }
    }
    Ok(())
}

/// The settle rule: a paying transaction confirmed at `height` (None: unconfirmed).
pub fn settle_allowed(
    deadline: u32,
    height: Option<u32>,
    tip: u32,
    confirmations_needed: u32,
) -> Result<(), PaymentError> {
    let Some(height) = height else {
        return Err(PaymentError::Unconfirmed {
            confirmations: 0,
            needed: confirmations_needed,
        });
    };
    if height > deadline {
        return Err(PaymentError::Late { height, deadline });
    }
    let confirmations = tip.saturating_sub(height) + 1;
    if confirmations < confirmations_needed {
        return Err(PaymentError::Unconfirmed {
            confirmations,
            needed: confirmations_needed,
        });
    }
    Ok(())
}

/// The expire rule: `paid_at` is the lowest height at which a transaction bound to the offer and
/// paying the invoice is confirmed, if any.
pub fn expire_allowed(
    deadline: u32,
    tip: u32,
    confirmations_needed: u32,
    paid_at: Option<u32>,
) -> Result<(), PaymentError> {
    let earliest = deadline.saturating_add(confirmations_needed.max(1));
    if tip < earliest {
        return Err(PaymentError::NotExpired { earliest, tip });
    }
    match paid_at {
        Some(h) if h <= deadline => Err(PaymentError::Paid(h)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoice::compute_invoice;
    use crate::testkit::{federation, script};
    use bitcoin::script::PushBytesBuf;
    use bitcoin::{absolute, transaction, OutPoint, TxIn, TxOut};

    fn invoice() -> Invoice {
        compute_invoice(
            &federation(3, 4),
            OfferId([4; 32]),
            1_000_000,
            script(9),
            200,
        )
        .unwrap()
    }

    fn payment(
        inv: &Invoice,
        offer: Option<OfferId>,
        tweak: impl Fn(&mut Vec<TxOut>),
    ) -> Transaction {
        let mut output: Vec<TxOut> = inv
            .outputs
            .iter()
            .map(|o| TxOut {
                value: Amount::from_sat(o.amount_sats),
                script_pubkey: o.script_pubkey.clone(),
            })
            .collect();
        if let Some(o) = offer {
            output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::new_op_return(
                    PushBytesBuf::try_from(binding_payload(&o).to_vec()).unwrap(),
                ),
            });
        }
        tweak(&mut output);
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                ..Default::default()
            }],
            output,
        }
    }

    #[test]
    fn an_exact_or_larger_payment_pays() {
        let inv = invoice();
        assert_eq!(pays(&inv, &payment(&inv, Some(inv.offer), |_| {})), Ok(()));
        assert_eq!(
            pays(
                &inv,
                &payment(&inv, Some(inv.offer), |o| o[0].value +=
                    Amount::from_sat(10))
            ),
            Ok(())
        );
        assert_eq!(
            bindings_in(&payment(&inv, Some(inv.offer), |_| {})),
            vec![inv.offer]
        );
    }

    #[test]
    fn payments_that_do_not_pay() {
        let inv = invoice();
        let cases: Vec<(&str, Transaction, &str)> = vec![
            (
                "underpaid seller",
                payment(&inv, Some(inv.offer), |o| o[0].value -= Amount::from_sat(1)),
                "seller output",
            ),
            (
                "missing fee output",
                payment(&inv, Some(inv.offer), |o| {
                    o.remove(1);
                }),
                "operator",
            ),
            (
                "missing treasury",
                payment(&inv, Some(inv.offer), |o| {
                    o.remove(5);
                }),
                "treasury",
            ),
            ("no binding", payment(&inv, None, |_| {}), "not bound"),
            (
                "bound to another offer",
                payment(&inv, Some(OfferId([5; 32])), |_| {}),
                "not bound",
            ),
            (
                "bound to two offers",
                payment(&inv, Some(inv.offer), |o| {
                    o.push(TxOut {
                        value: Amount::ZERO,
                        script_pubkey: ScriptBuf::new_op_return(
                            PushBytesBuf::try_from(binding_payload(&OfferId([5; 32])).to_vec())
                                .unwrap(),
                        ),
                    });
                }),
                "more than one",
            ),
        ];
        for (name, tx, reason) in cases {
            let e = pays(&inv, &tx).expect_err(name).to_string();
            assert!(e.contains(reason), "{name}: {e}");
        }
    }

    #[test]
    fn settle_and_expire_edges_are_exclusive() {
        let (d, c) = (100u32, 2u32);
        // Paid at the deadline itself: settles once confirmed twice; never expires.
        assert!(
            settle_allowed(d, Some(100), 100, c).is_err(),
            "one confirmation"
        );
        assert_eq!(settle_allowed(d, Some(100), 101, c), Ok(()));
        assert_eq!(
            expire_allowed(d, 150, c, Some(100)),
            Err(PaymentError::Paid(100))
        );
        // Paid one block late: never settles; expires at D + c.
        assert!(matches!(
            settle_allowed(d, Some(101), 150, c),
            Err(PaymentError::Late { .. })
        ));
        assert!(
            expire_allowed(d, 101, c, Some(101)).is_err(),
            "too early to expire"
        );
        assert_eq!(expire_allowed(d, 102, c, Some(101)), Ok(()));
        // Unpaid (or unconfirmed): never settles; expires at D + c.
        assert!(matches!(
            settle_allowed(d, None, 150, c),
            Err(PaymentError::Unconfirmed { .. })
        ));
        assert_eq!(expire_allowed(d, 102, c, None), Ok(()));
        // At every chain state at most one of the two holds.
        for tip in 90..120 {
            for paid in [None, Some(95), Some(100), Some(101), Some(110)] {
                let settle = paid.is_some_and(|h| h <= tip)
                    && settle_allowed(d, paid.filter(|h| *h <= tip), tip, c).is_ok();
                let expire = expire_allowed(d, tip, c, paid.filter(|h| *h <= tip)).is_ok();
                assert!(!(settle && expire), "tip {tip}, paid {paid:?}");
            }
        }
    }
}
