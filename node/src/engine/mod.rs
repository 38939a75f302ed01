//! The operator's event loop: the one task that owns the operator's consensus state and writes
//! the store, on a thread of its own (`service.rs`). Everything else (HTTP handlers, the gossip
//! verifier, catch-up fetchers) talks to it through one bounded channel of [`Input`]s.
//!
//! Per slot (subject, height) it runs a [`Slot`] of the two-phase protocol; its own votes are
//! written to the store with fsync, in one group commit per flush, before the signed batch that
//! carries them is published. Inputs are processed as they come and votes are flushed whenever
//! the input queue runs dry, so batches grow with the load.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hallmark_p2p::{P2pHandle, PeerId};
use hallmark_protocol::checkpoint::CheckpointHash;
use hallmark_protocol::consensus::{Slot, SlotConfig};
use hallmark_protocol::{
    encode, Attestation, BatchVote, Certificate, CertifiedEvent, Event, EventHash, Federation,
    ItemId, ItemState, Phase, Signature, SigningKey, Subject, VerifiedBatch, Vote,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::anchoring::{AnchorCmd, ChainEvent};
use crate::fifo::Fifo;
use crate::metrics;
use crate::payments::PaymentAdapter;
use crate::store::{FinalCheckpoint, Store, StoreError};
use crate::wire::{Gossip, Proposal};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use retired::Retired;

mod admission;
mod catchup;
mod checkpoints;
mod fast;
mod gossip;
mod retired;
mod voting;
pub use catchup::serve_rpc;
pub use checkpoints::{CheckpointConfig, MAX_EVENTS_PER_CHECKPOINT};
pub use gossip::verify_gossip;

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
/// Least time between two flushes of votes while votes keep coming. 2.5 ms against 2 at half
/// the max rate (2,448 ev/s, ten alternating 30 s pairs): p50 12.4 against 13.2 ms and p99 56
/// against 66 ms on average (not in every pair; the lower p99 in seven), with 2-3 points less
/// CPU per operator; the same at the max rate.
/// 1.5 ms was worse (smaller batches: more signatures, checks, fsyncs and messages per event).
const FLUSH_EVERY: Duration = Duration::from_micros(2_500);
/// Slots in flight from which the loop counts as loaded (and waits to batch votes). At 950 ev/s
/// arriving evenly, 4 instead of 16 gave p50 11-12.5 ms against 16-22.5 and p99 41-44 ms
/// against 44-61 (three alternating pairs of 30 s runs): batches fill before the cores do.
const BUSY_SLOTS: usize = 4;

/// How many item states the loop keeps in memory.
const ITEM_CACHE: usize = 65_536;
/// How many of the last vote batches (its own and received) the loop keeps, so that the
/// certificates assembled from them are stored by reference into them (`store/certificates.rs`):
/// some 2 s of batches at the max rate, where a slot is decided within 0.1 s. A certificate whose
/// batch was dropped is stored whole.
const BATCH_CACHE: usize = 1_024;
/// How many of the certificates stored last the loop keeps: commit votes and certificates that
/// arrive after an event is certified may improve its certificate, and reading it back from the
/// store would rebuild it from its batches (`store/certificates.rs`).
const CERTIFICATE_CACHE: usize = 8_192;

/// How many events certified on commits keep their round-0 prevotes, for a fast certificate
/// when the missing ones come (`Engine::late_prevotes`): at 5,000 ev/s, with a fifth certified on
/// commits, about 4 s of them, where the missing prevote comes within a latency.
const LATE_PREVOTES: usize = 4_096;

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
    /// A vote batch and the checkpoint proposals it introduces.
    Votes {
        /// Checkpoint proposals (validated by the event loop).
        proposals: Vec<Proposal>,
        /// The batch.
        batch: Arc<VerifiedBatch>,
    },
    /// Certified events (certificates checked).
    Certified(Vec<CertifiedEvent>),
    /// Final checkpoints (certificates checked).
    Checkpoints(Vec<FinalCheckpoint>),
    /// Relayed round-0 prevotes with their signers' operator indices (attestations checked).
    Relayed(Vec<(usize, Vote, Attestation)>),
    /// Events sent ahead of their sender's first prevote for them (author signatures checked).
    Events(Vec<(Event, EventHash)>),
}

/// Inputs of the event loop.
pub enum Input {
    /// A client's event (author signature already checked).
    Submit {
        /// Event.
        event: Event,
        /// Its hash.
        hash: EventHash,
        /// When the API received it.
        received: Instant,
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
    /// Own-votes journal entries after which it is compacted (`store/votes.rs`).
    pub vote_journal_compaction: u64,
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
    /// Since when its round-0 commit is held back (`fast::Holds`).
    held_since: Option<Instant>,
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
    /// Round-0 prevotes for events in event slots, for fast certificates (`fast.rs`).
    prevotes: HashMap<EventHash, fast::HeldPrevotes>,
    /// The round-0 prevotes held for the events certified here last on commits in round 0: the
    /// prevotes still missing, when they come, make the fast certificate that ranks first, and
    /// replace the stored one here rather than come by catch-up (checked again there).
    late_prevotes: Fifo<EventHash, fast::HeldPrevotes>,
    /// Round-0 prevotes of others to relay (at stalled slots).
    out_relayed: Vec<(Vote, Attestation)>,
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
    /// How long handling the inputs gathered while waiting to flush takes (a moving average).
    drain_time: Duration,
    cp_due_since: Option<Instant>,
    payment_checks: HashMap<EventHash, Vec<Reply>>,
    chain_tip: Option<u32>,
    submitted_at: HashMap<EventHash, Instant>,
    /// Events submitted here whose round-0 prevotes from every operator have been seen.
    all_prevoted: HashSet<EventHash>,
    locked_at: HashMap<hallmark_protocol::ItemId, Instant>,
    /// Item states (or their absence) as the store holds them, for the items read or written
    /// last: the loop is the store's only writer, so it keeps them exact, and validating and
    /// applying an event reads its item's state several times.
    items: Fifo<ItemId, Option<ItemState>>,
    /// The last vote batches, by signature (what an [`Attestation`] names its batch by).
    batches: Fifo<Signature, Arc<VerifiedBatch>>,
    /// The commit certificates stored last, as stored (what a late commit vote may improve).
    certificates: Fifo<EventHash, Certificate>,
    /// Round-0 commits held back while a fast certificate may come (`fast.rs`).
    holds: fast::Holds,
}

/// An item's certified state, read from the store once and then from `items`: by reference, so
/// that checking each event and vote does not copy it (a clone per check was 5 % of the event
/// loop at the max rate).
fn cached_item<'a>(
    items: &'a mut Fifo<ItemId, Option<ItemState>>,
    store: &Store,
    id: &ItemId,
) -> Result<Option<&'a ItemState>, StoreError> {
    if !items.contains_key(id) {
        items.insert(*id, store.item(id)?);
    }
    Ok(items.get(id).and_then(Option::as_ref))
}

impl Engine {
    /// Creates the loop; `inputs` is the sender half of its own queue (catch-up tasks use it).
    pub fn new(cfg: EngineConfig, inputs: mpsc::Sender<Input>) -> Self {
        let q = cfg.federation.quorum();
        let slot_cfg = SlotConfig {
            m: q.m() as usize,
            n: q.n() as usize,
            f: cfg.federation.params().max_faulty as usize,
            fast: true,
            hold_commits: true,
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
            prevotes: HashMap::new(),
            late_prevotes: Fifo::new(LATE_PREVOTES),
            out_relayed: Vec::new(),
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
            drain_time: Duration::ZERO,
            cp_due_since: None,
            payment_checks: HashMap::new(),
            chain_tip: None,
            submitted_at: HashMap::new(),
            all_prevoted: HashSet::new(),
            locked_at: HashMap::new(),
            items: Fifo::new(ITEM_CACHE),
            batches: Fifo::new(BATCH_CACHE),
            certificates: Fifo::new(CERTIFICATE_CACHE),
            holds: fast::Holds::new(),
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

    /// Records how long after its submission an event submitted to this operator reached
    /// `stage` (`metrics::STAGE_SECONDS`).
    fn stage_reached(&self, event: &EventHash, stage: &str) {
        if let Some(t) = self.submitted_at.get(event) {
            metrics::STAGE_SECONDS
                .with_label_values(&[stage])
                .observe(t.elapsed().as_secs_f64());
        }
    }

    /// Next height of a subject's chain.
    fn next_height(&mut self, subject: &Subject) -> Result<u64, StoreError> {
        match subject {
            Subject::Item(i) => {
                Ok(cached_item(&mut self.items, &self.cfg.store, i)?.map_or(0, |s| s.height + 1))
            }
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
            let release = self.holds.next_due();
            // (In this order: a held commit's deadline only wakes a loop with no input waiting,
            // so the inputs already queued, among them perhaps the prevote a hold waits for, are
            // taken before holds are released.)
            let started = tokio::select! {
                biased;
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
                    let n = 1 + self.take_queued(&mut rx, MAX_INPUTS_PER_FLUSH - 1);
                    // Under load (many slots in flight), batch votes over at least FLUSH_EVERY:
                    // fewer, larger batches (one signature, one fsync, one gossip message each)
                    // leave more CPU for everything else, which shortens queues more than the
                    // wait lengthens them. Below that load nothing waits. The loop sleeps through
                    // the wait and then takes what came in one go, rather than being woken for
                    // every input: one wake-up of its thread per flush. It wakes early by about
                    // the time handling them takes (measured over the last flushes), so the
                    // flush still goes out FLUSH_EVERY after the previous one. The events its
                    // prevotes introduce go out before the wait.
                    let since = self.last_flush.elapsed();
                    let busy = self.slots.len() >= BUSY_SLOTS;
                    if busy && !self.out_votes.is_empty() && since < FLUSH_EVERY {
                        self.send_events_ahead();
                        let sleep = (FLUSH_EVERY - since).saturating_sub(self.drain_time);
                        let wait = Instant::now();
                        if !sleep.is_zero() {
                            tokio::time::sleep(sleep).await;
                        }
                        waited += wait.elapsed();
                        let drain = Instant::now();
                        self.take_queued(&mut rx, MAX_INPUTS_PER_FLUSH - n);
                        self.drain_time = (self.drain_time * 3 + drain.elapsed()) / 4;
                    }
                    started
                }
                // A held commit's deadline (`fast.rs`); released below, before the flush.
                _ = tokio::time::sleep_until(release.unwrap_or_else(Instant::now).into()), if release.is_some() => {
                    Instant::now()
                }
            };
            self.release_due_commits(Instant::now());
            if let Err(e) = self.flush().await {
                error!("cannot persist votes, stopping: {e}");
                cancel.cancel();
                break;
            }
            metrics::LOOP_SECONDS.observe((started.elapsed() - waited).as_secs_f64());
        }
        info!("event loop stopped");
    }

    /// Handles up to `max` inputs already queued, without waiting; returns how many.
    fn take_queued(&mut self, rx: &mut mpsc::Receiver<Input>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Ok(input) = rx.try_recv() else { break };
            self.handle(input);
            n += 1;
        }
        n
    }

    fn handle(&mut self, input: Input) {
        let result = match input {
            Input::Submit {
                event,
                hash,
                received,
                reply,
            } => {
                self.submit(event, hash, received, reply);
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
            Input::Gossip(Verified::Votes { proposals, batch }) => {
                self.batches.insert(batch.signature(), batch.clone());
                self.on_votes(proposals, &batch)
            }
            Input::Gossip(Verified::Relayed(votes)) => self.on_relayed(votes),
            Input::Gossip(Verified::Events(events)) => events
                .into_iter()
                .try_for_each(|(event, hash)| self.consider(event, hash)),
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
            self.relay_prevotes(key);
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
            .and_then(|()| self.anchor_duty())
            .and_then(|()| self.compact_own_votes());
        if let Err(e) = r {
            error!("store error: {e}");
        }
        let early_overflow = self.early_count > MAX_EARLY_VOTES / 2;
        if early_overflow {
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
        if early_overflow || self.prevotes.len() > MAX_EARLY_VOTES {
            // Round-0 prevotes held for them (with the early votes), or for events that never
            // became candidates here: dropped too.
            let candidates = &self.candidates;
            self.prevotes.retain(|e, _| candidates.contains_key(e));
        }
        let held = self.commit_atts.len() + self.prevotes.len() + self.early_count;
        metrics::HELD_VOTES.set(held as i64);
        metrics::PENDING_SLOTS.set(self.slots.len() as i64);
        metrics::STORE_BYTES.set(self.cfg.store.size_on_disk() as i64);
    }

    /// Compacts the own-votes journal once it has grown by `vote_journal_compaction` entries:
    /// the votes at the slots still undecided replace the entries (`store/votes.rs`). A slot
    /// leaves `slots` only when it is decided.
    fn compact_own_votes(&mut self) -> Result<(), StoreError> {
        if self.cfg.store.own_votes_since_compaction() < self.cfg.vote_journal_compaction.max(1) {
            return Ok(());
        }
        let open = self.slots.iter().map(|(k, e)| (&k.0, k.1, e.slot.own()));
        self.cfg.store.compact_own_votes(open)
    }

    /// Sends the events this iteration's prevotes introduce (mostly those a client gave this
    /// operator) ahead of the vote batch with the prevotes: before the wait for the batch to
    /// fill (`FLUSH_EVERY`, under load) and before its fsync. The others validate them and cast
    /// their own prevotes meanwhile, rather than after the batch arrives. Before the wait: at
    /// 2,520 ev/s the client's p50 went from 9.6-10.4 to 8.7-9.1 ms and the mean time to a fast
    /// certificate from 10.2-11.4 to 9.4-9.8 ms (three alternating 60 s pairs), at the same CPU;
    /// the max rate went from 4,562-4,611 to 4,644-4,779 ev/s (three 60 s pairs). Before the
    /// fsync too: p99 32-37 against 35-45 ms in 30 s runs (`docs/benchmarks.md`).
    fn send_events_ahead(&mut self) {
        if self.out_events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.out_events);
        metrics::EVENTS_SENT_AHEAD.inc_by(events.len() as u64);
        self.cfg.p2p.broadcast(encode(&Gossip::Events(events)));
    }

    /// Persists dirty slots' votes (fsync), then signs and publishes them with new certificates.
    async fn flush(&mut self) -> Result<(), StoreError> {
        // The events first, so that they need not wait for the fsync either.
        self.send_events_ahead();
        if !self.out_votes.is_empty() {
            self.last_flush = Instant::now();
        }
        if !self.dirty.is_empty() {
            let dirty: Vec<(Subject, u64)> = self.dirty.drain().collect();
            let owned: Vec<_> = dirty
                .iter()
                .filter_map(|k| self.slots.get(k).map(|e| (k.0, k.1, e.slot.own().clone())))
                .collect();
            let sync = Instant::now();
            self.cfg
                .store
                .put_own_votes(owned.iter().map(|(s, h, v)| (s, *h, v)))?;
            metrics::VOTE_SYNC_SECONDS.observe(sync.elapsed().as_secs_f64());
        }
        if !self.out_votes.is_empty() {
            let votes = std::mem::take(&mut self.out_votes);
            let checkpoints = std::mem::take(&mut self.out_proposals);
            let batch = BatchVote::sign(&self.cfg.key, self.cfg.federation.id(), votes)
                .expect("a non-empty batch of at most MAX_BATCH_VOTES signs");
            let batch = Arc::new(batch);
            self.batches.insert(batch.signature(), batch.clone());
            metrics::VOTE_BATCH_SIZE.observe(batch.votes().len() as f64);
            let msg = Gossip::Votes {
                checkpoints,
                batch: batch.to_batch_vote(),
                nonce: rand::random(),
            };
            self.cfg.p2p.broadcast(encode(&msg));
            // Our own votes count towards certificates here too.
            let me = self.cfg.me;
            let mut decided = Vec::new();
            for (i, v) in batch.votes().iter().enumerate() {
                if v.round == 0 {
                    let stage = match v.phase {
                        Phase::Prevote => "prevote_sent",
                        Phase::Commit => "commit_sent",
                    };
                    self.stage_reached(&v.event, stage);
                }
                // (An event certified since the vote was cast needs it no more, but for a fast
                // certificate if it was certified on commits.)
                let Some(key) = self.slot_of(&v.event) else {
                    if fast::is_fast_vote(v) {
                        let held = fast::HeldVote::InBatch(batch.clone(), i);
                        self.late_prevote(me, v.event, held)?;
                    }
                    continue;
                };
                if !fast::is_held(key, v) {
                    continue;
                }
                self.hold(me, v, fast::HeldVote::InBatch(batch.clone(), i));
                if self
                    .slots
                    .get(&key)
                    .and_then(|e| e.slot.decided())
                    .is_some()
                {
                    decided.push((key, v.event, v.round));
                }
            }
            for (key, e, r) in decided {
                self.certify(key, e, r)?;
            }
        }
        if !self.out_relayed.is_empty() {
            let votes = std::mem::take(&mut self.out_relayed);
            self.cfg.p2p.broadcast(encode(&Gossip::Relayed(votes)));
        }
        // This iteration's unsynced writes (certified events) in one write to the WAL file.
        self.cfg.store.flush_wal()?;
        if !self.out_certs.is_empty() {
            let certs = std::mem::take(&mut self.out_certs);
            self.cfg.p2p.broadcast(encode(&Gossip::Certified(certs)));
        }
        if !self.out_final.is_empty() {
            let list = std::mem::take(&mut self.out_final);
            self.cfg.p2p.broadcast(encode(&Gossip::Checkpoints(list)));
        }
        Ok(())
    }
}
