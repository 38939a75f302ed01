//! The scanning verifier (the seed's Verifier): asks several operators at once for an item's
//! history, verifies each answer locally — every certificate's quorum signatures, the event
//! chain, every state transition and the manufacturer's certified registration — trusting no
//! single operator, and gives a verdict. The cryptographic checks are `protocol::verify`.

use std::time::{Duration, Instant};

use hallmark_protocol::{
    verify_item_history, verify_manufacturer, EventHash, Federation, ItemId, ItemState,
    ManufacturerRecord,
};
use serde::Serialize;

use crate::client::Client;

/// What one operator said.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OperatorAnswer {
    /// A history that verifies, up to `height` with head `head`.
    Valid {
        /// Height of the last event.
        height: u64,
        /// Hash of the last event.
        head: EventHash,
    },
    /// Knows no such item.
    NotFound,
    /// Served a history that fails verification.
    Invalid {
        /// Why.
        reason: String,
    },
    /// Did not answer in time, or answered garbage.
    Unreachable {
        /// Why.
        error: String,
    },
}

/// The verdict of a scan.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// A quorum-certified history from a registered manufacturer.
    Authentic,
    /// Histories were served but none verifies.
    Counterfeit,
    /// No operator knows the item.
    Unknown,
    /// Operators serve verified histories that contradict each other.
    Inconsistent,
    /// No operator answered.
    Unreachable,
}

impl Verdict {
    /// The process exit code for this verdict (documented in `hallmark scan --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Authentic => 0,
            Verdict::Counterfeit => 10,
            Verdict::Unknown => 11,
            Verdict::Inconsistent => 12,
            Verdict::Unreachable => 13,
        }
    }
}

/// One operator's part in a scan.
#[derive(Clone, Debug, Serialize)]
pub struct OperatorReport {
    /// Operator index.
    pub index: usize,
    /// Its API.
    pub url: String,
    /// What it said.
    #[serde(flatten)]
    pub answer: OperatorAnswer,
    /// Whether its history is the one the verdict rests on (the longest verified one).
    pub agrees: bool,
}

/// The result of a scan.
#[derive(Clone, Debug, Serialize)]
pub struct ScanReport {
    /// The item scanned.
    pub item: ItemId,
    /// The verdict.
    pub verdict: Verdict,
    /// The item's verified state (for AUTHENTIC).
    pub state: Option<ItemState>,
    /// Its verified manufacturer (for AUTHENTIC).
    pub manufacturer: Option<ManufacturerRecord>,
    /// Number of verified events.
    pub events: usize,
    /// Why the verdict is what it is, and anything suspicious.
    pub reasons: Vec<String>,
    /// What each operator said.
    pub operators: Vec<OperatorReport>,
    /// How long the scan took.
    pub elapsed_ms: u64,
}

struct Verified {
    state: ItemState,
    manufacturer: ManufacturerRecord,
    heads: Vec<EventHash>,
}

/// Scans `item` by asking every `(index, client)` in parallel, each bounded by `timeout`.
pub async fn scan(
    federation: &Federation,
    operators: &[(usize, Client)],
    item: ItemId,
    timeout: Duration,
) -> ScanReport {
    let started = Instant::now();
    let asks = operators.iter().map(|(index, c)| {
        let c = c.clone();
        let index = *index;
        async move {
            let r = tokio::time::timeout(timeout, c.history(&item)).await;
            (index, c.base().to_string(), r)
        }
    });
    let answers = futures::future::join_all(asks).await;
    let mut verified: Vec<Option<Verified>> = Vec::new();
    let mut reports = Vec::new();
    for (index, url, r) in answers {
        let (answer, v) = match r {
            Err(_) => (
                OperatorAnswer::Unreachable {
                    error: format!("no answer within {} ms", timeout.as_millis()),
                },
                None,
            ),
            Ok(Err(e)) => (
                OperatorAnswer::Unreachable {
                    error: format!("{e:#}"),
                },
                None,
            ),
            Ok(Ok(None)) => (OperatorAnswer::NotFound, None),
            Ok(Ok(Some(h))) => {
                match verify_item_history(federation, item, &h.manufacturer, &h.events) {
                    Ok(state) => {
                        let manufacturer = verify_manufacturer(federation, &h.manufacturer)
                            .expect("verified just above");
                        let heads = h.events.iter().map(|ce| ce.certificate.event).collect();
                        (
                            OperatorAnswer::Valid {
                                height: state.height,
                                head: state.head,
                            },
                            Some(Verified {
                                state,
                                manufacturer,
                                heads,
                            }),
                        )
                    }
                    Err(e) => (
                        OperatorAnswer::Invalid {
                            reason: e.to_string(),
                        },
                        None,
                    ),
                }
            }
        };
        reports.push(OperatorReport {
            index,
            url,
            answer,
            agrees: false,
        });
        verified.push(v);
    }

    let mut reasons = Vec::new();
    // The longest verified history; every other verified one must be a prefix of it.
    let best = verified
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.as_ref().map(|v| (i, v)))
        .max_by_key(|(_, v)| v.heads.len());
    let mut verdict = match best {
        Some(_) => Verdict::Authentic,
        None if reports
            .iter()
            .any(|r| matches!(r.answer, OperatorAnswer::Invalid { .. })) =>
        {
            Verdict::Counterfeit
        }
        None if reports.iter().any(|r| r.answer == OperatorAnswer::NotFound) => Verdict::Unknown,
        None => Verdict::Unreachable,
    };
    if let Some((bi, b)) = best {
        for (i, v) in verified.iter().enumerate() {
            let Some(v) = v else { continue };
            if b.heads.starts_with(&v.heads) {
                reports[i].agrees = v.heads.len() == b.heads.len();
                if !reports[i].agrees {
                    reasons.push(format!(
                        "operator {} is behind (height {} of {})",
                        reports[i].index, v.state.height, b.state.height
                    ));
                }
            } else {
                verdict = Verdict::Inconsistent;
                reasons.push(format!(
                    "operators {} and {} serve conflicting certified histories (diverging at height {})",
                    reports[bi].index,
                    reports[i].index,
                    v.heads.iter().zip(&b.heads).take_while(|(x, y)| x == y).count()
                ));
            }
        }
    }
    match verdict {
        Verdict::Authentic => reasons.insert(
            0,
            "every event carries a valid quorum certificate, the chain links and follows the state machine, and the manufacturer's registration is certified".into(),
        ),
        Verdict::Counterfeit => reasons.insert(0, "no operator served a history that verifies".into()),
        Verdict::Unknown => reasons.insert(0, "no operator knows this item: it was never minted in this federation".into()),
        Verdict::Unreachable => reasons.insert(0, "no operator answered".into()),
        Verdict::Inconsistent => {}
    }
    for r in &reports {
        match &r.answer {
            OperatorAnswer::Invalid { reason } => reasons.push(format!(
                "operator {} served a history that fails verification: {reason}",
                r.index
            )),
            OperatorAnswer::Unreachable { error } if verdict == Verdict::Authentic => {
                reasons.push(format!("operator {} unreachable: {error}", r.index))
            }
            OperatorAnswer::NotFound if verdict == Verdict::Authentic => {
                reasons.push(format!("operator {} does not know the item yet", r.index))
            }
            _ => {}
        }
    }
    let (state, manufacturer, events) = match (verdict == Verdict::Authentic, best) {
        (true, Some((_, b))) => (
            Some(b.state.clone()),
            Some(b.manufacturer.clone()),
            b.heads.len(),
        ),
        _ => (None, None, 0),
    };
    ScanReport {
        item,
        verdict,
        state,
        manufacturer,
        events,
        reasons,
        operators: reports,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}
