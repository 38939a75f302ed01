//! What operators send each other: gossip messages and catch-up requests, postcard-encoded.

use serde::{Deserialize, Serialize};

use crate::certificate::{Attestation, Phase, Rank, Vote};
use crate::checkpoint::{Checkpoint, FinalCheckpoint};
use crate::{BatchVote, CertifiedEvent, Event, EventHash, Subject};

/// Largest number of certified events in one catch-up response.
pub const MAX_CATCHUP_EVENTS: usize = 1024;
/// Largest number of log entries (hashes) in one catch-up response.
pub const MAX_CATCHUP_LOG: usize = 4096;

/// A gossip message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    /// An operator's signed vote batch. The events it prevotes for the first time went ahead of
    /// it ([`Gossip::Events`]); the checkpoint proposals come with it.
    Votes {
        /// Checkpoint proposals first voted on in this batch.
        checkpoints: Vec<Proposal>,
        /// The signed votes.
        batch: BatchVote,
        /// Random: a re-broadcast of the same votes is a different message (needed when gossip
        /// went through gossipsub, which dropped repeats; kept in the format).
        nonce: u64,
    },
    /// Certified events.
    Certified(Vec<CertifiedEvent>),
    /// Final (certified) checkpoints.
    Checkpoints(Vec<FinalCheckpoint>),
    /// Round-0 prevotes of other operators, relayed at a slot that stalled: with fast
    /// certificates, liveness needs every honest operator to see the same round-0 prevotes in
    /// the end (`docs/consensus.md`), and a faulty operator may show its own to some only.
    Relayed(Vec<(Vote, Attestation)>),
    /// Events the sender is about to prevote for the first time (those a client gave it, and
    /// the candidates it re-sends in later rounds), sent ahead of the vote batch with those
    /// prevotes: before the batch's fsync and, under load, before the wait for the batch to
    /// fill, so that the others validate them and cast their own prevotes meanwhile.
    Events(Vec<Event>),
}

/// A proposed checkpoint with the events it covers (ascending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Its events.
    pub events: Vec<EventHash>,
}

/// A catch-up request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rpc {
    /// Entries `[from, from + limit)` of the responder's log, as [`LogEntry`]s (hashes and
    /// who certified them): the asker then fetches with [`Rpc::Events`] only the events it
    /// lacks or holds with a certificate that ranks after the responder's.
    LogRange {
        /// First position.
        from: u64,
        /// Most entries.
        limit: u32,
    },
    /// A subject's certified chain from `from_height`.
    Chain {
        /// Subject.
        subject: Subject,
        /// First height.
        from_height: u64,
    },
    /// Final checkpoints from number `from`.
    Checkpoints {
        /// First checkpoint number.
        from: u64,
    },
    /// Certified events by hash (for a checkpoint proposal naming events the asker lacks).
    Events {
        /// The hashes.
        hashes: Vec<EventHash>,
    },
}

/// A catch-up response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcResponse {
    /// The responder's log length.
    pub log_len: u64,
    /// The events asked for (possibly fewer).
    pub events: Vec<CertifiedEvent>,
    /// The responder's next checkpoint number.
    pub next_checkpoint: u64,
    /// Final checkpoints asked for.
    pub checkpoints: Vec<FinalCheckpoint>,
    /// Log entries asked for ([`Rpc::LogRange`]).
    pub log: Vec<LogEntry>,
}

/// One entry of an operator's log: a certified event's hash and the rank of the certificate the
/// operator holds for it ([`crate::Certificate::rank`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The event.
    pub event: EventHash,
    /// The round of its certificate.
    pub round: u32,
    /// The phase of its certificate's votes (prevotes: a fast certificate).
    pub phase: Phase,
    /// The signers' operator indices, ascending.
    pub signers: Vec<u32>,
}

impl LogEntry {
    /// The entry for `event` certified with rank `rank`.
    pub fn ranked(event: EventHash, (round, phase, signers): &Rank) -> Self {
        Self {
            event,
            round: *round,
            phase: *phase,
            signers: signers.iter().map(|&i| i as u32).collect(),
        }
    }

    /// The rank this entry claims, comparable with [`crate::Certificate::rank`].
    pub fn rank(&self) -> Rank {
        (
            self.round,
            self.phase,
            self.signers.iter().map(|&i| i as usize).collect(),
        )
    }

    /// How the rank this entry claims compares with `rank`: `self.rank().cmp(rank)`, without
    /// building the rank (catch-up compares every entry of its peers' logs).
    pub fn cmp_rank(&self, (round, phase, signers): &Rank) -> std::cmp::Ordering {
        (self.round, self.phase)
            .cmp(&(*round, *phase))
            .then_with(|| {
                self.signers
                    .iter()
                    .map(|&i| i as usize)
                    .cmp(signers.iter().copied())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn phase(commit: bool) -> Phase {
        if commit {
            Phase::Commit
        } else {
            Phase::Prevote
        }
    }

    proptest! {
        /// Comparing in place agrees with comparing the built ranks, on every field.
        #[test]
        fn cmp_rank_agrees_with_rank(
            (r1, c1, s1) in (0u32..3, any::<bool>(), proptest::collection::vec(0u32..6, 0..5)),
            (r2, c2, s2) in (0u32..3, any::<bool>(), proptest::collection::vec(0usize..6, 0..5)),
        ) {
            let entry = LogEntry { event: EventHash([7; 32]), round: r1, phase: phase(c1), signers: s1 };
            let rank: Rank = (r2, phase(c2), s2);
            prop_assert_eq!(entry.cmp_rank(&rank), entry.rank().cmp(&rank));
            prop_assert_eq!(entry.cmp_rank(&entry.rank()), std::cmp::Ordering::Equal);
        }
    }
}
