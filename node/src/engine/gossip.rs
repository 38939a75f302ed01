//! Checking gossip before it reaches the event loop: decoding and every signature, run off the
//! loop.

use hallmark_protocol::{CertifiedEvent, Federation};

use super::fast::is_fast_vote;
use super::Verified;
use crate::metrics;
use crate::store::Store;
use crate::wire::Gossip;

/// Whether this operator already holds `ce`'s event certified (then its certificate need not be
/// checked again: certificate checks are the bulk of an operator's CPU).
pub(super) fn holds(store: &Store, federation: &Federation, ce: &CertifiedEvent) -> bool {
    match store.rank(&ce.certificate.event, federation) {
        // Unless it carries a certificate that ranks before ours: then it is checked and kept.
        Ok(Some(ours)) => ours <= ce.certificate.rank(federation),
        _ => false,
    }
}

/// Decodes and verifies a gossip payload (signatures: run off the event loop).
pub fn verify_gossip(
    federation: &Federation,
    store: &Store,
    data: &[u8],
) -> Result<Verified, String> {
    match hallmark_protocol::decode::<Gossip>(data).map_err(|e| e.to_string())? {
        Gossip::Votes {
            checkpoints, batch, ..
        } => {
            let batch = batch.verify(federation).map_err(|e| {
                metrics::SIGNATURES
                    .with_label_values(&["operator_batch", "invalid"])
                    .inc();
                e.to_string()
            })?;
            metrics::SIGNATURES
                .with_label_values(&["operator_batch", "valid"])
                .inc();
            Ok(Verified::Votes {
                proposals: checkpoints,
                batch: std::sync::Arc::new(batch),
            })
        }
        Gossip::Certified(list) => {
            let list: Vec<CertifiedEvent> = list
                .into_iter()
                .filter(|ce| !holds(store, federation, ce))
                .collect();
            for ce in &list {
                ce.verify(federation).map_err(|e| e.to_string())?;
            }
            Ok(Verified::Certified(list))
        }
        Gossip::Relayed(votes) => {
            let votes = votes
                .into_iter()
                .map(|(vote, att)| {
                    if !is_fast_vote(&vote) {
                        return Err("only round-0 prevotes are relayed".to_string());
                    }
                    let op = att.verify(federation, &vote).map_err(|e| {
                        metrics::SIGNATURES
                            .with_label_values(&["operator_relayed", "invalid"])
                            .inc();
                        e.to_string()
                    })?;
                    Ok((op, vote, att))
                })
                .collect::<Result<Vec<_>, _>>()?;
            metrics::SIGNATURES
                .with_label_values(&["operator_relayed", "valid"])
                .inc_by(votes.len() as u64);
            Ok(Verified::Relayed(votes))
        }
        Gossip::Events(events) => {
            let events = events
                .into_iter()
                .map(|e| e.check(federation.id()).map(|h| (e, h)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            metrics::SIGNATURES
                .with_label_values(&["author", "valid"])
                .inc_by(events.len() as u64);
            Ok(Verified::Events(events))
        }
        Gossip::Checkpoints(list) => {
            for f in &list {
                f.certified.verify(federation).map_err(|e| e.to_string())?;
            }
            Ok(Verified::Checkpoints(list))
        }
    }
}
