//! The operator's event loop: the one task that owns the operator's consensus state and writes
//! the store. Everything else (HTTP handlers, the gossip verifier, catch-up fetchers) talks to it
//! through one bounded channel of [`Input`]s.
//!
//! Per slot (subject, height) it runs a [`Slot`] of the two-phase protocol; its own votes are
//! written to the store with fsync, in one group commit per flush, before the signed batch that
//! carries them is published. Inputs are processed as they come and votes are flushed whenever
//! the input queue runs dry, so batches grow with the load.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use hallmark_p2p::{Command, P2pHandle, PeerId};
use hallmark_protocol::consensus::{Action, Slot, SlotConfig};
use hallmark_protocol::{
    apply_item_event, encode, Attestation, BatchVote, Certificate, CertifiedEvent, Event,
    EventHash, EventKind, Federation, ItemId, ItemState, ItemStatus, ManufacturerId,
    ManufacturerRecord, OfferRecord, Phase, SigningKey, Subject, VerifiedBatch, Vote,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

mod checkpoints;
mod retired;
pub use checkpoints::{CheckpointConfig, MAX_EVENTS_PER_CHECKPOINT};

use hallmark_protocol::checkpoint::CheckpointHash;

use crate::anchoring::{AnchorCmd, ChainEvent};
use crate::fifo::Fifo;
use crate::metrics;
use crate::payments::{PaymentAdapter, MAX_ESCROW_BLOCKS};
use crate::store::{slot_key, FinalCheckpoint, StateChange, Store, StoreError};
use crate::wire::{
    Gossip, LogEntry, Proposal, Rpc, RpcResponse, MAX_CATCHUP_EVENTS, MAX_CATCHUP_LOG,
};
use retired::Retired;

/// Inputs queued to the event loop.
pub const INPUT_QUEUE: usize = 8192;
/// Most inputs handled before votes are flushed.
const MAX_INPUTS_PER_FLUSH: usize = 2048;
/// Most votes for unknown events kept.
const MAX_EARLY_VOTES: usize = 100_000;
/// Most certified events kept ahead of their chain.
const MAX_ORPHANS: usize = 100_000;
/// Most slots with candidates waiting for their chain to advance.
const MAX_DEFERRED_SLOTS: usize = 10_000;
/// Least time between two fetches of one subject's chain.
const CHAIN_FETCH_EVERY: Duration = Duration::from_secs(2);
/// Least time between two flushes of votes while votes keep coming.
const FLUSH_EVERY: Duration = Duration::from_millis(2);
/// Slots in flight from which the loop counts as loaded (and waits to batch votes). At 950 ev/s
/// arriving evenly, 4 instead of 16 gave p50 11-12.5 ms against 16-22.5 and p99 41-44 ms
/// against 44-61 (three alternating pairs of 30 s runs): batches fill before the cores do.
const BUSY_SLOTS: usize = 4;

/// How many item states the loop keeps in memory.
const ITEM_CACHE: usize = 65_536;

/// How often stalled rounds and catch-up are checked.
const TICK: Duration = Duration::from_millis(200);

/// Why a submitted event was refused. `code` is the API's machine-readable error code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// Machine-readable code.
    pub code: &'static str,
    /// Human explanation.
    pub message: String,
}

impl Rejection {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Rejection {
    fn from(e: StoreError) -> Self {
        Self::new("internal", e.to_string())
    }
}

/// What a submission got.
pub enum Submitted {
    /// Already certified.
    Certified(Box<CertifiedEvent>),
    /// Being voted on; the receiver fires when it is certified.
    Pending(oneshot::Receiver<CertifiedEvent>),
}

/// A gossip payload whose signatures have been checked.
pub enum Verified {
    /// A vote batch and the events it introduces (author signatures checked).
    Votes {
        /// Events.
        events: Vec<(Event, EventHash)>,
        /// Checkpoint proposals (validated by the event loop).
        proposals: Vec<Proposal>,
        /// The batch.
        batch: Box<VerifiedBatch>,
    },
    /// Certified events (certificates checked).
    Certified(Vec<CertifiedEvent>),
    /// Final checkpoints (certificates checked).
    Checkpoints(Vec<FinalCheckpoint>),
}

/// Inputs of the event loop.
pub enum Input {
    /// A client's event (author signature already checked).
    Submit {
        /// Event.
        event: Event,
        /// Its hash.
        hash: EventHash,
        /// The answer.
        reply: oneshot::Sender<Result<Submitted, Rejection>>,
    },
    /// Verified gossip.
    Gossip(Verified),
    /// Verified certified events fetched by catch-up from `peer`, starting at `from`.
    CaughtUp {
        /// Peer.
        peer: PeerId,
        /// Position asked for.
        from: u64,
        /// The peer's log length.
        log_len: u64,
        /// Log entries the peer returned (some may have been dropped as already held).
        returned: u64,
        /// Events not held here yet, verified.
        events: Vec<CertifiedEvent>,
    },
    /// A member connected or disconnected.
    Peer(PeerId, bool),
    /// News from the anchoring worker.
    Chain(ChainEvent),
    /// A payment adapter's verdict on a Settle or ExpireEscrow.
    PaymentChecked {
        /// The event.
        event: Event,
        /// Its hash.
        hash: EventHash,
        /// The verdict.
        result: Result<(), crate::payments::PaymentError>,
    },
}

type Reply = oneshot::Sender<Result<Submitted, Rejection>>;

/// What the event loop is built from.
pub struct EngineConfig {
    /// The federation.
    pub federation: Federation,
    /// This operator's index.
    pub me: usize,
    /// Its key.
    pub key: SigningKey,
    /// Its store.
    pub store: Store,
    /// Network handle.
    pub p2p: P2pHandle,
    /// Members' PeerIds by operator index.
    pub peer_ids: Vec<PeerId>,
    /// Payment checks (None: settlement is refused).
    pub payments: Option<std::sync::Arc<dyn PaymentAdapter>>,
    /// Accepted clock skew of events, ms.
    pub timestamp_window_ms: u64,
    /// Base round timeout.
    pub round_timeout: Duration,
    /// The operator's clock (ms since the epoch).
    pub clock: fn() -> u64,
    /// Checkpoint and anchoring schedule.
    pub checkpoints: CheckpointConfig,
    /// The anchoring worker, if this operator has a bitcoind.
    pub anchor: Option<std::sync::mpsc::Sender<AnchorCmd>>,
}

struct SlotEntry {
    slot: Slot,
    deadline: Instant,
}

/// The event loop's state.
pub struct Engine {
    cfg: EngineConfig,
    slot_cfg: SlotConfig,
    inputs: mpsc::Sender<Input>,
    slots: HashMap<(Subject, u64), SlotEntry>,
    /// Recently decided slots, for evidence from votes that arrive after the decision.
    retired: Retired,
    /// Valid candidate events not yet certified, with their slot.
    candidates: HashMap<EventHash, (Event, Subject, u64)>,
    /// Candidates that arrived ahead of their chain, revalidated when it advances.
    deferred: HashMap<(Subject, u64), Vec<(Event, EventHash)>>,
    commit_atts: HashMap<(EventHash, u32), BTreeMap<usize, Attestation>>,
    early_votes: HashMap<EventHash, Vec<(usize, Vote)>>,
    early_count: usize,
    orphans: BTreeMap<(Subject, u64), CertifiedEvent>,
    waiters: HashMap<EventHash, Vec<oneshot::Sender<CertifiedEvent>>>,
    out_votes: Vec<Vote>,
    out_events: Vec<Event>,
    out_certs: Vec<CertifiedEvent>,
    announced: HashSet<EventHash>,
    dirty: HashSet<(Subject, u64)>,
    peers: HashSet<PeerId>,
    cursors: HashMap<PeerId, u64>,
    catching_up: HashSet<PeerId>,
    chain_fetches: HashMap<Subject, Instant>,
    next_peer: usize,
    cp_candidates: HashMap<EventHash, Proposal>,
    cp_deferred: Vec<Proposal>,
    cp_orphans: BTreeMap<u64, FinalCheckpoint>,
    proposed: HashSet<(u64, u32)>,
    out_proposals: Vec<Proposal>,
    out_final: Vec<FinalCheckpoint>,
    final_at: HashMap<u64, Instant>,
    anchored_by_me: HashSet<u64>,
    cp_by_hash: HashMap<CheckpointHash, u64>,
    last_checkpoint_at: Instant,
    last_flush: Instant,
    cp_due_since: Option<Instant>,
    payment_checks: HashMap<EventHash, Vec<Reply>>,
    chain_tip: Option<u32>,
    submitted_at: HashMap<EventHash, Instant>,
    locked_at: HashMap<hallmark_protocol::ItemId, Instant>,
    /// Item states (or their absence) as the store holds them, for the items read or written
    /// last: the loop is the store's only writer, so it keeps them exact, and validating and
    /// applying an event reads its item's state several times.
    items: Fifo<ItemId, Option<ItemState>>,
}

impl Engine {
    /// Creates the loop; `inputs` is the sender half of its own queue (catch-up tasks use it).
    pub fn new(cfg: EngineConfig, inputs: mpsc::Sender<Input>) -> Self {
        let q = cfg.federation.quorum();
        let slot_cfg = SlotConfig {
            m: q.m() as usize,
            n: q.n() as usize,
            f: cfg.federation.params().max_faulty as usize,
        };
        Self {
            cfg,
            slot_cfg,
            inputs,
            slots: HashMap::new(),
            retired: Retired::new(),
            candidates: HashMap::new(),
            deferred: HashMap::new(),
            commit_atts: HashMap::new(),
            early_votes: HashMap::new(),
            early_count: 0,
            orphans: BTreeMap::new(),
            waiters: HashMap::new(),
            out_votes: Vec::new(),
            out_events: Vec::new(),
            out_certs: Vec::new(),
            announced: HashSet::new(),
            dirty: HashSet::new(),
            peers: HashSet::new(),
            cursors: HashMap::new(),
            catching_up: HashSet::new(),
            chain_fetches: HashMap::new(),
            next_peer: 0,
            cp_candidates: HashMap::new(),
            cp_deferred: Vec::new(),
            cp_orphans: BTreeMap::new(),
            proposed: HashSet::new(),
            out_proposals: Vec::new(),
            out_final: Vec::new(),
            final_at: HashMap::new(),
            anchored_by_me: HashSet::new(),
            cp_by_hash: HashMap::new(),
            last_checkpoint_at: Instant::now(),
            last_flush: Instant::now(),
            cp_due_since: None,
            payment_checks: HashMap::new(),
            chain_tip: None,
            submitted_at: HashMap::new(),
            locked_at: HashMap::new(),
            items: Fifo::new(ITEM_CACHE),
        }
        .with_unanchored_checkpoints()
    }

    /// After a restart: the last checkpoints without an anchor still need one.
    fn with_unanchored_checkpoints(mut self) -> Self {
        let next = self.cfg.store.next_checkpoint().unwrap_or(0);
        for n in next.saturating_sub(16)..next {
            if matches!(self.cfg.store.anchor(n), Ok(None)) {
                self.final_at.insert(n, Instant::now());
            }
        }
        self
    }

    /// The slot a vote target (event or checkpoint hash) is a candidate in.
    fn slot_of(&self, target: &EventHash) -> Option<(Subject, u64)> {
        if let Some((_, s, h)) = self.candidates.get(target) {
            return Some((*s, *h));
        }
        self.cp_candidates
            .get(target)
            .map(|p| (Subject::Checkpoint, p.checkpoint.number))
    }

    /// An item's certified state.
    fn item(&mut self, id: &ItemId) -> Result<Option<ItemState>, StoreError> {
        if let Some(s) = self.items.get(id) {
            return Ok(s.clone());
        }
        let s = self.cfg.store.item(id)?;
        self.items.insert(*id, s.clone());
        Ok(s)
    }

    /// Next height of a subject's chain.
    fn next_height(&mut self, subject: &Subject) -> Result<u64, StoreError> {
        match subject {
            Subject::Item(i) => Ok(self.item(i)?.map_or(0, |s| s.height + 1)),
            _ => self.cfg.store.next_height(subject),
        }
    }

    /// Whether `hash`, an event at `height` of `subject`'s chain, is certified (and applied)
    /// here. Most events asked about are new, at or above their chain's next height: answered
    /// without reading the store.
    fn is_certified(
        &mut self,
        hash: &EventHash,
        subject: &Subject,
        height: u64,
    ) -> Result<bool, StoreError> {
        if self.cfg.store.recently_certified(hash) {
            return Ok(true);
        }
        if height >= self.next_height(subject)? {
            return Ok(false);
        }
        Ok(self.cfg.store.chain_at(subject, height)? == Some(*hash))
    }

    /// Runs until `cancel` fires or every input sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // This iteration's work: from its first input (or tick), without the time spent
            // waiting for more inputs.
            let mut waited = Duration::ZERO;
            let started = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let started = Instant::now();
                    self.on_tick();
                    started
                }
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    let started = Instant::now();
                    self.handle(input);
                    let mut n = 1;
                    while n < MAX_INPUTS_PER_FLUSH {
                        match rx.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                    // Under load (many slots in flight), batch votes over at least FLUSH_EVERY:
                    // fewer, larger batches (one signature, one fsync, one gossip message each)
                    // leave more CPU for everything else, which shortens queues more than the
                    // wait lengthens them. Below that load nothing waits.
                    let since = self.last_flush.elapsed();
                    let busy = self.slots.len() >= BUSY_SLOTS;
                    if busy && !self.out_votes.is_empty() && since < FLUSH_EVERY {
                        let until = tokio::time::Instant::now() + (FLUSH_EVERY - since);
                        while n < MAX_INPUTS_PER_FLUSH {
                            let wait = Instant::now();
                            let input = tokio::time::timeout_at(until, rx.recv()).await;
                            waited += wait.elapsed();
                            match input {
                                Ok(Some(input)) => self.handle(input),
                                _ => break,
                            }
                            n += 1;
                        }
                    }
                    started
                }
            };
            if let Err(e) = self.flush().await {
                error!("cannot persist votes, stopping: {e}");
                cancel.cancel();
                break;
            }
            metrics::LOOP_SECONDS.observe((started.elapsed() - waited).as_secs_f64());
        }
        info!("event loop stopped");
    }

    fn handle(&mut self, input: Input) {
        let result = match input {
            Input::Submit { event, hash, reply } => {
                self.submit(event, hash, reply);
                Ok(())
            }
            Input::PaymentChecked {
                event,
                hash,
                result,
            } => {
                self.payment_checked(event, hash, result);
                Ok(())
            }
            Input::Gossip(Verified::Votes {
                events,
                proposals,
                batch,
            }) => self.on_votes(events, proposals, &batch),
            Input::Gossip(Verified::Checkpoints(list)) => list
                .into_iter()
                .try_for_each(|f| self.on_final_checkpoint(f)),
            Input::Chain(ev) => {
                if let ChainEvent::Tip(h) = &ev {
                    self.chain_tip = Some(*h);
                }
                self.on_chain(ev)
            }
            Input::Gossip(Verified::Certified(list)) => {
                list.into_iter().try_for_each(|ce| self.on_certified(ce))
            }
            Input::CaughtUp {
                peer,
                from,
                log_len,
                returned: n,
                events,
            } => {
                self.catching_up.remove(&peer);
                let r = events.into_iter().try_for_each(|ce| self.on_certified(ce));
                let cursor = self.cursors.entry(peer).or_insert(0);
                if *cursor == from {
                    *cursor = from + n;
                }
                if from + n < log_len {
                    self.request_catchup(peer);
                }
                r
            }
            Input::Peer(peer, up) => {
                if up {
                    self.peers.insert(peer);
                    self.request_catchup(peer);
                } else {
                    self.peers.remove(&peer);
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            error!("store error: {e}");
        }
    }

    fn submit(&mut self, event: Event, hash: EventHash, reply: Reply) {
        match self.admit(event, hash, Some(reply)) {
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
    fn admit(
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
            let escrow = match self.item(&match subject {
                Subject::Item(i) => i,
                _ => unreachable!("settle and expire are item events"),
            }) {
                Ok(Some(ItemState {
                    status: ItemStatus::LockedInEscrow(e),
                    ..
                })) => *e,
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

    fn take_candidate(
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

    fn payment_checked(
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
    fn validate(&mut self, event: &Event, hash: EventHash) -> Result<(Subject, u64), Rejection> {
        let _timer = metrics::VALIDATION_SECONDS.start_timer();
        self.validate_inner(event, hash)
    }

    fn validate_inner(
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
                    .check_against(self.item(item)?.as_ref())
                    .map_err(transition)?;
            }
            EventKind::Transfer { item, .. }
            | EventKind::Settle { item, .. }
            | EventKind::ExpireEscrow { item, .. }
            | EventKind::ReportStolen { item }
            | EventKind::Recover { item }
            | EventKind::Retire { item } => {
                let state = self.item(item)?;
                apply_item_event(&self.cfg.federation, state.as_ref(), event, hash)
                    .map_err(transition)?;
            }
            EventKind::AcceptOffer { .. } => {
                let Subject::Item(item) = subject else {
                    return Err(Rejection::new(
                        "not_an_offer",
                        "accept_offer must embed a create_offer",
                    ));
                };
                let state = self.item(&item)?;
                apply_item_event(&self.cfg.federation, state.as_ref(), event, hash)
                    .map_err(transition)?;
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

    fn add_candidate(&mut self, event: Event, hash: EventHash, subject: Subject, height: u64) {
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

    fn slot_entry(&mut self, key: (Subject, u64)) -> &mut SlotEntry {
        let store = &self.cfg.store;
        let cfg = self.slot_cfg;
        let me = self.cfg.me;
        let timeout = self.cfg.round_timeout;
        self.slots.entry(key).or_insert_with(|| {
            let own = store.own_votes(&key.0, key.1).unwrap_or_else(|e| {
                // Without our earlier votes we could vote twice: refuse to take part.
                panic!("cannot read own votes at a slot: {e}")
            });
            SlotEntry {
                slot: Slot::new(cfg, Some(me), own),
                deadline: Instant::now() + timeout,
            }
        })
    }

    fn act(&mut self, key: (Subject, u64), actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Vote(v) => {
                    // The event travels with the first prevote of the operator a client gave it
                    // to (others got it from that one); in later rounds everyone re-sends it.
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
                    self.out_votes.push(v);
                    self.dirty.insert(key);
                }
                Action::Decide { event, round } => {
                    let r = if self.cp_candidates.contains_key(&event) {
                        self.certify_checkpoint(event, round)
                    } else {
                        self.try_certify(event, round)
                    };
                    if let Err(e) = r {
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
    }

    fn on_votes(
        &mut self,
        events: Vec<(Event, EventHash)>,
        proposals: Vec<Proposal>,
        batch: &VerifiedBatch,
    ) -> Result<(), StoreError> {
        let Some(op) = self.cfg.federation.operator_index(&batch.operator()) else {
            return Ok(());
        };
        metrics::PARTICIPATION
            .with_label_values(&[&op.to_string()])
            .inc_by(batch.votes().len() as u64);
        for (event, hash) in events {
            self.consider(event, hash)?;
        }
        for p in proposals {
            self.consider_proposal(p)?;
        }
        for (i, vote) in batch.votes().iter().enumerate() {
            // Commit votes are kept (for the certificate) while their event is undecided here;
            // one for an event already certified can only improve the stored certificate.
            let keep_commit = |engine: &mut Self| {
                if vote.phase == Phase::Commit {
                    if let Some(att) = batch.attestation(i) {
                        engine
                            .commit_atts
                            .entry((vote.event, vote.round))
                            .or_default()
                            .insert(op, att);
                    }
                }
            };
            if let Some(key) = self.slot_of(&vote.event) {
                keep_commit(self);
                let actions = self.slot_entry(key).slot.add_vote(op, *vote);
                self.act(key, actions);
            } else if let Some(rank) = self.cfg.store.rank(&vote.event, &self.cfg.federation)? {
                // A late commit vote improves the certificate only if it is of the same round
                // and from an operator that ranks before one of the signers.
                let (round, signers) = &rank;
                let improves = !signers.contains(&op) && signers.iter().any(|&s| s > op);
                if vote.phase == Phase::Commit && vote.round == *round && improves {
                    if let Some(stored) = self.cfg.store.certificate(&vote.event)? {
                        let att = batch.attestation(i).expect("index within the batch");
                        self.upgrade_certificate(&stored, vote.round, [att])?;
                    }
                }
            } else if self.retired.lost(&vote.event) {
                if let Some((key, evidence)) = self.retired.witness(op, *vote) {
                    self.act(key, vec![evidence]);
                }
            } else if self.early_count < MAX_EARLY_VOTES {
                keep_commit(self);
                self.early_votes
                    .entry(vote.event)
                    .or_default()
                    .push((op, *vote));
                self.early_count += 1;
            }
        }
        Ok(())
    }

    /// An event gossiped by another operator: validate it and, if valid, take it as a candidate.
    fn consider(&mut self, event: Event, hash: EventHash) -> Result<(), StoreError> {
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

    fn try_certify(&mut self, event: EventHash, round: u32) -> Result<(), StoreError> {
        let Some(atts) = self.commit_atts.get(&(event, round)) else {
            return Ok(());
        };
        if atts.len() < self.slot_cfg.m {
            return Ok(());
        }
        let Some((ev, _, _)) = self.candidates.get(&event) else {
            return Ok(());
        };
        let certificate = Certificate::assemble(
            &self.cfg.federation,
            Vote::commit(event, round),
            atts.values().cloned(),
        )
        .expect("m attestations of members assemble");
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
        self.on_certified(ce)
    }

    /// After more commit votes or another certificate arrive for a certified event, keep the
    /// canonical certificate (the lowest round, then the `m` lowest operator indices; see
    /// [`Certificate::rank`]), so all operators converge on byte-identical certificates.
    fn upgrade_certificate(
        &mut self,
        stored: &Certificate,
        round: u32,
        extra: impl IntoIterator<Item = Attestation>,
    ) -> Result<(), StoreError> {
        if round > stored.round {
            return Ok(());
        }
        let same_round = round == stored.round;
        let own = stored.attestations.iter().filter(|_| same_round).cloned();
        let Ok(best) = Certificate::assemble(
            &self.cfg.federation,
            Vote::commit(stored.event, round),
            own.chain(extra),
        ) else {
            return Ok(());
        };
        let fed = &self.cfg.federation;
        let rank = best.rank(fed);
        if rank < stored.rank(fed) {
            self.cfg.store.replace_certificate(&best, rank)?;
        }
        Ok(())
    }

    /// `certificate` in canonical form ([`Certificate::assemble`]) with the commit votes for it
    /// this operator collected merged in: the certificate that was gossiped to us may hold a
    /// different set than ours, or paths with another (unsigned) tree size.
    fn with_collected_votes(&self, certificate: &Certificate) -> Certificate {
        let collected = self
            .commit_atts
            .get(&(certificate.event, certificate.round))
            .into_iter()
            .flat_map(|atts| atts.values().cloned());
        certificate.merged_with(&self.cfg.federation, collected)
    }

    /// A certified event (ours, gossiped, or caught up; certificate already verified).
    fn on_certified(&mut self, ce: CertifiedEvent) -> Result<(), StoreError> {
        let hash = ce.certificate.event;
        let subject = ce.event.subject(hash);
        let height = ce.event.body.height;
        if self.is_certified(&hash, &subject, height)? {
            if let Some(stored) = self.cfg.store.certificate(&hash)? {
                let round = ce.certificate.round;
                self.upgrade_certificate(&stored, round, ce.certificate.attestations)?;
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
        self.apply(subject, &ce)?;
        // Later events of this chain that arrived early.
        let mut h = height + 1;
        while let Some(next) = self.orphans.remove(&(subject, h)) {
            self.apply(subject, &next)?;
            h += 1;
        }
        Ok(())
    }

    fn apply(&mut self, subject: Subject, ce: &CertifiedEvent) -> Result<(), StoreError> {
        let hash = ce.certificate.event;
        let ce = &CertifiedEvent {
            event: ce.event.clone(),
            certificate: self.with_collected_votes(&ce.certificate),
        };
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
                let state = self.item(&item)?;
                apply_item_event(&self.cfg.federation, state.as_ref(), &ce.event, hash)
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
        self.cfg.store.apply(&subject, ce, &change, rank)?;
        if let StateChange::Item(state) = change {
            self.items.insert(state.id, Some(state));
        }
        metrics::CERTIFIED
            .with_label_values(&[ce.event.body.kind.name()])
            .inc();
        metrics::LOG_LEN.inc();
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
        let mut rounds = 0;
        if let Some(entry) = self.slots.remove(&(subject, height)) {
            gone.extend(entry.slot.candidates().iter().copied());
            rounds = entry.slot.round();
            self.retired.retire((subject, height), entry.slot);
        }
        for c in gone {
            self.candidates.remove(&c);
            self.waiters.remove(&c);
            self.announced.remove(&c);
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

    fn on_tick(&mut self) {
        let now = Instant::now();
        let mut stalled = Vec::new();
        for (key, entry) in &mut self.slots {
            if entry.deadline <= now && entry.slot.decided().is_none() {
                let actions = entry.slot.on_timeout();
                let round = entry.slot.round();
                entry.deadline = now + self.cfg.round_timeout * (round + 1).min(10);
                stalled.push((*key, actions));
            }
        }
        for (key, actions) in stalled {
            // Re-send our votes at a stalled slot: a peer may have missed them.
            let own = self.slots[&key].slot.own().clone();
            for (r, e) in &own.prevotes {
                self.out_votes.push(Vote::prevote(*e, *r));
                if let Some((ev, _, _)) = self.candidates.get(e) {
                    self.out_events.push(ev.clone());
                } else if let Some(p) = self.cp_candidates.get(e) {
                    self.out_proposals.push(p.clone());
                }
            }
            for (r, e) in &own.commits {
                self.out_votes.push(Vote::commit(*e, *r));
            }
            self.act(key, actions);
        }
        // Catch up from one connected peer per tick, round robin.
        let peers: Vec<PeerId> = self
            .cfg
            .peer_ids
            .iter()
            .filter(|p| self.peers.contains(p))
            .copied()
            .collect();
        if !peers.is_empty() {
            let p = peers[self.next_peer % peers.len()];
            self.next_peer += 1;
            self.request_catchup(p);
        }
        let r = self
            .retry_deferred_proposals()
            .and_then(|()| self.maybe_propose())
            .and_then(|()| self.anchor_duty());
        if let Err(e) = r {
            error!("store error: {e}");
        }
        if self.early_count > MAX_EARLY_VOTES / 2 {
            // Votes for events that never arrived (their slot was decided without us, or they
            // were invalid): drop them rather than grow.
            warn!(
                count = self.early_count,
                "dropping votes for unknown events"
            );
            self.early_votes.clear();
            self.early_count = 0;
        }
        if self.commit_atts.len() > MAX_EARLY_VOTES {
            // Commit votes for events that never became candidates here: drop them too.
            let (candidates, checkpoints) = (&self.candidates, &self.cp_candidates);
            self.commit_atts
                .retain(|(e, _), _| candidates.contains_key(e) || checkpoints.contains_key(e));
        }
        metrics::HELD_VOTES.set((self.commit_atts.len() + self.early_count) as i64);
        metrics::PENDING_SLOTS.set(self.slots.len() as i64);
        metrics::STORE_BYTES.set(self.cfg.store.size_on_disk() as i64);
    }

    /// Reads the next stretch of `peer`'s log (hashes and certificate ranks only), fetches the
    /// events this operator lacks or holds with a worse-ranked certificate, and feeds them back
    /// verified as [`Input::CaughtUp`].
    fn request_catchup(&mut self, peer: PeerId) {
        if !self.catching_up.insert(peer) {
            return;
        }
        let from = *self.cursors.entry(peer).or_insert(0);
        let our_next_checkpoint = self.cfg.store.next_checkpoint().unwrap_or(0);
        let store = self.cfg.store.clone();
        let p2p = self.cfg.p2p.clone();
        let inputs = self.inputs.clone();
        let federation = self.cfg.federation.clone();
        tokio::spawn(async move {
            let rpc = Rpc::LogRange {
                from,
                limit: MAX_CATCHUP_LOG as u32,
            };
            let (mut log_len, mut returned, mut events) = (0, 0, Vec::new());
            if let Some(r) = request(&p2p, peer, &rpc).await {
                if r.next_checkpoint > our_next_checkpoint {
                    fetch_checkpoints(
                        &p2p,
                        &inputs,
                        &federation,
                        &store,
                        peer,
                        our_next_checkpoint,
                    )
                    .await;
                }
                let (fed, st) = (federation.clone(), store.clone());
                let log = r.log;
                let n = log.len().min(MAX_CATCHUP_LOG) as u64;
                let wanted = tokio::task::spawn_blocking(move || {
                    log.iter()
                        .take(MAX_CATCHUP_LOG)
                        .filter(|e| wants(&st, &fed, e))
                        .map(|e| e.event)
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                let mut complete = true;
                for chunk in wanted.chunks(MAX_CATCHUP_EVENTS) {
                    let rpc = Rpc::Events {
                        hashes: chunk.to_vec(),
                    };
                    match ask(&p2p, &federation, &store, peer, &rpc).await {
                        Some((r, _)) => events.extend(r.events),
                        None => {
                            complete = false;
                            break;
                        }
                    }
                }
                if complete {
                    (log_len, returned) = (r.log_len, n);
                }
            } else {
                debug!(%peer, "catch-up request failed");
            }
            let _ = inputs
                .send(Input::CaughtUp {
                    peer,
                    from,
                    log_len,
                    returned,
                    events,
                })
                .await;
        });
    }

    /// Asks a connected peer for certified events by hash (fed back as gossip once verified).
    fn fetch_events(&mut self, hashes: &[EventHash]) {
        for chunk in hashes.chunks(MAX_CATCHUP_EVENTS) {
            self.spawn_fetch(Rpc::Events {
                hashes: chunk.to_vec(),
            });
        }
    }

    /// A connected member, if any.
    fn connected_peer(&self) -> Option<PeerId> {
        self.cfg
            .peer_ids
            .iter()
            .find(|p| self.peers.contains(p))
            .copied()
    }

    /// Sends `rpc` to a connected peer and feeds the verified certified events it returns back
    /// to the loop.
    fn spawn_fetch(&self, rpc: Rpc) {
        let Some(peer) = self.connected_peer() else {
            return;
        };
        let (p2p, inputs, federation) = (
            self.cfg.p2p.clone(),
            self.inputs.clone(),
            self.cfg.federation.clone(),
        );
        let store = self.cfg.store.clone();
        tokio::spawn(async move {
            if let Some((r, _)) = ask(&p2p, &federation, &store, peer, &rpc).await {
                let _ = inputs
                    .send(Input::Gossip(Verified::Certified(r.events)))
                    .await;
            }
        });
    }

    /// Asks a connected peer for a subject's chain from `from_height` (at most one request per
    /// subject every few seconds).
    fn fetch_chain(&mut self, subject: Subject, from_height: u64) {
        let now = Instant::now();
        if self
            .chain_fetches
            .get(&subject)
            .is_some_and(|t| now.duration_since(*t) < CHAIN_FETCH_EVERY)
        {
            return;
        }
        if self.chain_fetches.len() > MAX_DEFERRED_SLOTS {
            self.chain_fetches
                .retain(|_, t| now.duration_since(*t) < CHAIN_FETCH_EVERY);
        }
        self.chain_fetches.insert(subject, now);
        self.spawn_fetch(Rpc::Chain {
            subject,
            from_height,
        });
    }

    /// Persists dirty slots' votes (fsync), then signs and publishes them with new certificates.
    async fn flush(&mut self) -> Result<(), StoreError> {
        if !self.out_votes.is_empty() {
            self.last_flush = Instant::now();
        }
        if !self.dirty.is_empty() {
            let dirty: Vec<(Subject, u64)> = self.dirty.drain().collect();
            let owned: Vec<_> = dirty
                .iter()
                .filter_map(|k| self.slots.get(k).map(|e| (k.0, k.1, e.slot.own().clone())))
                .collect();
            self.cfg
                .store
                .put_own_votes(owned.iter().map(|(s, h, v)| (s, *h, v)))?;
        }
        if !self.out_votes.is_empty() {
            let votes = std::mem::take(&mut self.out_votes);
            let events = std::mem::take(&mut self.out_events);
            let checkpoints = std::mem::take(&mut self.out_proposals);
            let batch = BatchVote::sign(&self.cfg.key, self.cfg.federation.id(), votes)
                .expect("a non-empty batch of at most MAX_BATCH_VOTES signs");
            metrics::VOTE_BATCH_SIZE.observe(batch.votes().len() as f64);
            let msg = Gossip::Votes {
                events,
                checkpoints,
                batch: batch.to_batch_vote(),
                nonce: rand::random(),
            };
            let _ = self.cfg.p2p.send(Command::Publish(encode(&msg))).await;
            // Our own commit votes count towards certificates here too.
            let me = self.cfg.me;
            let mut decided = Vec::new();
            for (i, v) in batch.votes().iter().enumerate() {
                if v.phase != Phase::Commit {
                    continue;
                }
                // (An event certified since the vote was cast needs it no more.)
                let Some(key) = self.slot_of(&v.event) else {
                    continue;
                };
                if let Some(att) = batch.attestation(i) {
                    self.commit_atts
                        .entry((v.event, v.round))
                        .or_default()
                        .insert(me, att);
                }
                if self
                    .slots
                    .get(&key)
                    .and_then(|e| e.slot.decided())
                    .is_some()
                {
                    decided.push((v.event, v.round));
                }
            }
            for (e, r) in decided {
                if self.cp_candidates.contains_key(&e) {
                    self.certify_checkpoint(e, r)?;
                } else {
                    self.try_certify(e, r)?;
                }
            }
        }
        // This iteration's unsynced writes (certified events) in one write to the WAL file.
        self.cfg.store.flush_wal()?;
        if !self.out_certs.is_empty() {
            let certs = std::mem::take(&mut self.out_certs);
            let _ = self
                .cfg
                .p2p
                .send(Command::Publish(encode(&Gossip::Certified(certs))))
                .await;
        }
        if !self.out_final.is_empty() {
            let list = std::mem::take(&mut self.out_final);
            let _ = self
                .cfg
                .p2p
                .send(Command::Publish(encode(&Gossip::Checkpoints(list))))
                .await;
        }
        Ok(())
    }
}

/// Fetches final checkpoints from `from` off a peer and feeds the verified ones to the loop.
async fn fetch_checkpoints(
    p2p: &P2pHandle,
    inputs: &mpsc::Sender<Input>,
    federation: &Federation,
    store: &Store,
    peer: PeerId,
    from: u64,
) {
    let Some((r, _)) = ask(p2p, federation, store, peer, &Rpc::Checkpoints { from }).await else {
        return;
    };
    let list: Vec<FinalCheckpoint> = r
        .checkpoints
        .into_iter()
        .filter(|f| f.certified.verify(federation).is_ok())
        .collect();
    if !list.is_empty() {
        let _ = inputs
            .send(Input::Gossip(Verified::Checkpoints(list)))
            .await;
    }
}

/// Sends `rpc` to `peer`; returns its response with the certified events this operator does not
/// hold yet, verified off the event loop (a certificate is `m` signature checks; unverifiable
/// ones are dropped), and how many events the peer returned.
async fn ask(
    p2p: &P2pHandle,
    federation: &Federation,
    store: &Store,
    peer: PeerId,
    rpc: &Rpc,
) -> Option<(RpcResponse, u64)> {
    let mut r = request(p2p, peer, rpc).await?;
    let returned = r.events.len() as u64;
    let (events, fed, store) = (
        std::mem::take(&mut r.events),
        federation.clone(),
        store.clone(),
    );
    let (events, forged) = tokio::task::spawn_blocking(move || {
        let mut forged = 0usize;
        let events: Vec<CertifiedEvent> = events
            .into_iter()
            .filter(|ce| !holds(&store, &fed, ce))
            .filter(|ce| {
                let ok = ce.verify(&fed).is_ok();
                forged += usize::from(!ok);
                ok
            })
            .collect();
        (events, forged)
    })
    .await
    .unwrap_or_default();
    if forged > 0 {
        warn!(%peer, forged, "catch-up response with events that do not verify");
        let _ = p2p.send(Command::Offence(peer)).await;
    }
    r.events = events;
    Some((r, returned))
}

/// Sends `rpc` to `peer` and decodes the response (an undecodable one counts against the peer).
async fn request(p2p: &P2pHandle, peer: PeerId, rpc: &Rpc) -> Option<RpcResponse> {
    let bytes = p2p.request(peer, encode(rpc)).await.ok()?;
    let Ok(r) = hallmark_protocol::decode::<RpcResponse>(&bytes) else {
        warn!(%peer, "undecodable catch-up response");
        let _ = p2p.send(Command::Offence(peer)).await;
        return None;
    };
    Some(r)
}

/// Whether a peer's log entry names an event this operator lacks, or holds with a certificate
/// that ranks after the peer's (then the peer's is fetched, checked and kept).
fn wants(store: &Store, federation: &Federation, entry: &LogEntry) -> bool {
    match store.rank(&entry.event, federation) {
        Ok(Some(ours)) => entry.rank() < ours,
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Whether this operator already holds `ce`'s event certified (then its certificate need not be
/// checked again: certificate checks are the bulk of an operator's CPU).
fn holds(store: &Store, federation: &Federation, ce: &CertifiedEvent) -> bool {
    match store.rank(&ce.certificate.event, federation) {
        // Unless it carries a certificate that ranks before ours: then it is checked and kept.
        Ok(Some(ours)) => ours <= ce.certificate.rank(federation),
        _ => false,
    }
}

/// Answers a catch-up request from the store (called off the event loop).
pub fn serve_rpc(store: &Store, federation: &Federation, request: &[u8]) -> Vec<u8> {
    let log_len = store.log_len();
    let next_checkpoint = store.next_checkpoint().unwrap_or(0);
    let mut resp = RpcResponse {
        log_len,
        events: Vec::new(),
        next_checkpoint,
        checkpoints: Vec::new(),
        log: Vec::new(),
    };
    match hallmark_protocol::decode::<Rpc>(request) {
        Ok(Rpc::LogRange { from, limit }) => {
            resp.log = store
                .log_entries(from, (limit as usize).min(MAX_CATCHUP_LOG), federation)
                .unwrap_or_default();
        }
        Ok(Rpc::Chain {
            subject,
            from_height,
        }) => {
            resp.events = store
                .chain(&subject)
                .unwrap_or_default()
                .into_iter()
                .filter(|ce| ce.event.body.height >= from_height)
                .take(MAX_CATCHUP_EVENTS)
                .collect();
        }
        Ok(Rpc::Events { hashes }) => {
            resp.events = hashes
                .iter()
                .take(MAX_CATCHUP_EVENTS)
                .filter_map(|h| store.certified(h).ok().flatten())
                .collect();
        }
        Ok(Rpc::Checkpoints { from }) => {
            resp.checkpoints = (from..next_checkpoint.min(from + 16))
                .filter_map(|n| store.checkpoint(n).ok().flatten())
                .collect();
        }
        Err(_) => {}
    }
    encode(&resp)
}

/// Decodes and verifies a gossip payload (signatures: run off the event loop).
pub fn verify_gossip(
    federation: &Federation,
    store: &Store,
    data: &[u8],
) -> Result<Verified, String> {
    match hallmark_protocol::decode::<Gossip>(data).map_err(|e| e.to_string())? {
        Gossip::Votes {
            events,
            checkpoints,
            batch,
            ..
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
            metrics::SIGNATURES
                .with_label_values(&["author", "valid"])
                .inc_by(events.len() as u64);
            let events = events
                .into_iter()
                .map(|e| e.check(federation.id()).map(|h| (e, h)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Ok(Verified::Votes {
                events,
                proposals: checkpoints,
                batch: Box::new(batch),
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
        Gossip::Checkpoints(list) => {
            for f in &list {
                f.certified.verify(federation).map_err(|e| e.to_string())?;
            }
            Ok(Verified::Checkpoints(list))
        }
    }
}
