//! The fast path: an event whose round-0 prevotes came from every operator is certified on
//! them (a certificate of `n` prevotes, `Phase::Prevote`), without waiting for the commit phase;
//! see `docs/consensus.md`. The loop holds the round-0 prevotes of the events it votes on, by
//! reference into their signed batches, and assembles the certificate when the slot decides. At
//! a slot that stalls it relays the round-0 prevotes of other operators it holds: the rule
//! unlocked operators follow in later rounds needs every honest operator to see the same
//! round-0 prevotes in the end, and a faulty operator may show its own to some only.
//!
//! Checkpoints are certified on commits only (their slots run without the fast path).

use std::collections::BTreeMap;
use std::sync::Arc;

use hallmark_protocol::{
    Attestation, Certificate, EventHash, Federation, Phase, Subject, VerifiedBatch, Vote,
};

use super::Engine;
use crate::store::StoreError;

/// A vote held for a certificate: by reference into the signed batch it came in (its path is
/// built only if a certificate needs it), or as the attestation it was relayed with.
pub(super) enum HeldVote {
    /// Vote `index` of a batch.
    InBatch(Arc<VerifiedBatch>, usize),
    /// A relayed vote.
    Attested(Attestation),
}

impl HeldVote {
    pub(super) fn attestation(&self) -> Option<Attestation> {
        match self {
            Self::InBatch(batch, index) => batch.attestation(*index),
            Self::Attested(a) => Some(a.clone()),
        }
    }
}

/// The round-0 prevotes held for one event, by operator index.
pub(super) type HeldPrevotes = BTreeMap<usize, HeldVote>;

/// Whether `vote` may count towards a fast certificate (a round-0 prevote).
pub(super) fn is_fast_vote(vote: &Vote) -> bool {
    vote.round == 0 && vote.phase == Phase::Prevote
}

/// Whether a vote at slot `key` is kept for a certificate: a commit, or a round-0 prevote at an
/// event's slot (checkpoints are certified on commits only).
pub(super) fn is_held(key: (Subject, u64), vote: &Vote) -> bool {
    vote.phase == Phase::Commit || (is_fast_vote(vote) && key.0 != Subject::Checkpoint)
}

/// The fast certificate of `event` from `held`, once it holds every operator's round-0 prevote.
fn assemble_fast(
    federation: &Federation,
    event: EventHash,
    held: &HeldPrevotes,
) -> Option<Certificate> {
    if held.len() < federation.quorum().n() as usize {
        return None;
    }
    let atts: Option<Vec<Attestation>> = held.values().map(HeldVote::attestation).collect();
    Certificate::assemble(federation, Vote::prevote(event, 0), atts?).ok()
}

impl Engine {
    /// Keeps operator `op`'s vote `vote` (already verified) for the certificates it may go into:
    /// a commit vote among the commit attestations of its event and round, a round-0 prevote
    /// among the prevotes a fast certificate is made of. Other votes are not kept.
    pub(super) fn hold(&mut self, op: usize, vote: &Vote, held: HeldVote) {
        match vote.phase {
            Phase::Commit => {
                if let Some(att) = held.attestation() {
                    self.commit_atts
                        .entry((vote.event, vote.round))
                        .or_default()
                        .insert(op, att);
                }
            }
            Phase::Prevote if vote.round == 0 => {
                self.prevotes
                    .entry(vote.event)
                    .or_default()
                    .insert(op, held);
            }
            Phase::Prevote => {}
        }
    }

    /// The fast certificate of `event`, once this operator holds the round-0 prevotes of every
    /// operator for it.
    pub(super) fn fast_certificate(&self, event: EventHash) -> Option<Certificate> {
        assemble_fast(&self.cfg.federation, event, self.prevotes.get(&event)?)
    }

    /// The best certificate of `target` at `round` this operator can assemble: the fast one in
    /// round 0 if it holds every operator's prevote (it ranks first, see
    /// [`Certificate::rank`]), else `m` commits.
    pub(super) fn best_certificate(&self, target: EventHash, round: u32) -> Option<Certificate> {
        let fast = (round == 0)
            .then(|| self.fast_certificate(target))
            .flatten();
        fast.or_else(|| self.quorum_certificate(target, round))
    }

    /// A round-0 prevote of operator `op` for `event`, certified here already: with the ones
    /// held since it was certified on commits, the fast certificate, which replaces the stored
    /// one (it ranks first) once every operator's is in.
    pub(super) fn late_prevote(
        &mut self,
        op: usize,
        event: EventHash,
        held: HeldVote,
    ) -> Result<(), StoreError> {
        let Some(prevotes) = self.late_prevotes.get_mut(&event) else {
            return Ok(());
        };
        prevotes.insert(op, held);
        let Some(fast) = assemble_fast(&self.cfg.federation, event, prevotes) else {
            return Ok(());
        };
        // (Emptied rather than removed, which the Fifo does not do: it goes with the oldest.)
        prevotes.clear();
        if let Some(stored) = self.stored_certificate(&event)? {
            self.upgrade_certificate(&stored, fast.vote(), fast.attestations)?;
        }
        Ok(())
    }

    /// At stalled slot `key`: relays the round-0 prevotes of other operators held for its
    /// candidates (this operator's own votes are re-sent beside; none are held for checkpoints).
    pub(super) fn relay_prevotes(&mut self, key: (Subject, u64)) {
        let Some(entry) = self.slots.get(&key) else {
            return;
        };
        let me = self.cfg.me;
        for e in entry.slot.candidates() {
            let Some(held) = self.prevotes.get(e) else {
                continue;
            };
            let vote = Vote::prevote(*e, 0);
            let relayed = held
                .iter()
                .filter(|(op, _)| **op != me)
                .filter_map(|(_, h)| h.attestation());
            self.out_relayed.extend(relayed.map(|a| (vote, a)));
        }
    }

    /// Round-0 prevotes relayed by a peer (attestations checked): taken as if from their signers.
    pub(super) fn on_relayed(
        &mut self,
        votes: Vec<(usize, Vote, Attestation)>,
    ) -> Result<(), StoreError> {
        for (op, vote, att) in votes {
            self.take_vote(op, &vote, HeldVote::Attested(att))?;
        }
        Ok(())
    }
}
