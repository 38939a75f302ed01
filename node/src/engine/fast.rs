//! The fast path: an event whose round-0 prevotes came from every operator is certified on
//! them (a certificate of `n` prevotes, `Phase::Prevote`), without waiting for the commit phase;
//! see `docs/consensus.md`. The loop holds the round-0 prevotes of the events it votes on, by
//! reference into their signed batches, and assembles the certificate when the slot decides. At
//! a slot that stalls it relays the round-0 prevotes of other operators it holds: the rule
//! unlocked operators follow in later rounds needs every honest operator to see the same
//! round-0 prevotes in the end, and a faulty operator may show its own to some only.
//!
//! Checkpoints are certified on commits only (their slots run without the fast path).
//!
//! Held commits: when every operator is up, every event gets every round-0 prevote and a fast
//! certificate, and the commits cast at its polka (a quorum of prevotes, before the last one
//! comes) are never needed, yet they were half of the votes signed, sent, checked, counted and
//! stored. So after a round-0 polka an operator holds its commit back ([`SlotConfig::hold_commits`]
//! in the pure slot) for a while: a few times the recent wait from a polka to the fast
//! certificate, within [`HOLD_MIN`]..[`HOLD_MAX`]. The slot sends it at once when another
//! operator commits or prevotes for another event; the loop sends it at the deadline; and it
//! is not held at all while an operator is disconnected (no fast certificate can come), nor for
//! a while after holds kept running out (an operator connected but silent). An operator that
//! committed after its hold ran out because it missed a prevote finds the event in a peer's log
//! at its next catch-up (the others, certified fast, send no commits). See `docs/consensus.md`.
//!
//! [`SlotConfig::hold_commits`]: hallmark_protocol::consensus::SlotConfig::hold_commits

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hallmark_protocol::{
    Attestation, Certificate, EventHash, Federation, Phase, Subject, VerifiedBatch, Vote,
};

use super::{Engine, SlotEntry};
use crate::metrics;
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

/// The shortest a round-0 commit is held.
pub(super) const HOLD_MIN: Duration = Duration::from_millis(2);
/// The longest a round-0 commit is held: the most an operator that is connected but does not
/// prevote adds to a slot's latency (for the few slots before holding is suspended).
pub(super) const HOLD_MAX: Duration = Duration::from_millis(100);
/// A hold lasts this many times the recent mean wait from a polka to the fast certificate.
const HOLD_FACTOR: u32 = 4;
/// Times holds ran out in a row (several at once count once), with no fast certificate
/// between them, before holding stops for [`HOLD_SUSPENSION`].
const HOLD_EXPIRIES: u32 = 8;
const HOLD_SUSPENSION: Duration = Duration::from_secs(1);

/// The round-0 commits held back at this operator's slots, with their deadlines.
pub(super) struct Holds {
    /// (deadline, slot), in the order the holds began.
    due: VecDeque<(Instant, (Subject, u64))>,
    /// Moving mean of how long a held commit waited for the fast certificate.
    wait: Duration,
    /// Times holds ran out since the last fast certificate of a held slot.
    expired: u32,
    /// No holding before then.
    suspended_until: Option<Instant>,
}

impl Holds {
    pub(super) fn new() -> Self {
        let holds = Self {
            due: VecDeque::new(),
            wait: HOLD_MIN,
            expired: 0,
            suspended_until: None,
        };
        metrics::COMMIT_HOLD_SECONDS.set(holds.time().as_secs_f64());
        holds
    }

    /// How long a commit is held now.
    fn time(&self) -> Duration {
        (self.wait * HOLD_FACTOR).clamp(HOLD_MIN, HOLD_MAX)
    }

    /// The earliest deadline (approximately: deadlines of holds begun later may be earlier, by
    /// as much as the hold time changed meanwhile).
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.front().map(|(t, _)| *t)
    }

    /// A slot left the loop, decided (certified with a certificate of `phase`).
    pub(super) fn decided(&mut self, entry: &SlotEntry, phase: Phase) {
        let Some(since) = entry.held_since else {
            return;
        };
        if phase != Phase::Prevote {
            return;
        }
        // (The wait counts when the hold ran out before the fast certificate came, too.)
        if entry.slot.own().commits.is_empty() {
            metrics::HELD_COMMITS.with_label_values(&["fast"]).inc();
        }
        self.wait = (self.wait * 7 + since.elapsed()) / 8;
        self.expired = 0;
        metrics::COMMIT_HOLD_SECONDS.set(self.time().as_secs_f64());
    }

    /// A hold ran out. Its wait, at least the hold's length, counts (as that length): a fast
    /// certificate that comes after the commits certified the event is not timed, so without
    /// this, holds shorter than the wait would stay short.
    fn ran_out(&mut self) {
        metrics::HELD_COMMITS.with_label_values(&["expired"]).inc();
        self.wait = (self.wait * 7 + self.time()) / 8;
        metrics::COMMIT_HOLD_SECONDS.set(self.time().as_secs_f64());
    }

    /// Holds ran out at `now`, one or more at once. Holds that run out together count once
    /// towards the suspension: the loop releases every overdue hold when it gets to them, so
    /// one late turn of it (a long flush) lets many run out at once whose prevotes are already
    /// queued. A silent operator makes them run out at every deadline instead.
    fn ran_out_at(&mut self, now: Instant) {
        self.expired += 1;
        if self.expired >= HOLD_EXPIRIES {
            self.expired = 0;
            self.suspended_until = Some(now + HOLD_SUSPENSION);
        }
    }
}

impl Engine {
    /// After a change at slot `key`: a commit it now holds back gets its deadline, or is
    /// released at once if no fast certificate can be expected (an operator is disconnected)
    /// or holding is suspended.
    pub(super) fn note_hold(&mut self, key: (Subject, u64)) {
        let Some(event) = self
            .slots
            .get(&key)
            .filter(|e| e.held_since.is_none())
            .and_then(|e| e.slot.held_commit())
        else {
            return;
        };
        let now = Instant::now();
        self.stage_reached(&event, "polka");
        let connected = self.peers.len() + 1 >= self.slot_cfg.n;
        let suspended = self.holds.suspended_until.is_some_and(|t| now < t);
        let Some(entry) = self.slots.get_mut(&key) else {
            return;
        };
        entry.held_since = Some(now);
        if connected && !suspended {
            self.holds.due.push_back((now + self.holds.time(), key));
        } else {
            metrics::HELD_COMMITS.with_label_values(&["not_held"]).inc();
            let actions = entry.slot.release_commit();
            self.act(key, actions);
        }
    }

    /// Releases the held commits whose deadline has passed (their slots commit now).
    pub(super) fn release_due_commits(&mut self, now: Instant) {
        let mut ran_out = false;
        while let Some(&(due, key)) = self.holds.due.front() {
            if due > now {
                break;
            }
            self.holds.due.pop_front();
            // (Decided, or released by the slot itself meanwhile: nothing to do.)
            let Some(entry) = self.slots.get_mut(&key) else {
                continue;
            };
            if entry.slot.held_commit().is_none() {
                continue;
            }
            self.holds.ran_out();
            ran_out = true;
            let actions = entry.slot.release_commit();
            self.act(key, actions);
        }
        if ran_out {
            self.holds.ran_out_at(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holding_is_suspended_after_holds_ran_out_at_eight_times_in_a_row() {
        let mut holds = Holds::new();
        let t0 = Instant::now();
        for k in 1..HOLD_EXPIRIES {
            holds.ran_out_at(t0 + Duration::from_millis(k.into()));
            assert_eq!(holds.suspended_until, None, "after {k} times");
        }
        let t = t0 + Duration::from_millis(100);
        holds.ran_out_at(t);
        assert_eq!(holds.suspended_until, Some(t + HOLD_SUSPENSION));
        // The count starts again.
        assert_eq!(holds.expired, 0);
    }

    #[test]
    fn a_hold_that_runs_out_lengthens_the_next_within_bounds() {
        let mut holds = Holds::new();
        assert_eq!(holds.time(), HOLD_MIN * HOLD_FACTOR);
        let mut last = holds.time();
        for _ in 0..100 {
            holds.ran_out();
            assert!(holds.time() >= last);
            last = holds.time();
        }
        assert_eq!(holds.time(), HOLD_MAX);
    }
}
