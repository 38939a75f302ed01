//! Admission: a client's submission or a gossiped event is checked against the certified state
//! (signer's right, chain position, timestamps, payments for settlements) and becomes a candidate
//! in its slot, or is deferred until its chain reaches it, or is refused with a [`Rejection`].

use std::time::Instant;

use hallmark_protocol::{
    apply_item_event, Event, EventHash, EventKind, ItemState, ItemStatus, ManufacturerId,
    OfferRecord, Subject,
};
use tokio::sync::oneshot;
use tracing::debug;

use super::{cached_item, Engine, Input, Rejection, Reply, Submitted};
use crate::metrics;
use crate::payments::MAX_ESCROW_BLOCKS;

impl Engine {
    pub(super) fn submit(
        &mut self,
        event: Event,
        hash: EventHash,
        received: Instant,
        reply: Reply,
    ) {
        let result = self.admit(event, hash, Some(reply));
        if let Some(t) = self.submitted_at.get_mut(&hash) {
            // Timed from the API's receipt (the wait for the loop included).
            if received < *t {
                *t = received;
                metrics::STAGE_SECONDS
                    .with_label_values(&["admitted"])
                    .observe(received.elapsed().as_secs_f64());
            }
        }
        match result {
            Ok(None) => {}
            Ok(Some((submitted, reply))) => {
                let _ = reply.send(Ok(submitted));
            }
            Err((e, reply)) => {
                metrics::REJECTED.with_label_values(&[e.code]).inc();
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    /// Checks a client's (`reply` set) or a peer's event and takes it as a candidate. Returns
    /// what to answer now, or `None` when the answer comes later (a payment check is running).
    #[allow(clippy::type_complexity)]
    pub(super) fn admit(
        &mut self,
        event: Event,
        hash: EventHash,
        reply: Option<Reply>,
    ) -> Result<Option<(Submitted, Reply)>, (Rejection, Option<Reply>)> {
        // A peer's event that is certified already needs nothing; a client gets the certificate.
        let certified = match self.is_certified(&hash, &event.subject(hash), event.body.height) {
            Ok(true) if reply.is_none() => return Ok(None),
            Ok(true) => self.cfg.store.certified(&hash),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        match certified {
            Ok(Some(ce)) => return Ok(reply.map(|r| (Submitted::Certified(Box::new(ce)), r))),
            Ok(None) => {}
            Err(e) => return Err((e.into(), reply)),
        }
        let now = (self.cfg.clock)();
        if reply.is_some() && now.abs_diff(event.body.timestamp_ms) > self.cfg.timestamp_window_ms {
            let e = Rejection::new(
                "timestamp_out_of_window",
                format!(
                    "event timestamp {} is more than {} s from the operator's clock {now}",
                    event.body.timestamp_ms,
                    self.cfg.timestamp_window_ms / 1000
                ),
            );
            return Err((e, reply));
        }
        let (subject, height) = match self.validate(&event, hash) {
            Ok(x) => x,
            Err(e) => return Err((e, reply)),
        };
        if matches!(
            event.body.kind,
            EventKind::Settle { .. } | EventKind::ExpireEscrow { .. }
        ) && !self.candidates.contains_key(&hash)
        {
            // The money side: the payment adapter decides, off the event loop.
            let Some(adapter) = self.cfg.payments.clone() else {
                return Err((
                    Rejection::new(
                        "payment_unverified",
                        "this operator has no payment adapter configured to verify settlement",
                    ),
                    reply,
                ));
            };
            let Subject::Item(item) = subject else {
                unreachable!("settle and expire are item events")
            };
            let escrow = match cached_item(&mut self.items, &self.cfg.store, &item) {
                Ok(Some(ItemState {
                    status: ItemStatus::LockedInEscrow(e),
                    ..
                })) => e.clone(),
                Ok(_) => {
                    return Err((
                        Rejection::new("invalid_in_state", "item is not in escrow"),
                        reply,
                    ))
                }
                Err(e) => return Err((e.into(), reply)),
            };
            let first = !self.payment_checks.contains_key(&hash);
            self.payment_checks.entry(hash).or_default().extend(reply);
            if first {
                let inputs = self.inputs.clone();
                tokio::task::spawn_blocking(move || {
                    let result = match &event.body.kind {
                        EventKind::Settle { payment, .. } => adapter.check_settle(&escrow, payment),
                        _ => adapter.check_expire(&escrow),
                    };
                    let _ = inputs.blocking_send(Input::PaymentChecked {
                        event,
                        hash,
                        result,
                    });
                });
            }
            return Ok(None);
        }
        Ok(self.take_candidate(event, hash, subject, height, reply))
    }

    pub(super) fn take_candidate(
        &mut self,
        event: Event,
        hash: EventHash,
        subject: Subject,
        height: u64,
        reply: Option<Reply>,
    ) -> Option<(Submitted, Reply)> {
        let answer = reply.map(|r| {
            let (tx, rx) = oneshot::channel();
            self.waiters.entry(hash).or_default().push(tx);
            self.submitted_at.entry(hash).or_insert_with(Instant::now);
            (Submitted::Pending(rx), r)
        });
        self.add_candidate(event, hash, subject, height);
        answer
    }

    pub(super) fn payment_checked(
        &mut self,
        event: Event,
        hash: EventHash,
        result: Result<(), crate::payments::PaymentError>,
    ) {
        let replies = self.payment_checks.remove(&hash).unwrap_or_default();
        let outcome = result
            .map_err(|e| Rejection::new(e.code(), e.to_string()))
            .and_then(|()| self.validate(&event, hash));
        match outcome {
            Ok((subject, height)) => {
                self.add_candidate(event, hash, subject, height);
                for r in replies {
                    let (tx, rx) = oneshot::channel();
                    self.waiters.entry(hash).or_default().push(tx);
                    let _ = r.send(Ok(Submitted::Pending(rx)));
                }
            }
            Err(e) => {
                metrics::SETTLEMENTS.with_label_values(&["refused"]).inc();
                debug!(%hash, "not voting for {}: {}", event.body.kind.name(), e.message);
                for r in replies {
                    metrics::REJECTED.with_label_values(&[e.code]).inc();
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
    }

    /// Contextual validation against the certified state. Returns the event's slot.
    pub(super) fn validate(
        &mut self,
        event: &Event,
        hash: EventHash,
    ) -> Result<(Subject, u64), Rejection> {
        let _timer = metrics::VALIDATION_SECONDS.start_timer();
        self.validate_inner(event, hash)
    }

    pub(super) fn validate_inner(
        &mut self,
        event: &Event,
        hash: EventHash,
    ) -> Result<(Subject, u64), Rejection> {
        let subject = event.subject(hash);
        let height = event.body.height;
        let next = self.next_height(&subject)?;
        if height < next {
            return Err(match self.cfg.store.chain_at(&subject, height)? {
                Some(existing) if existing == hash => {
                    Rejection::new("already_certified", "event is already certified")
                }
                Some(_) => Rejection::new(
                    "stale_height",
                    format!("height {height} is already certified for another event (replay?)"),
                ),
                None => Rejection::new(
                    "stale_height",
                    format!("height {height} is below the chain's next height {next}"),
                ),
            });
        }
        if height > next {
            return Err(Rejection::new(
                "future_height",
                format!("height {height} is ahead of the chain's next height {next}: wait for the previous event's certificate"),
            ));
        }
        let transition =
            |e: hallmark_protocol::TransitionError| Rejection::new(e.code(), e.to_string());
        match &event.body.kind {
            EventKind::RegisterManufacturer { .. } => {}
            EventKind::Mint { .. } => {
                let m = ManufacturerId::of(&event.body.author);
                if self.cfg.store.manufacturer(&m)?.is_none() {
                    return Err(Rejection::new(
                        "unknown_manufacturer",
                        format!("manufacturer {m} is not registered"),
                    ));
                }
                apply_item_event(&self.cfg.federation, None, event, hash).map_err(transition)?;
            }
            EventKind::CreateOffer { item, .. } => {
                let offer = OfferRecord::from_event(event, hash).map_err(transition)?;
                offer
                    .check_against(cached_item(&mut self.items, &self.cfg.store, item)?)
                    .map_err(transition)?;
            }
            EventKind::Transfer { item, .. }
            | EventKind::Settle { item, .. }
            | EventKind::ExpireEscrow { item, .. }
            | EventKind::ReportStolen { item }
            | EventKind::Recover { item }
            | EventKind::Retire { item } => {
                let state = cached_item(&mut self.items, &self.cfg.store, item)?;
                apply_item_event(&self.cfg.federation, state, event, hash).map_err(transition)?;
            }
            EventKind::AcceptOffer { .. } => {
                let Subject::Item(item) = subject else {
                    return Err(Rejection::new(
                        "not_an_offer",
                        "accept_offer must embed a create_offer",
                    ));
                };
                let state = cached_item(&mut self.items, &self.cfg.store, &item)?;
                apply_item_event(&self.cfg.federation, state, event, hash).map_err(transition)?;
                if let (Some(p), EventKind::AcceptOffer { invoice, .. }) =
                    (&self.cfg.payments, &event.body.kind)
                {
                    if p.checks_deadlines() {
                        let Some(tip) = self.chain_tip else {
                            return Err(Rejection::new(
                                "chain_unavailable",
                                "this operator does not know the chain height yet",
                            ));
                        };
                        let d = invoice.deadline_height;
                        if d <= tip || d > tip + MAX_ESCROW_BLOCKS {
                            return Err(Rejection::new(
                                "bad_deadline",
                                format!("deadline {d} must be above the tip {tip} and at most {MAX_ESCROW_BLOCKS} blocks ahead"),
                            ));
                        }
                    }
                }
            }
        }
        Ok((subject, height))
    }

    pub(super) fn add_candidate(
        &mut self,
        event: Event,
        hash: EventHash,
        subject: Subject,
        height: u64,
    ) {
        if self.candidates.contains_key(&hash) {
            return;
        }
        self.candidates.insert(hash, (event, subject, height));
        let key = (subject, height);
        let actions = {
            let entry = self.slot_entry(key);
            let mut actions = entry.slot.add_candidate(hash);
            if let Some(votes) = self.early_votes.remove(&hash) {
                self.early_count -= votes.len();
                let entry = self.slots.get_mut(&key).expect("created above");
                for (op, v) in votes {
                    actions.extend(entry.slot.add_vote(op, v));
                }
            }
            actions
        };
        self.act(key, actions);
    }
}
