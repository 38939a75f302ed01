//! Voting and certification: slots run the two-phase protocol on their candidates, commit
//! votes are gathered into certificates, and certified events are applied to the store in chain
//! order (events that arrive ahead of their chain wait as orphans).

use std::sync::Arc;
use std::time::Instant;

use hallmark_protocol::consensus::{Action, Slot, SlotConfig};
use hallmark_protocol::{
    apply_item_event, encode, Attestation, Certificate, CertifiedEvent, Event, EventHash,
    EventKind, ManufacturerRecord, OfferRecord, Phase, Subject, VerifiedBatch, Vote,
};
use tracing::{debug, error, warn};

use super::fast::{is_fast_vote, is_held, HeldVote};
use super::{cached_item, Engine, SlotEntry, MAX_DEFERRED_SLOTS, MAX_EARLY_VOTES, MAX_ORPHANS};
use crate::metrics;
use crate::store::{slot_key, StateChange, StoreError};
use crate::wire::Proposal;

impl Engine {
    pub(super) fn slot_entry(&mut self, key: (Subject, u64)) -> &mut SlotEntry {
        let store = &self.cfg.store;
        // Checkpoints are certified on commits only.
        let cfg = SlotConfig {
            fast: self.slot_cfg.fast && key.0 != Subject::Checkpoint,
            ..self.slot_cfg
        };
        let me = self.cfg.me;
        let timeout = self.cfg.round_timeout;
        self.slots.entry(key).or_insert_with(|| {
            // Our votes there from before a restart (read when the store was opened).
            let own = store.take_own_votes(&key.0, key.1);
            SlotEntry {
                slot: Slot::new(cfg, Some(me), own),
                deadline: Instant::now() + timeout,
                held_since: None,
            }
        })
    }

    pub(super) fn act(&mut self, key: (Subject, u64), actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Vote(v) => {
                    // The event goes just ahead of (`send_events_ahead`) the first prevote of the
                    // operator a client gave it to (others got it from that one); in later rounds
                    // everyone re-sends it.
                    let ours = self.waiters.contains_key(&v.event)
                        || v.round > 0
                        || self.cp_candidates.contains_key(&v.event);
                    if v.phase == Phase::Prevote && ours && self.announced.insert(v.event) {
                        if let Some((e, _, _)) = self.candidates.get(&v.event) {
                            self.out_events.push(e.clone());
                        } else if let Some(p) = self.cp_candidates.get(&v.event) {
                            self.out_proposals.push(p.clone());
                        }
                    }
                    // (For a held commit, the polka was timed when the hold began.)
                    if v.phase == Phase::Commit
                        && v.round == 0
                        && self.slots.get(&key).is_none_or(|e| e.held_since.is_none())
                    {
                        self.stage_reached(&v.event, "polka");
                    }
                    self.out_votes.push(v);
                    self.dirty.insert(key);
                }
                Action::Decide { event, round, .. } => {
                    if let Err(e) = self.certify(key, event, round) {
                        error!("store error: {e}");
                    }
                }
                Action::Equivocation {
                    operator,
                    first,
                    second,
                } => {
                    metrics::EQUIVOCATIONS.inc();
                    warn!(
                        operator,
                        ?first,
                        ?second,
                        "operator voted for two events in one round"
                    );
                    let mut k = vec![operator as u8];
                    k.extend_from_slice(&slot_key(&key.0, key.1));
                    k.extend_from_slice(&second.round.to_be_bytes());
                    let v = encode(&(key.0, key.1, first, second));
                    if let Err(e) = self.cfg.store.put_evidence(&k, &v) {
                        error!("store error: {e}");
                    }
                }
            }
        }
        self.note_hold(key);
    }

    pub(super) fn on_votes(
        &mut self,
        proposals: Vec<Proposal>,
        batch: &Arc<VerifiedBatch>,
    ) -> Result<(), StoreError> {
        let Some(op) = self.cfg.federation.operator_index(&batch.operator()) else {
            return Ok(());
        };
        metrics::PARTICIPATION
            .with_label_values(&[&op.to_string()])
            .inc_by(batch.votes().len() as u64);
        for p in proposals {
            self.consider_proposal(p)?;
        }
        for (i, vote) in batch.votes().iter().enumerate() {
            self.take_vote(op, vote, HeldVote::InBatch(batch.clone(), i))?;
        }
        Ok(())
    }

    /// A verified vote of operator `op`: counted at its slot and kept for the certificates it
    /// may go into while its event is undecided here (held until the event arrives if it is
    /// not known yet); for an event certified already, a commit vote that improves the stored
    /// certificate goes into it.
    pub(super) fn take_vote(
        &mut self,
        op: usize,
        vote: &Vote,
        held: HeldVote,
    ) -> Result<(), StoreError> {
        if let Some(key) = self.slot_of(&vote.event) {
            if is_held(key, vote) {
                self.hold(op, vote, held);
            }
            let actions = self.slot_entry(key).slot.add_vote(op, *vote);
            self.note_all_prevotes(key, vote);
            self.act(key, actions);
            // A slot decided before this operator held the votes of a certificate (all round-0
            // prevotes counted, its own among them, but not all signed in batches it holds):
            // the commits that follow make one.
            let decided = self.slots.get(&key).and_then(|e| e.slot.decided());
            if vote.phase == Phase::Commit && decided.is_some_and(|(e, _)| e == vote.event) {
                self.certify(key, vote.event, vote.round)?;
            }
        } else if let Some(rank) = self.cfg.store.rank(&vote.event, &self.cfg.federation)? {
            if rank.1 == Phase::Prevote {
                // Certified here on a fast certificate, which no vote improves: the fate of a
                // commit released after its hold ran out (`fast.rs`). An operator that committed
                // because it missed a prevote finds the event in a peer's log at its next
                // catch-up: answering it with the certificate, rebuilt from the stored batches,
                // cost the loop most of its time at the max rate, where holds run out in races.
                return Ok(());
            }
            if is_fast_vote(vote) {
                return self.late_prevote(op, vote.event, held);
            }
            // A late commit vote improves a commit certificate only if it is of the same round
            // and from an operator that ranks before one of the signers.
            let (round, phase, signers) = &rank;
            let improves = *phase == Phase::Commit
                && !signers.contains(&op)
                && signers.iter().any(|&s| s > op);
            if vote.phase == Phase::Commit && vote.round == *round && improves {
                if let (Some(stored), Some(att)) =
                    (self.stored_certificate(&vote.event)?, held.attestation())
                {
                    self.upgrade_certificate(&stored, *vote, [att])?;
                }
            }
        } else if self.retired.lost(&vote.event) {
            if let Some((key, evidence)) = self.retired.witness(op, *vote) {
                self.act(key, vec![evidence]);
            }
        } else if self.early_count < MAX_EARLY_VOTES {
            self.hold(op, vote, held);
            self.early_votes
                .entry(vote.event)
                .or_default()
                .push((op, *vote));
            self.early_count += 1;
        }
        Ok(())
    }

    /// An event gossiped by another operator: validate it and, if valid, take it as a candidate.
    pub(super) fn consider(&mut self, event: Event, hash: EventHash) -> Result<(), StoreError> {
        if self.candidates.contains_key(&hash) {
            return Ok(());
        }
        // (`admit` answers nothing for an event certified already.)
        let key = (event.subject(hash), event.body.height);
        match self.admit(event.clone(), hash, None) {
            Ok(_) => {}
            Err((r, _)) if r.code == "future_height" => {
                if self.deferred.len() < MAX_DEFERRED_SLOTS || self.deferred.contains_key(&key) {
                    let list = self.deferred.entry(key).or_default();
                    if list.len() < 16 {
                        list.push((event, hash));
                    }
                }
            }
            Err((r, _)) => {
                debug!(%hash, code = r.code, "not voting for gossiped event: {}", r.message);
                self.prevotes.remove(&hash);
                // Votes for it that came before it are evidence too, if they conflict.
                if self.retired.note_loser(hash, key) {
                    for (op, vote) in self.early_votes.remove(&hash).unwrap_or_default() {
                        self.early_count -= 1;
                        if let Some((key, evidence)) = self.retired.witness(op, vote) {
                            self.act(key, vec![evidence]);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The certificate of `target` (an event or checkpoint hash) at `round`, once this operator
    /// holds a quorum of commit votes for it.
    pub(super) fn quorum_certificate(&self, target: EventHash, round: u32) -> Option<Certificate> {
        let atts = self.commit_atts.get(&(target, round))?;
        if atts.len() < self.slot_cfg.m {
            return None;
        }
        let certificate = Certificate::assemble(
            &self.cfg.federation,
            Vote::commit(target, round),
            atts.values().cloned(),
        )
        .expect("m attestations of members assemble");
        Some(certificate)
    }

    /// Certifies `event`, decided in `round` at slot `key`, once this operator holds the votes
    /// of a certificate: a checkpoint at a checkpoint's slot, else an event.
    pub(super) fn certify(
        &mut self,
        key: (Subject, u64),
        event: EventHash,
        round: u32,
    ) -> Result<(), StoreError> {
        if key.0 == Subject::Checkpoint {
            self.certify_checkpoint(event, round)
        } else {
            self.try_certify(event, round)
        }
    }

    pub(super) fn try_certify(&mut self, event: EventHash, round: u32) -> Result<(), StoreError> {
        let Some((ev, _, _)) = self.candidates.get(&event) else {
            return Ok(());
        };
        let Some(certificate) = self.best_certificate(event, round) else {
            return Ok(());
        };
        let ce = CertifiedEvent {
            event: ev.clone(),
            certificate,
        };
        // Every operator assembles certificates from the commit votes it sees. When the slot
        // needed more than one round (votes were lost or late), the operator a client submitted
        // the event to also gossips the certificate. Otherwise an operator that missed votes
        // finds the event in a peer's log at its next catch-up (every tick, round robin): sending
        // every certificate to everyone would double the gossip for nothing in the common case.
        if round > 0 && self.waiters.contains_key(&event) {
            self.out_certs.push(ce.clone());
        }
        // (Assembled from every vote collected for it: nothing to merge in.)
        self.certified(ce, false)
    }

    /// After more commit votes or another certificate arrive for a certified event, keep the
    /// canonical certificate (the lowest round, fast before commit, then the lowest operator
    /// indices; see [`Certificate::rank`]), so all operators converge on the same certificates.
    /// `extra`: attestations of `vote` (verified).
    pub(super) fn upgrade_certificate(
        &mut self,
        stored: &Certificate,
        vote: Vote,
        extra: impl IntoIterator<Item = Attestation>,
    ) -> Result<(), StoreError> {
        if (vote.round, vote.phase) > (stored.round, stored.phase) {
            return Ok(());
        }
        let same_vote = vote == stored.vote();
        let own = stored.attestations.iter().filter(|_| same_vote).cloned();
        let Ok(best) = Certificate::assemble(&self.cfg.federation, vote, own.chain(extra)) else {
            return Ok(());
        };
        let fed = &self.cfg.federation;
        let rank = best.rank(fed);
        if rank < stored.rank(fed) {
            let batches = self.batches_of(&best);
            self.cfg.store.replace_certificate(&best, rank, &batches)?;
            self.certificates.insert(best.event, best);
        }
        Ok(())
    }

    /// `certificate` in canonical form ([`Certificate::assemble`]) with the votes for it this
    /// operator collected merged in (the certificate that was gossiped to us may hold a
    /// different set than ours, or paths with another, unsigned, tree size); or the fast
    /// certificate of its event if this operator holds one and it is a commit certificate of
    /// round 0 (the fast one ranks first).
    pub(super) fn with_collected_votes(&self, certificate: &Certificate) -> Certificate {
        if certificate.round == 0 && certificate.phase == Phase::Commit {
            if let Some(fast) = self.fast_certificate(certificate.event) {
                return fast;
            }
        }
        let collected = self
            .commit_atts
            .get(&(certificate.event, certificate.round))
            .filter(|_| certificate.phase == Phase::Commit)
            .into_iter()
            .flat_map(|atts| atts.values().cloned());
        certificate.merged_with(&self.cfg.federation, collected)
    }

    /// The stored certificate of a certified event (of the last ones, from memory).
    pub(super) fn stored_certificate(
        &self,
        hash: &EventHash,
    ) -> Result<Option<Certificate>, StoreError> {
        match self.certificates.get(hash) {
            Some(c) => Ok(Some(c.clone())),
            None => self.cfg.store.certificate(hash),
        }
    }

    /// The vote batches of `certificate`'s attestations, where the loop still holds them.
    fn batches_of(&self, certificate: &Certificate) -> Vec<Option<Arc<VerifiedBatch>>> {
        let of = |a: &Attestation| self.batches.get(&a.signature).cloned();
        certificate.attestations.iter().map(of).collect()
    }

    /// Times the moment every operator's round-0 prevote for an event submitted here has been
    /// seen (`all_prevotes`): when a fast path (certifying on `n` round-0 prevotes, see
    /// `docs/consensus.md`) would certify it.
    fn note_all_prevotes(&mut self, key: (Subject, u64), vote: &Vote) {
        if !is_fast_vote(vote) || !self.submitted_at.contains_key(&vote.event) {
            return;
        }
        let all = self.slots.get(&key).is_some_and(|e| {
            e.slot.voters(0, Phase::Prevote, &vote.event).len() == self.slot_cfg.n
        });
        if all && self.all_prevoted.insert(vote.event) {
            self.stage_reached(&vote.event, "all_prevotes");
        }
    }

    /// A certified event (ours, gossiped, or caught up; certificate already verified).
    pub(super) fn on_certified(&mut self, ce: CertifiedEvent) -> Result<(), StoreError> {
        self.certified(ce, true)
    }

    /// [`Engine::on_certified`]; `merge`: whether the commit votes this operator collected may
    /// be missing from the certificate (one from a peer), so that they are merged in before it
    /// is stored.
    fn certified(&mut self, ce: CertifiedEvent, merge: bool) -> Result<(), StoreError> {
        let hash = ce.certificate.event;
        let subject = ce.event.subject(hash);
        let height = ce.event.body.height;
        if self.is_certified(&hash, &subject, height)? {
            // Nothing ranks before a fast certificate (`Certificate::rank`).
            let rank = self.cfg.store.rank(&hash, &self.cfg.federation)?;
            if rank.is_some_and(|r| r.1 == Phase::Prevote) {
                return Ok(());
            }
            if let Some(stored) = self.stored_certificate(&hash)? {
                let vote = ce.certificate.vote();
                self.upgrade_certificate(&stored, vote, ce.certificate.attestations)?;
            }
            return Ok(());
        }
        let next = self.next_height(&subject)?;
        if height < next {
            error!(%hash, height, "a different event is already certified at this height: safety violated?");
            metrics::CONFLICTING_CERTIFICATES.inc();
            return Ok(());
        }
        if height > next {
            if self.orphans.len() < MAX_ORPHANS {
                self.orphans.insert((subject, height), ce);
            }
            // We missed earlier events of this chain: fetch them by subject.
            self.fetch_chain(subject, next);
            return Ok(());
        }
        self.apply(subject, ce, merge)?;
        // Later events of this chain that arrived early.
        let mut h = height + 1;
        while let Some(next) = self.orphans.remove(&(subject, h)) {
            self.apply(subject, next, true)?;
            h += 1;
        }
        Ok(())
    }

    pub(super) fn apply(
        &mut self,
        subject: Subject,
        mut ce: CertifiedEvent,
        merge: bool,
    ) -> Result<(), StoreError> {
        let hash = ce.certificate.event;
        if merge {
            ce.certificate = self.with_collected_votes(&ce.certificate);
        }
        let ce = &ce;
        let change = match &ce.event.body.kind {
            EventKind::RegisterManufacturer { .. } => {
                ManufacturerRecord::from_event(&ce.event, hash).map(StateChange::Manufacturer)
            }
            EventKind::CreateOffer { .. } => {
                OfferRecord::from_event(&ce.event, hash).map(StateChange::Offer)
            }
            _ => {
                let Subject::Item(item) = subject else {
                    unreachable!("item events have item subjects")
                };
                let state = cached_item(&mut self.items, &self.cfg.store, &item)?;
                apply_item_event(&self.cfg.federation, state, &ce.event, hash)
                    .map(StateChange::Item)
            }
        };
        let change = match change {
            Ok(c) => c,
            Err(e) => {
                error!(%hash, "certified event does not apply to local state: {e}");
                metrics::CONFLICTING_CERTIFICATES.inc();
                return Ok(());
            }
        };
        let height = ce.event.body.height;
        let rank = ce.certificate.rank(&self.cfg.federation);
        let batches = self.batches_of(&ce.certificate);
        self.cfg
            .store
            .apply(&subject, ce, &change, rank, &batches)?;
        // (Commit certificates only: a late commit vote may improve one; nothing improves a fast
        // one, whose rank says so.)
        if ce.certificate.phase == Phase::Commit {
            self.certificates.insert(hash, ce.certificate.clone());
        }
        if let StateChange::Item(state) = change {
            self.items.insert(state.id, Some(state));
        }
        metrics::CERTIFIED
            .with_label_values(&[ce.event.body.kind.name()])
            .inc();
        let phase = match ce.certificate.phase {
            Phase::Prevote => "prevote",
            Phase::Commit => "commit",
        };
        metrics::CERTIFIED_BY_PHASE
            .with_label_values(&[phase])
            .inc();
        metrics::LOG_LEN.inc();
        // (An event certified before every operator's prevote reached this one: on commits.)
        if !self.all_prevoted.remove(&hash) {
            self.stage_reached(&hash, "all_prevotes");
        }
        if let Some(t) = self.submitted_at.remove(&hash) {
            metrics::QUORUM_SECONDS.observe(t.elapsed().as_secs_f64());
        }
        if ce.certificate.round > 0 {
            metrics::ROUND_CHANGES.inc();
        }
        if let Subject::Item(item) = subject {
            match &ce.event.body.kind {
                EventKind::AcceptOffer { .. } => {
                    self.locked_at.insert(item, Instant::now());
                }
                EventKind::Settle { .. } => {
                    metrics::SETTLEMENTS.with_label_values(&["settled"]).inc();
                    if let Some(t) = self.locked_at.remove(&item) {
                        metrics::SETTLE_SECONDS.observe(t.elapsed().as_secs_f64());
                    }
                }
                EventKind::ExpireEscrow { .. } => {
                    metrics::SETTLEMENTS.with_label_values(&["expired"]).inc();
                    self.locked_at.remove(&item);
                }
                _ => {}
            }
        }
        debug!(%hash, kind = ce.event.body.kind.name(), "certified");
        if let Some(ws) = self.waiters.remove(&hash) {
            for w in ws {
                let _ = w.send(ce.clone());
            }
        }
        // The slot is decided: forget its candidates (their waiters learn nothing more) and the
        // votes collected for them.
        let mut gone = vec![hash];
        // Votes for the event that came before it and were held for it: it was certified
        // without becoming a candidate here (its certificate came by catch-up or gossip before
        // the event did). Witnessed by the slot, if there is one (a vote for it after one for a
        // competitor is evidence), then dropped rather than held for ever.
        let early = self.early_votes.remove(&hash).unwrap_or_default();
        self.early_count -= early.len();
        let mut rounds = early.iter().map(|(_, v)| v.round).max().unwrap_or(0);
        let key = (subject, height);
        if let Some(mut entry) = self.slots.remove(&key) {
            self.holds.decided(&entry, ce.certificate.phase);
            gone.extend(entry.slot.candidates().iter().copied());
            rounds = rounds.max(entry.slot.round());
            let evidence: Vec<Action> = early
                .into_iter()
                .filter_map(|(op, v)| entry.slot.witness(op, v))
                .collect();
            self.act(key, evidence);
            self.retired.retire(key, entry.slot);
        }
        // Certified on commits in round 0: the prevotes missing for a fast certificate may come.
        if let Some(held) = self.prevotes.remove(&hash) {
            if ce.certificate.round == 0 && ce.certificate.phase == Phase::Commit {
                self.late_prevotes.insert(hash, held);
            }
        }
        for c in gone {
            self.candidates.remove(&c);
            self.waiters.remove(&c);
            self.announced.remove(&c);
            self.prevotes.remove(&c);
            for r in 0..=rounds.max(ce.certificate.round) {
                self.commit_atts.remove(&(c, r));
            }
        }
        // Candidates for the next height that came too early.
        if let Some(list) = self.deferred.remove(&(subject, height + 1)) {
            for (e, h) in list {
                self.consider(e, h)?;
            }
        }
        Ok(())
    }
}
