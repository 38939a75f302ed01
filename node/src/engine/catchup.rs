//! Catch-up: an operator compares stretches of its peers' logs (hashes and certificate ranks) with
//! its own and fetches the events it lacks or holds with a worse-ranked certificate; it also
//! answers the same requests for its peers. Fetches run as tasks off the loop and feed their
//! verified results back as [`Input`]s.

use std::time::Instant;

use hallmark_p2p::{Command, P2pHandle, PeerId};
use hallmark_protocol::{encode, CertifiedEvent, EventHash, Federation, Subject};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::gossip::holds;
use super::{Engine, Input, Verified, CHAIN_FETCH_EVERY, MAX_DEFERRED_SLOTS};
use crate::metrics;
use crate::store::{FinalCheckpoint, Store};
use crate::wire::{LogEntry, Rpc, RpcResponse, MAX_CATCHUP_EVENTS, MAX_CATCHUP_LOG};

impl Engine {
    /// Reads the next stretch of `peer`'s log (hashes and certificate ranks only), fetches the
    /// events this operator lacks or holds with a worse-ranked certificate, and feeds them back
    /// verified as [`Input::CaughtUp`].
    pub(super) fn request_catchup(&mut self, peer: PeerId) {
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
            metrics::CATCHUP_REQUESTS.inc();
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
                    wanted(&st, &fed, &log[..log.len().min(MAX_CATCHUP_LOG)])
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
    pub(super) fn fetch_events(&mut self, hashes: &[EventHash]) {
        for chunk in hashes.chunks(MAX_CATCHUP_EVENTS) {
            self.spawn_fetch(Rpc::Events {
                hashes: chunk.to_vec(),
            });
        }
    }

    /// A connected member, if any.
    pub(super) fn connected_peer(&self) -> Option<PeerId> {
        self.cfg
            .peer_ids
            .iter()
            .find(|p| self.peers.contains(p))
            .copied()
    }

    /// Sends `rpc` to a connected peer and feeds the verified certified events it returns back
    /// to the loop.
    pub(super) fn spawn_fetch(&self, rpc: Rpc) {
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
    pub(super) fn fetch_chain(&mut self, subject: Subject, from_height: u64) {
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
}

/// Fetches final checkpoints from `from` off a peer and feeds the verified ones to the loop.
pub(super) async fn fetch_checkpoints(
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
pub(super) async fn ask(
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
    metrics::CATCHUP_EVENTS.inc_by(events.len() as u64);
    r.events = events;
    Some((r, returned))
}

/// Sends `rpc` to `peer` and decodes the response (an undecodable one counts against the peer).
pub(super) async fn request(p2p: &P2pHandle, peer: PeerId, rpc: &Rpc) -> Option<RpcResponse> {
    let bytes = p2p.request(peer, encode(rpc)).await.ok()?;
    let Ok(r) = hallmark_protocol::decode::<RpcResponse>(&bytes) else {
        warn!(%peer, "undecodable catch-up response");
        let _ = p2p.send(Command::Offence(peer)).await;
        return None;
    };
    Some(r)
}

/// How a peer's log entry compares with what this operator holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Compared {
    /// The event, with a certificate that ranks the same or before the peer's.
    Held,
    /// Not the event.
    Missing,
    /// The event, with a certificate that ranks after the peer's.
    Better,
}

impl Compared {
    /// Every outcome, in declaration order (`c as usize` indexes this).
    const ALL: [Compared; 3] = [Compared::Held, Compared::Missing, Compared::Better];

    /// Whether the peer's certified event is fetched (then checked and kept).
    fn wanted(self) -> bool {
        self != Compared::Held
    }

    fn label(self) -> &'static str {
        match self {
            Compared::Held => "held",
            Compared::Missing => "missing",
            Compared::Better => "better",
        }
    }
}

/// The events of a stretch of a peer's log to fetch; counts the outcomes.
fn wanted(store: &Store, federation: &Federation, log: &[LogEntry]) -> Vec<EventHash> {
    let Ok(compared) = store.compare_ranks(log, federation) else {
        return Vec::new();
    };
    let mut counts = [0; Compared::ALL.len()];
    let mut out = Vec::new();
    for (e, o) in log.iter().zip(compared) {
        let c = match o {
            None => Compared::Missing,
            Some(std::cmp::Ordering::Less) => Compared::Better,
            Some(_) => Compared::Held,
        };
        counts[c as usize] += 1;
        if c.wanted() {
            out.push(e.event);
        }
    }
    for (c, n) in Compared::ALL.into_iter().zip(counts) {
        metrics::CATCHUP_ENTRIES
            .with_label_values(&[c.label()])
            .inc_by(n);
    }
    out
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
            let mut cache = crate::store::BatchCache::default();
            resp.events = hashes
                .iter()
                .take(MAX_CATCHUP_EVENTS)
                .filter_map(|h| store.certified_with(h, &mut cache).ok().flatten())
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
