//! Checkpoints and anchoring in the event loop.
//!
//! Checkpoint `k` is agreed in the slot (`Subject::Checkpoint`, k) with the same two-phase
//! voting as events. The proposer of round `r` is operator `(k + r) mod n`: when at least
//! `every_events` certified events are not yet checkpointed, or any are and `every` has passed,
//! and no proposal has arrived (the turn moves to the next operator every `proposer_timeout`), it
//! proposes all of them (up to a cap), in ascending hash order. Every operator validates a
//! proposal against its own store — right number and previous hash, every event certified here
//! and not yet checkpointed, root and count recomputed — and votes. A proposal naming events an
//! operator lacks waits until catch-up brings them.
//!
//! Anchoring: operator `k mod n` anchors checkpoint `k` as soon as it is final; operator
//! `k + j mod n` does so if no anchor is seen confirmed `j * anchor_timeout` after that.

use std::time::{Duration, Instant};

use hallmark_protocol::checkpoint::{CertifiedCheckpoint, Checkpoint, CheckpointHash};
use hallmark_protocol::{EventHash, Subject};
use tracing::{debug, info, warn};

use super::Engine;
use crate::anchoring::{AnchorCmd, ChainEvent};
use crate::metrics;
use crate::store::{FinalCheckpoint, StoreError};
use crate::wire::Proposal;

/// Most events one checkpoint covers (keeps a proposal well inside one gossip message).
pub const MAX_EVENTS_PER_CHECKPOINT: usize = 20_000;
/// Most proposals kept while waiting for their events.
const MAX_DEFERRED_PROPOSALS: usize = 8;

/// When checkpoints are made and anchored.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointConfig {
    /// Propose once this many certified events are not yet checkpointed.
    pub every_events: usize,
    /// Or once this long has passed since the last checkpoint, if any are.
    pub every: Duration,
    /// How long the next operator waits for a confirmed anchor before anchoring itself.
    pub anchor_timeout: Duration,
    /// How long an operator waits for the due proposer before proposing in its place.
    pub proposer_timeout: Duration,
}

impl Engine {
    fn n(&self) -> u64 {
        u64::from(self.cfg.federation.quorum().n())
    }

    /// On each tick: propose the next checkpoint if it is this operator's turn and time.
    pub(super) fn maybe_propose(&mut self) -> Result<(), StoreError> {
        let store = &self.cfg.store;
        let number = store.next_checkpoint()?;
        let pending = store.uncheckpointed_count() as usize;
        let due = pending >= self.cfg.checkpoints.every_events
            || (pending > 0 && self.last_checkpoint_at.elapsed() >= self.cfg.checkpoints.every);
        if !due {
            self.cp_due_since = None;
            return Ok(());
        }
        // Someone proposed already: vote on that instead.
        if self
            .slots
            .get(&(Subject::Checkpoint, number))
            .is_some_and(|e| !e.slot.candidates().is_empty())
        {
            return Ok(());
        }
        // Proposer turns rotate every `proposer_timeout` while no proposal arrives, so a proposer
        // that is down is replaced by the next operator.
        let since = *self.cp_due_since.get_or_insert_with(Instant::now);
        let turn = (since.elapsed().as_millis()
            / self.cfg.checkpoints.proposer_timeout.as_millis().max(1)) as u32;
        let round = turn;
        if (number + u64::from(turn)) % self.n() != self.cfg.me as u64
            || self.proposed.contains(&(number, round))
        {
            return Ok(());
        }
        let mut events = store.uncheckpointed(MAX_EVENTS_PER_CHECKPOINT);
        if events.is_empty() {
            return Ok(());
        }
        let prev = store.last_checkpoint_hash()?;
        let (checkpoint, _) =
            Checkpoint::build(self.cfg.federation.id(), number, prev, &mut events)
                .expect("a non-empty list under the cap builds");
        info!(
            number,
            round,
            count = checkpoint.count,
            "proposing checkpoint"
        );
        self.proposed.insert((number, round));
        self.consider_proposal(Proposal { checkpoint, events })
    }

    /// A checkpoint proposal (ours or gossiped): validate it and take it as a candidate.
    pub(super) fn consider_proposal(&mut self, p: Proposal) -> Result<(), StoreError> {
        let target = p.checkpoint.vote_target();
        if self.cp_candidates.contains_key(&target) {
            return Ok(());
        }
        let store = &self.cfg.store;
        let next = store.next_checkpoint()?;
        let cp = &p.checkpoint;
        if cp.number != next
            || cp.federation != self.cfg.federation.id()
            || cp.prev != store.last_checkpoint_hash()?
        {
            debug!(
                number = cp.number,
                next, "ignoring checkpoint proposal for another position"
            );
            return Ok(());
        }
        let mut events = p.events.clone();
        let rebuilt =
            Checkpoint::build(cp.federation, cp.number, cp.prev, &mut events).map(|(c, _)| c);
        if events != p.events || rebuilt.as_ref() != Ok(cp) {
            warn!(
                number = cp.number,
                "invalid checkpoint proposal: events, root or count do not match"
            );
            return Ok(());
        }
        let mut missing = Vec::new();
        for e in &p.events {
            if !store.is_uncheckpointed(e) {
                if store.has_certificate(e)? {
                    warn!(number = cp.number, event = %e, "checkpoint proposal re-covers a checkpointed event");
                    return Ok(());
                }
                missing.push(*e);
            }
        }
        if !missing.is_empty() {
            // Not certified here (yet): fetch them, and look at the proposal again on a later tick.
            debug!(
                number = cp.number,
                missing = missing.len(),
                "fetching events a checkpoint proposal names"
            );
            self.fetch_events(&missing);
            if self.cp_deferred.len() < MAX_DEFERRED_PROPOSALS {
                self.cp_deferred.push(p);
            }
            return Ok(());
        }
        let key = (Subject::Checkpoint, cp.number);
        self.cp_candidates.insert(target, p);
        let actions = self.slot_entry(key).slot.add_candidate(target);
        // (Checkpoints are certified on commits only: prevotes held before it came go.)
        self.prevotes.remove(&target);
        if let Some(votes) = self.early_votes.remove(&target) {
            self.early_count -= votes.len();
            let mut more = Vec::new();
            for (op, v) in votes {
                more.extend(self.slot_entry(key).slot.add_vote(op, v));
            }
            self.act(key, more);
        }
        self.act(key, actions);
        Ok(())
    }

    /// Proposals that waited for events: try them again.
    pub(super) fn retry_deferred_proposals(&mut self) -> Result<(), StoreError> {
        for p in std::mem::take(&mut self.cp_deferred) {
            self.consider_proposal(p)?;
        }
        Ok(())
    }

    /// `m` commit votes for a checkpoint: it is final.
    pub(super) fn certify_checkpoint(
        &mut self,
        target: EventHash,
        round: u32,
    ) -> Result<(), StoreError> {
        let Some(p) = self.cp_candidates.get(&target) else {
            return Ok(());
        };
        let Some(certificate) = self.quorum_certificate(target, round) else {
            return Ok(());
        };
        let f = FinalCheckpoint {
            certified: CertifiedCheckpoint {
                checkpoint: p.checkpoint.clone(),
                certificate,
            },
            events: p.events.clone(),
        };
        self.out_final.push(f.clone());
        self.on_final_checkpoint(f)
    }

    /// A final checkpoint (ours, gossiped or caught up; its certificate already verified).
    pub(super) fn on_final_checkpoint(&mut self, mut f: FinalCheckpoint) -> Result<(), StoreError> {
        // Stored in canonical form, whatever form the sender gave its certificate.
        f.certified.certificate = f
            .certified
            .certificate
            .merged_with(&self.cfg.federation, []);
        let store = &self.cfg.store;
        let next = store.next_checkpoint()?;
        let number = f.certified.checkpoint.number;
        if number < next {
            return Ok(());
        }
        if number > next {
            self.cp_orphans.insert(number, f);
            return Ok(());
        }
        if f.certified.checkpoint.prev != store.last_checkpoint_hash()? {
            warn!(
                number,
                "final checkpoint does not extend our checkpoint chain: ignored"
            );
            return Ok(());
        }
        let mut events = f.events.clone();
        let rebuilt = Checkpoint::build(
            f.certified.checkpoint.federation,
            number,
            f.certified.checkpoint.prev,
            &mut events,
        )
        .map(|(c, _)| c);
        if events != f.events || rebuilt.as_ref() != Ok(&f.certified.checkpoint) {
            warn!(
                number,
                "final checkpoint's event list does not match its root: ignored"
            );
            return Ok(());
        }
        store.put_checkpoint(&f)?;
        let hash = f.certified.checkpoint.hash();
        info!(number, %hash, count = f.certified.checkpoint.count, "checkpoint final");
        metrics::CHECKPOINTS.set(number as i64 + 1);
        self.cp_by_hash.insert(hash, number);
        self.final_at.insert(number, Instant::now());
        self.last_checkpoint_at = Instant::now();
        self.cp_due_since = None;
        if let Some(entry) = self.slots.remove(&(Subject::Checkpoint, number)) {
            for c in entry.slot.candidates() {
                self.cp_candidates.remove(c);
                for r in 0..=entry.slot.round() {
                    self.commit_atts.remove(&(*c, r));
                }
            }
        }
        self.cp_candidates
            .retain(|_, p| p.checkpoint.number > number);
        self.anchor_duty()?;
        if let Some(next) = self.cp_orphans.remove(&(number + 1)) {
            self.on_final_checkpoint(next)?;
        }
        Ok(())
    }

    /// Asks the anchoring worker to anchor the checkpoints that are this operator's to anchor.
    pub(super) fn anchor_duty(&mut self) -> Result<(), StoreError> {
        let Some(anchor) = &self.cfg.anchor else {
            return Ok(());
        };
        let n = self.n();
        let now = Instant::now();
        let mut done = Vec::new();
        for (&number, &at) in &self.final_at {
            if self.cfg.store.anchor(number)?.is_some() {
                done.push(number);
                continue;
            }
            let turn = (self.cfg.me as u64 + n - number % n) % n;
            let due = at + self.cfg.checkpoints.anchor_timeout * (turn as u32);
            if now >= due && self.anchored_by_me.insert(number) {
                let Some(f) = self.cfg.store.checkpoint(number)? else {
                    continue;
                };
                let checkpoint = f.certified.checkpoint.hash();
                info!(number, turn, "anchoring checkpoint");
                let _ = anchor.send(AnchorCmd::Anchor { number, checkpoint });
            }
        }
        for number in done {
            self.final_at.remove(&number);
        }
        Ok(())
    }

    /// News from the anchoring worker.
    pub(super) fn on_chain(&mut self, ev: ChainEvent) -> Result<(), StoreError> {
        match ev {
            ChainEvent::Anchored { checkpoint, record } => {
                let Some(number) = self.checkpoint_number(&checkpoint)? else {
                    return Ok(());
                };
                let current = self.cfg.store.anchor(number)?;
                if current.as_ref().map(|r| r.block) != Some(record.block) {
                    if current.is_none() {
                        metrics::ANCHORS_CONFIRMED.inc();
                        if let Some(t) = self.final_at.get(&number) {
                            metrics::ANCHOR_DELAY_SECONDS.observe(t.elapsed().as_secs_f64());
                        }
                    }
                    info!(number, txid = %record.txid, height = record.anchor.height, "checkpoint anchored");
                    self.cfg.store.put_anchor(number, &record)?;
                }
            }
            ChainEvent::Reorged {
                checkpoint,
                block,
                tx,
            } => {
                let Some(number) = self.checkpoint_number(&checkpoint)? else {
                    return Ok(());
                };
                if self
                    .cfg
                    .store
                    .anchor(number)?
                    .is_some_and(|r| r.block == block)
                {
                    warn!(number, %block, "anchor reorganised away: broadcasting it again");
                    metrics::ANCHORS_REORGED.inc();
                    self.cfg.store.delete_anchor(number)?;
                    self.final_at.insert(number, Instant::now());
                    if let Some(a) = &self.cfg.anchor {
                        let _ = a.send(AnchorCmd::Rebroadcast { tx });
                    }
                }
            }
            ChainEvent::Tip(h) => metrics::CHAIN_TIP.set(i64::from(h)),
        }
        Ok(())
    }

    fn checkpoint_number(&mut self, hash: &CheckpointHash) -> Result<Option<u64>, StoreError> {
        if let Some(n) = self.cp_by_hash.get(hash) {
            return Ok(Some(*n));
        }
        // Not seen in this process yet: look through the stored chain once.
        let next = self.cfg.store.next_checkpoint()?;
        for n in 0..next {
            if let Some(f) = self.cfg.store.checkpoint(n)? {
                self.cp_by_hash.insert(f.certified.checkpoint.hash(), n);
            }
        }
        Ok(self.cp_by_hash.get(hash).copied())
    }
}
