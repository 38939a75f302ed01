//! Agreement on one *slot* — a (subject, height) — among the federation's operators: two-phase
//! voting with rounds and locks, in the style of Tendermint but with the client's submission as
//! the proposal. Pure: the node feeds it candidates, votes and timeouts and carries out the
//! [`Action`]s it returns. See `docs/consensus.md` for the argument.
//!
//! Rules for this operator's own votes (what [`OwnVotes`] records durably before any vote leaves
//! the process):
//! - at most one prevote and at most one commit per round;
//! - a prevote only for an event it validated itself (a *candidate*): in round 0 the first
//!   candidate it saw; in later rounds the event of its lock or of the latest polka it saw
//!   (whichever is from the later round), else the candidate with the lowest hash;
//! - a commit for `e` in round `r` only after `m` prevotes for `e` in `r` (a *polka*), and only if
//!   it is not locked on another event from round `r` or later; committing locks it on `e`.
//!
//! Safety: if `e` is certified (`m` commits) in round `r`, at least `m - f` honest operators are
//! locked on `e`; in every later round they prevote `e` until a polka for another event appears,
//! which would need `m` prevotes from at most `n - (m - f)` operators: impossible since
//! `2m - n > f`. So no other event ever gets a polka, a commit from an honest operator, or a
//! certificate.
//!
//! Liveness: a round in which no event can still reach `m` prevotes (the votes split) is left
//! at once; a round that stalls otherwise is left on timeout; in later rounds unlocked operators
//! all prevote the same deterministic choice.
//!
//! Fast decisions ([`SlotConfig::fast`]; the node uses them for events, not checkpoints): a
//! prevote for `e` in round 0 from all `n` operators decides `e` as well (its certificate holds
//! those `n` prevotes). Then unlocked operators without a polka choose,
//! in later rounds, among the events with more than `f` of the round-0 prevotes of at least
//! `2f + 1` operators (see [`Slot`]'s `fast_safe_choice`), which is always `e` after a fast
//! decision; the lock and polka rules come first, so the argument above is unchanged. Liveness
//! then needs every honest operator to see the same round-0 prevotes in the end (a Byzantine one
//! can show its own to some only): the tests' network forwards every vote; the node relays the
//! round-0 prevotes it holds at a slot that stalls.
//!
//! Held commits ([`SlotConfig::hold_commits`], with fast decisions): after a round-0 polka an
//! operator holds its commit back while the fast decision can still come (every round-0 prevote
//! it has seen is for the polka's event, and no other operator has committed in round 0), so
//! that when every prevote comes, as it does when all operators are up, no commit is sent at
//! all. It commits once [`Slot::release_commit`] is called (the node's deadline), at a timeout,
//! when a prevote for another event or another operator's round-0 commit shows that the commit
//! path is needed, and, after a fast decision, when another operator's round-0 commit shows
//! that it missed a prevote. Holding a vote back only delays it: the safety argument, which is
//! about the votes cast, is unchanged, and every held commit is released in the end.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::certificate::{Phase, Vote};
use crate::ids::EventHash;

/// The federation's numbers, as a slot needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotConfig {
    /// Quorum threshold.
    pub m: usize,
    /// Operators.
    pub n: usize,
    /// Faulty operators tolerated.
    pub f: usize,
    /// Also decide on a *fast* quorum: a prevote for one event in round 0 from every operator
    /// (`n >= 3f + 1` needed; ignored otherwise). See `docs/consensus.md`.
    pub fast: bool,
    /// With `fast`: hold this operator's round-0 commit back while the fast decision can still
    /// come (see the module's documentation and [`Slot::held_commit`]).
    pub hold_commits: bool,
}

impl SlotConfig {
    fn fast(&self) -> bool {
        self.fast && self.n > 3 * self.f
    }
}

/// This operator's votes at one slot: persisted before any of them is sent, and reloaded on
/// restart so that it never votes twice in a round.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnVotes {
    /// (round, event) prevotes, in order.
    pub prevotes: Vec<(u32, EventHash)>,
    /// (round, event) commits, in order.
    pub commits: Vec<(u32, EventHash)>,
}

impl OwnVotes {
    fn prevoted(&self, round: u32) -> Option<EventHash> {
        self.prevotes
            .iter()
            .find(|(r, _)| *r == round)
            .map(|(_, e)| *e)
    }

    fn committed(&self, round: u32) -> Option<EventHash> {
        self.commits
            .iter()
            .find(|(r, _)| *r == round)
            .map(|(_, e)| *e)
    }

    /// The lock: the event of the latest commit, with its round.
    pub fn lock(&self) -> Option<(EventHash, u32)> {
        self.commits
            .iter()
            .max_by_key(|(r, _)| *r)
            .map(|(r, e)| (*e, *r))
    }

    /// The highest round voted in.
    pub fn last_round(&self) -> u32 {
        self.prevotes
            .iter()
            .chain(&self.commits)
            .map(|(r, _)| *r)
            .max()
            .unwrap_or(0)
    }
}

/// What the node must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Persist [`Slot::own`], then sign and send this vote.
    Vote(Vote),
    /// `m` commits for `event` in `round` (or, `fast`, a prevote for it in round 0 from every
    /// operator): the event is certified.
    Decide {
        /// The event.
        event: EventHash,
        /// The round.
        round: u32,
        /// Decided on round-0 prevotes from all `n` operators, not on `m` commits.
        fast: bool,
    },
    /// An operator voted for two different events in one round and phase.
    Equivocation {
        /// The operator's index.
        operator: usize,
        /// Its first vote seen.
        first: Vote,
        /// The conflicting one.
        second: Vote,
    },
}

/// One slot's agreement state at one operator.
#[derive(Clone, Debug)]
pub struct Slot {
    cfg: SlotConfig,
    me: Option<usize>,
    round: u32,
    own: OwnVotes,
    candidates: BTreeSet<EventHash>,
    first_seen: Option<EventHash>,
    /// Every distinct vote seen, ordered by (round, phase, event, operator). A slot sees a
    /// handful (n operators, two phases, one round unless it got stuck): one sorted list costs
    /// one allocation where nested maps took one per (round, phase) and operator, and every
    /// question below is one pass over it or over the run of one (round, phase).
    votes: Vec<Seen>,
    polka: Option<(EventHash, u32)>,
    decided: Option<(EventHash, u32)>,
    /// Decided on the round-0 prevotes of every operator.
    decided_fast: bool,
    /// A held round-0 commit was released ([`Slot::release_commit`] or a timeout).
    released: bool,
}

impl Slot {
    /// A slot at operator `me` (`None` for a node that only watches), resuming from its
    /// persisted votes.
    pub fn new(cfg: SlotConfig, me: Option<usize>, own: OwnVotes) -> Self {
        let mut slot = Self {
            cfg,
            me,
            round: own.last_round(),
            own: OwnVotes::default(),
            candidates: BTreeSet::new(),
            first_seen: None,
            votes: Vec::new(),
            polka: None,
            decided: None,
            decided_fast: false,
            released: false,
        };
        if let Some(me) = me {
            for (r, e) in &own.prevotes {
                slot.record(me, Vote::prevote(*e, *r));
            }
            for (r, e) in &own.commits {
                slot.record(me, Vote::commit(*e, *r));
            }
        }
        slot.own = own;
        slot
    }

    fn record(&mut self, operator: usize, vote: Vote) -> Option<Action> {
        let seen = Seen {
            round: vote.round,
            phase: vote.phase,
            event: vote.event,
            operator,
        };
        let at = match self.votes.binary_search_by_key(&seen.key(), Seen::key) {
            Ok(_) => return None,
            Err(at) => at,
        };
        // The lowest event it voted for before in this round and phase (the run is in event
        // order).
        let first = self
            .run(vote.round, vote.phase)
            .iter()
            .find(|s| s.operator == operator)
            .map(|s| s.event);
        self.votes.insert(at, seen);
        first.map(|first| Action::Equivocation {
            operator,
            first: Vote {
                event: first,
                ..vote
            },
            second: vote,
        })
    }

    fn cast(&mut self, vote: Vote, actions: &mut Vec<Action>) {
        match vote.phase {
            Phase::Prevote => self.own.prevotes.push((vote.round, vote.event)),
            Phase::Commit => self.own.commits.push((vote.round, vote.event)),
        }
        if let Some(me) = self.me {
            self.record(me, vote);
        }
        actions.push(Action::Vote(vote));
    }

    /// The current round.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// This operator's votes (persist before sending any [`Action::Vote`]).
    pub fn own(&self) -> &OwnVotes {
        &self.own
    }

    /// The decision, once `m` commits are seen.
    pub fn decided(&self) -> Option<(EventHash, u32)> {
        self.decided
    }

    /// Events validated at this slot.
    pub fn candidates(&self) -> &BTreeSet<EventHash> {
        &self.candidates
    }

    /// Operators (indices) whose `phase` votes for `event` in `round` were seen.
    pub fn voters(&self, round: u32, phase: Phase, event: &EventHash) -> Vec<usize> {
        self.run(round, phase)
            .iter()
            .filter(|s| s.event == *event)
            .map(|s| s.operator)
            .collect()
    }

    /// An event this operator validated for this slot.
    pub fn add_candidate(&mut self, event: EventHash) -> Vec<Action> {
        self.candidates.insert(event);
        self.first_seen.get_or_insert(event);
        self.step(Vec::new())
    }

    /// A vote by operator `operator` (already verified).
    pub fn add_vote(&mut self, operator: usize, vote: Vote) -> Vec<Action> {
        if Some(operator) == self.me {
            // Our own votes come from `own`; an echo of them changes nothing.
            return Vec::new();
        }
        let actions = self.record(operator, vote).into_iter().collect();
        self.step(actions)
    }

    /// A vote seen after this slot was decided (and set aside): it changes nothing, but one
    /// that conflicts with a vote the same operator cast here before is evidence.
    pub fn witness(&mut self, operator: usize, vote: Vote) -> Option<Action> {
        if Some(operator) == self.me {
            return None;
        }
        self.record(operator, vote)
    }

    /// The node's round timer fired. The round is left only if a quorum of operators has
    /// prevoted in it without a decision: so no operator can run ahead of the others alone
    /// (one that did would wait in a round nobody else reaches), which is what lets all honest
    /// operators meet in one round once messages flow.
    ///
    /// A held round-0 commit is released first, and the round is left at a later timeout.
    pub fn on_timeout(&mut self) -> Vec<Action> {
        if self.held_commit().is_some() {
            return self.release_commit();
        }
        let quorum_prevoted =
            distinct_operators(self.run(self.round, Phase::Prevote)) >= self.cfg.m;
        if self.decided.is_none() && quorum_prevoted {
            self.round += 1;
        }
        self.step(Vec::new())
    }

    /// A valid certificate for `event` arrived from elsewhere.
    pub fn set_decided(&mut self, event: EventHash, round: u32) {
        self.decided.get_or_insert((event, round));
    }

    /// The event whose round-0 commit this operator holds back ([`SlotConfig::hold_commits`]):
    /// after a round-0 polka for it, undecided, while the fast decision can still come.
    pub fn held_commit(&self) -> Option<EventHash> {
        let (e, r) = self.polka?;
        let waiting = self.decided.is_none() && self.round == 0 && r == 0;
        (waiting && self.own.committed(0).is_none() && self.candidates.contains(&e))
            .then_some(e)
            .filter(|e| self.holds_commit_for(e))
    }

    /// Releases a held round-0 commit: it is cast now (if the slot still needs it) and no later
    /// commit of this slot is held.
    pub fn release_commit(&mut self) -> Vec<Action> {
        self.released = true;
        self.step(Vec::new())
    }

    /// Whether a round-0 commit for `e` is still held back: holding is on and not released, no
    /// round-0 prevote for another event and no other operator's round-0 commit has been seen.
    fn holds_commit_for(&self, e: &EventHash) -> bool {
        self.cfg.fast()
            && self.cfg.hold_commits
            && !self.released
            && self.run(0, Phase::Prevote).iter().all(|s| s.event == *e)
            && self
                .run(0, Phase::Commit)
                .iter()
                .all(|s| Some(s.operator) == self.me)
    }

    fn step(&mut self, mut actions: Vec<Action>) -> Vec<Action> {
        loop {
            if let Some((event, _)) = self.decided {
                // After a fast decision the slow path goes on beside it: operators that missed
                // a prevote still decide on commits. (In round 0 without a commit there is no
                // lock yet.) A held commit stays held until another operator's round-0 commit
                // shows that one missed a prevote.
                if self.decided_fast
                    && self.round == 0
                    && self.own.committed(0).is_none()
                    && self.candidates.contains(&event)
                    && !self.holds_commit_for(&event)
                {
                    self.cast(Vote::commit(event, 0), &mut actions);
                }
                return actions;
            }
            // A certificate: m commits for one event in one round (the lowest such round, then
            // the lowest such event); and the latest polka (in a round, the lowest event).
            let (m, n) = (self.cfg.m, self.cfg.n);
            let (mut decided, mut polka, mut fast) = (None, self.polka, None);
            for (r, phase, e, count) in groups(&self.votes).filter(|g| g.3 >= m) {
                match phase {
                    Phase::Commit => {
                        decided = Some((e, r));
                        break;
                    }
                    Phase::Prevote if polka.is_none_or(|(_, pr)| pr < r) => polka = Some((e, r)),
                    Phase::Prevote => {}
                }
                if r == 0 && phase == Phase::Prevote && count >= n && self.cfg.fast() {
                    fast = Some(e);
                }
            }
            self.polka = polka;
            if let Some((event, round)) = decided {
                self.decided = Some((event, round));
                actions.push(Action::Decide {
                    event,
                    round,
                    fast: false,
                });
                return actions;
            }
            if let Some(event) = fast {
                self.decided = Some((event, 0));
                self.decided_fast = true;
                actions.push(Action::Decide {
                    event,
                    round: 0,
                    fast: true,
                });
                // (Its commit, if due, at the top of the loop.)
                continue;
            }
            // Catch up with a later round that f + 1 operators (so one honest) are in.
            let later = self.later_round();
            if let Some(r) = later {
                self.round = r;
                continue;
            }
            let round = self.round;
            // Prevote.
            if self.own.prevoted(round).is_none() {
                if let Some(e) = self.prevote_choice() {
                    self.cast(Vote::prevote(e, round), &mut actions);
                    continue;
                }
            }
            // Commit after a polka in this round.
            if self.own.committed(round).is_none() {
                if let Some((e, r)) = self.polka.filter(|(_, r)| *r == round) {
                    let lock_allows = self.own.lock().is_none_or(|(le, lr)| le == e || lr < r);
                    let held = round == 0 && self.holds_commit_for(&e);
                    if lock_allows && self.candidates.contains(&e) && !held {
                        self.cast(Vote::commit(e, round), &mut actions);
                        continue;
                    }
                }
            }
            // Leave a round whose prevotes split so that no event can reach m.
            if self.own.prevoted(round).is_some() && self.prevotes_split(round) {
                self.round += 1;
                continue;
            }
            return actions;
        }
    }

    fn prevote_choice(&self) -> Option<EventHash> {
        let lock = self.own.lock();
        let preferred = match (lock, self.polka) {
            (Some((le, lr)), Some((pe, pr))) => Some(if pr > lr { pe } else { le }),
            (Some((le, _)), None) => Some(le),
            (None, Some((pe, _))) => Some(pe),
            (None, None) => None,
        };
        if let Some(e) = preferred {
            // Locked or polka'd: that event or nothing (wait until it is known and valid).
            return self.candidates.contains(&e).then_some(e);
        }
        if self.round == 0 {
            self.first_seen
        } else if self.cfg.fast() {
            self.fast_safe_choice()
        } else {
            self.candidates.iter().next().copied()
        }
    }

    /// With fast decisions, the choice of an operator with neither lock nor polka in a later
    /// round: once the round-0 prevotes of `2f + 1` operators are known, the lowest event with
    /// at least `f + 1` of them, else the lowest candidate. If an event was decided fast, any
    /// `2f + 1` of the round-0 prevoters hold at least `f + 1` honest ones, all for it, and at
    /// most `f` (the faulty, counted for each event they voted for) for any other: every honest
    /// operator picks it, so no other event ever gets a polka. (Not `n - f`: round 0 is left
    /// once `m` operators prevoted in it, and `m >= 2f + 1`, but `m` may be below `n - f`, and
    /// the others may never prevote in round 0.)
    fn fast_safe_choice(&self) -> Option<EventHash> {
        let run = self.run(0, Phase::Prevote);
        if distinct_operators(run) < 2 * self.cfg.f + 1 {
            return None;
        }
        match groups(run).find(|g| g.3 > self.cfg.f) {
            Some((_, _, e, _)) => self.candidates.contains(&e).then_some(e),
            None => self.candidates.iter().next().copied(),
        }
    }

    fn prevotes_split(&self, round: u32) -> bool {
        let run = self.run(round, Phase::Prevote);
        if run.is_empty() {
            return false;
        }
        let missing = self.cfg.n.saturating_sub(distinct_operators(run));
        let best = groups(run).map(|(_, _, _, c)| c).max().unwrap_or(0);
        best + missing < self.cfg.m
    }

    /// The votes of one round and phase: a run of the sorted list, in event order.
    fn run(&self, round: u32, phase: Phase) -> &[Seen] {
        let start = self
            .votes
            .partition_point(|s| (s.round, s.phase) < (round, phase));
        let len = self.votes[start..].partition_point(|s| (s.round, s.phase) == (round, phase));
        &self.votes[start..start + len]
    }

    /// The latest round after the current one in which more than `f` operators voted.
    fn later_round(&self) -> Option<u32> {
        let start = self.votes.partition_point(|s| s.round <= self.round);
        self.votes[start..]
            .chunk_by(|a, b| a.round == b.round)
            .filter(|run| distinct_operators(run) > self.cfg.f)
            .map(|run| run[0].round)
            .next_back()
    }
}

/// (round, phase, event, how many operators voted for it) of sorted `votes`, in that order.
fn groups(votes: &[Seen]) -> impl Iterator<Item = (u32, Phase, EventHash, usize)> + '_ {
    // Each (operator, event) pair is recorded once, so a group's length counts operators.
    votes
        .chunk_by(|a, b| (a.round, a.phase, a.event) == (b.round, b.phase, b.event))
        .map(|g| (g[0].round, g[0].phase, g[0].event, g.len()))
}

/// How many distinct operators cast the votes of `run`.
fn distinct_operators(run: &[Seen]) -> usize {
    let mut ops: Vec<usize> = run.iter().map(|s| s.operator).collect();
    ops.sort_unstable();
    ops.dedup();
    ops.len()
}

/// One vote seen at a slot.
#[derive(Clone, Copy, Debug)]
struct Seen {
    round: u32,
    phase: Phase,
    event: EventHash,
    operator: usize,
}

impl Seen {
    /// The list's order.
    fn key(&self) -> (u32, Phase, EventHash, usize) {
        (self.round, self.phase, self.event, self.operator)
    }
}

#[cfg(test)]
mod tests;
