use super::*;
use proptest::prelude::*;

const CFG: SlotConfig = SlotConfig {
    m: 3,
    n: 4,
    f: 1,
    fast: false,
    hold_commits: false,
};
/// The same federation deciding on round-0 prevotes from all four too.
const FAST: SlotConfig = SlotConfig { fast: true, ..CFG };
/// ... and holding round-0 commits back while the fast decision may come (as the node does).
const HELD: SlotConfig = SlotConfig {
    hold_commits: true,
    ..FAST
};
const A: EventHash = EventHash([0xaa; 32]);
const B: EventHash = EventHash([0xbb; 32]);

/// A network of honest operators `0..honest` (and, optionally, operator 3 as a Byzantine one
/// driven by the test), delivering votes from a queue. An honest operator forwards every
/// vote it sees for the first time to the others (a harsher schedule than the node's, where only
/// the voter sends its votes: the test explores more interleavings).
struct Net {
    cfg: SlotConfig,
    slots: Vec<Slot>,
    seen: Vec<BTreeSet<(usize, EventHash, u32, Phase)>>,
    queue: Vec<(usize, usize, Vote)>,
    decisions: Vec<Option<(EventHash, u32)>>,
    fast_decisions: usize,
    equivocations: usize,
}

impl Net {
    fn new(honest: usize) -> Self {
        Self::with(CFG, honest)
    }

    fn with(cfg: SlotConfig, honest: usize) -> Self {
        Self {
            cfg,
            slots: (0..honest)
                .map(|i| Slot::new(cfg, Some(i), OwnVotes::default()))
                .collect(),
            seen: vec![BTreeSet::new(); honest],
            queue: Vec::new(),
            decisions: vec![None; honest],
            fast_decisions: 0,
            equivocations: 0,
        }
    }

    fn handle(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Vote(v) => {
                    for j in 0..self.cfg.n {
                        if j != i {
                            self.queue.push((j, i, v));
                        }
                    }
                }
                Action::Decide { event, round, fast } => {
                    assert!(self.decisions[i].is_none(), "decided twice");
                    self.decisions[i] = Some((event, round));
                    self.fast_decisions += usize::from(fast);
                }
                Action::Equivocation { .. } => self.equivocations += 1,
            }
        }
    }

    fn candidate(&mut self, i: usize, e: EventHash) {
        let a = self.slots[i].add_candidate(e);
        self.handle(i, a);
    }

    fn deliver(&mut self, k: usize) {
        let (to, from, v) = self.queue.remove(k);
        if to < self.slots.len() && self.seen[to].insert((from, v.event, v.round, v.phase)) {
            for j in 0..self.cfg.n {
                if j != to && j != from {
                    self.queue.push((j, from, v));
                }
            }
            let a = self.slots[to].add_vote(from, v);
            self.handle(to, a);
        }
    }

    fn timeout(&mut self, i: usize) {
        let a = self.slots[i].on_timeout();
        self.handle(i, a);
    }

    fn drain(&mut self) {
        while !self.queue.is_empty() {
            self.deliver(0);
        }
    }
}

#[test]
fn happy_path_decides_in_round_zero() {
    let mut net = Net::new(4);
    for i in 0..4 {
        net.candidate(i, A);
    }
    net.drain();
    assert!(
        net.decisions.iter().all(|d| *d == Some((A, 0))),
        "{:?}",
        net.decisions
    );
    for s in &net.slots {
        assert_eq!(s.own().prevotes, vec![(0, A)]);
        assert_eq!(s.own().commits, vec![(0, A)]);
    }
}

#[test]
fn an_operator_down_does_not_stop_three_of_four() {
    let mut net = Net::new(3);
    for i in 0..3 {
        net.candidate(i, A);
    }
    net.drain();
    assert!(net.decisions.iter().all(|d| *d == Some((A, 0))));
}

#[test]
fn split_votes_from_an_equivocating_owner_are_resolved_in_a_later_round() {
    // The owner sent A to operators 0 and 1 and B to 2 and 3 at the same moment.
    let mut net = Net::new(4);
    net.candidate(0, A);
    net.candidate(1, A);
    net.candidate(2, B);
    net.candidate(3, B);
    // Then each learns the other event (gossip), and all votes are delivered.
    for i in 0..4 {
        net.candidate(i, if i < 2 { B } else { A });
    }
    net.drain();
    // Round 0 split 2/2, nobody could commit; round 1 every operator prevoted min(A, B) = A.
    assert!(
        net.decisions.iter().all(|d| *d == Some((A, 1))),
        "{:?}",
        net.decisions
    );
    assert_eq!(
        net.equivocations, 0,
        "changing votes across rounds is not equivocation"
    );
}

#[test]
fn restart_never_votes_twice_in_a_round() {
    let mut s = Slot::new(CFG, Some(0), OwnVotes::default());
    let a = s.add_candidate(A);
    assert_eq!(a, vec![Action::Vote(Vote::prevote(A, 0))]);
    let saved = s.own().clone();
    // Restart: the slot is rebuilt from disk; B arrives first this time.
    let mut s = Slot::new(CFG, Some(0), saved);
    assert_eq!(s.add_candidate(B), vec![]);
    assert_eq!(s.add_candidate(A), vec![]);
    assert_eq!(s.own().prevotes, vec![(0, A)]);
}

#[test]
fn a_locked_operator_keeps_prevoting_its_lock() {
    let mut s = Slot::new(CFG, Some(0), OwnVotes::default());
    s.add_candidate(B);
    s.add_candidate(A);
    // Round 0: polka for B (0, 1, 2), so 0 commits B and locks.
    s.add_vote(1, Vote::prevote(B, 0));
    let a = s.add_vote(2, Vote::prevote(B, 0));
    assert_eq!(a, vec![Action::Vote(Vote::commit(B, 0))]);
    assert_eq!(s.own().lock(), Some((B, 0)));
    // The round stalls; in round 1 it prevotes B again, not the lower hash A.
    let a = s.on_timeout();
    assert_eq!(a, vec![Action::Vote(Vote::prevote(B, 1))]);
}

#[test]
fn equivocating_operators_are_reported() {
    let mut s = Slot::new(CFG, Some(0), OwnVotes::default());
    assert_eq!(s.add_vote(2, Vote::prevote(A, 0)), vec![]);
    let a = s.add_vote(2, Vote::prevote(B, 0));
    assert_eq!(
        a,
        vec![Action::Equivocation {
            operator: 2,
            first: Vote::prevote(A, 0),
            second: Vote::prevote(B, 0)
        }]
    );
}

#[test]
fn a_late_conflicting_vote_at_a_decided_slot_is_evidence_and_changes_nothing() {
    let mut s = Slot::new(CFG, Some(0), OwnVotes::default());
    s.add_candidate(A);
    for op in 1..=3 {
        s.add_vote(op, Vote::prevote(A, 0));
    }
    for op in 1..=3 {
        s.add_vote(op, Vote::commit(A, 0));
    }
    assert_eq!(s.decided(), Some((A, 0)));
    let own = s.own().clone();
    // Operator 3 commits B too, after the decision; operator 2 only repeats itself.
    assert_eq!(
        s.witness(3, Vote::commit(B, 0)),
        Some(Action::Equivocation {
            operator: 3,
            first: Vote::commit(A, 0),
            second: Vote::commit(B, 0)
        })
    );
    assert_eq!(s.witness(2, Vote::commit(A, 0)), None);
    // A vote in another round is no conflict; our own votes are never witnessed.
    assert_eq!(s.witness(1, Vote::prevote(B, 1)), None);
    assert_eq!(s.witness(0, Vote::prevote(B, 0)), None);
    assert_eq!(s.decided(), Some((A, 0)));
    assert_eq!(s.own(), &own);
}

#[test]
fn catches_up_with_a_later_round() {
    let mut s = Slot::new(CFG, Some(0), OwnVotes::default());
    s.add_candidate(A);
    // Two operators (f + 1) are already in round 3.
    s.add_vote(1, Vote::prevote(A, 3));
    let a = s.add_vote(2, Vote::prevote(A, 3));
    assert_eq!(s.round(), 3);
    assert!(a.contains(&Action::Vote(Vote::prevote(A, 3))));
}

#[derive(Clone, Debug)]
enum Step {
    Deliver(usize),
    Timeout(usize),
    Byzantine { to: usize, vote: (bool, u32, bool) },
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => any::<usize>().prop_map(Step::Deliver),
        1 => (0usize..3).prop_map(Step::Timeout),
        2 => ((0usize..3), (any::<bool>(), 0u32..4, any::<bool>())).prop_map(|(to, vote)| Step::Byzantine { to, vote }),
    ]
}

/// Four operators with `cfg`, each given `A` as its only candidate, run until no vote is in
/// flight: every one has decided `A` in round 0.
fn all_decide_a(cfg: SlotConfig) -> Net {
    let mut net = Net::with(cfg, 4);
    for i in 0..4 {
        net.candidate(i, A);
    }
    net.drain();
    assert!(net.decisions.iter().all(|d| *d == Some((A, 0))));
    net
}

/// Operator 0's slot after a round-0 polka for `A` (prevotes of 0, 1 and 2), holding its commit.
fn held_polka() -> Slot {
    let mut s = Slot::new(HELD, Some(0), OwnVotes::default());
    s.add_candidate(A);
    s.add_vote(1, Vote::prevote(A, 0));
    s.add_vote(2, Vote::prevote(A, 0));
    assert_eq!(s.held_commit(), Some(A));
    s
}

#[test]
fn every_prevote_in_round_zero_decides_fast_and_commits_still_go_out() {
    let net = all_decide_a(FAST);
    assert_eq!(
        net.fast_decisions, 4,
        "every prevote arrived before the commits"
    );
    for s in &net.slots {
        assert_eq!(s.own().commits, vec![(0, A)]);
    }
    // Without the fast path the same run decides on commits.
    let net = all_decide_a(CFG);
    assert_eq!(net.fast_decisions, 0);
}

#[test]
fn held_commits_are_not_sent_when_every_prevote_comes() {
    let net = all_decide_a(HELD);
    assert_eq!(net.fast_decisions, 4);
    for s in &net.slots {
        assert_eq!(s.own().prevotes, vec![(0, A)]);
        assert_eq!(s.own().commits, vec![], "no commit was needed");
    }
}

#[test]
fn a_held_commit_waits_after_the_polka_until_released() {
    let mut s = Slot::new(HELD, Some(0), OwnVotes::default());
    assert_eq!(s.add_candidate(A), vec![Action::Vote(Vote::prevote(A, 0))]);
    assert_eq!(s.add_vote(1, Vote::prevote(A, 0)), vec![]);
    // A polka (three of four): the commit is held for the fourth prevote.
    assert_eq!(s.add_vote(2, Vote::prevote(A, 0)), vec![]);
    assert_eq!(s.held_commit(), Some(A));
    // Released (the node's deadline): cast now, and never held again at this slot.
    assert_eq!(s.release_commit(), vec![Action::Vote(Vote::commit(A, 0))]);
    assert_eq!(s.held_commit(), None);
    // The fourth prevote still decides fast.
    let a = s.add_vote(3, Vote::prevote(A, 0));
    assert!(matches!(
        a[..],
        [Action::Decide {
            event: A,
            round: 0,
            fast: true
        }]
    ));
    // A timeout releases it too, before leaving the round.
    let mut s = held_polka();
    assert_eq!(s.on_timeout(), vec![Action::Vote(Vote::commit(A, 0))]);
    assert_eq!(s.round(), 0);
}

#[test]
fn a_held_commit_goes_out_once_the_commit_path_is_needed() {
    // Another operator committed in round 0 (it is on the commit path): join it.
    let mut s = held_polka();
    assert_eq!(
        s.add_vote(1, Vote::commit(A, 0)),
        vec![Action::Vote(Vote::commit(A, 0))]
    );
    // The fourth prevote is for another event: no fast decision can come.
    let mut s = held_polka();
    assert_eq!(
        s.add_vote(3, Vote::prevote(B, 0)),
        vec![Action::Vote(Vote::commit(A, 0))]
    );
    // Without holding, the commit goes at the polka.
    let mut s = Slot::new(FAST, Some(0), OwnVotes::default());
    s.add_candidate(A);
    s.add_vote(1, Vote::prevote(A, 0));
    assert_eq!(
        s.add_vote(2, Vote::prevote(A, 0)),
        vec![Action::Vote(Vote::commit(A, 0))]
    );
}

#[test]
fn after_a_fast_decision_a_held_commit_goes_to_an_operator_that_missed_a_prevote() {
    // Operators 0, 1 and 2 saw every prevote and decided fast; operator 3 missed operator 0's.
    let mut net = Net::with(HELD, 4);
    for i in 0..4 {
        net.candidate(i, A);
    }
    // (Lost on the way, and when the others forward it too.)
    while !net.queue.is_empty() {
        if matches!(net.queue[0], (3, 0, _)) {
            net.queue.remove(0);
        } else {
            net.deliver(0);
        }
    }
    assert_eq!(&net.decisions[..3], &[Some((A, 0)); 3]);
    assert_eq!(net.decisions[3], None);
    assert_eq!(net.slots[3].held_commit(), Some(A));
    // Its deadline: it commits, and the others, decided, commit after it.
    net.timeout(3);
    net.drain();
    assert_eq!(net.decisions[3], Some((A, 0)));
    for s in &net.slots {
        assert_eq!(s.own().commits, vec![(0, A)]);
    }
}

#[test]
fn with_fast_decisions_a_later_round_waits_for_the_round_zero_prevotes() {
    // Operator 0 saw B first and A (the lower hash) later; two operators are in round 1 with A.
    let later_round = |cfg| {
        let mut s = Slot::new(cfg, Some(0), OwnVotes::default());
        s.add_candidate(B);
        s.add_candidate(A);
        s.add_vote(1, Vote::prevote(B, 0));
        s.add_vote(1, Vote::prevote(A, 1));
        let a = s.add_vote(2, Vote::prevote(A, 1));
        assert_eq!(s.round(), 1);
        (s, a)
    };
    // Without the fast path it prevotes the lowest candidate at once.
    // (With the two others' prevotes that is a polka: it commits too.)
    let (_, a) = later_round(CFG);
    assert_eq!(a.first(), Some(&Action::Vote(Vote::prevote(A, 1))));
    // With it, B might have been decided on four round-0 prevotes: it waits until it knows the
    // round-0 prevotes of 2f + 1 = 3 operators, and B has f + 1 = 2 of them, so B.
    let (mut s, a) = later_round(FAST);
    assert_eq!(a, vec![]);
    let a = s.add_vote(2, Vote::prevote(B, 0));
    assert_eq!(a, vec![Action::Vote(Vote::prevote(B, 1))]);
}

#[test]
fn with_fast_decisions_a_federation_where_m_is_below_n_minus_f_stays_live() {
    // 4-of-6, f = 1: round 0 is left once 4 operators prevoted in it, so the round-0 prevotes of
    // n - f = 5 may never exist.
    let cfg = SlotConfig {
        m: 4,
        n: 6,
        f: 1,
        fast: true,
        hold_commits: false,
    };
    let mut net = Net::with(cfg, 6);
    // The owner equivocated: three operators have A, one B, two nothing yet.
    for i in 0..3 {
        net.candidate(i, A);
    }
    net.candidate(3, B);
    net.drain();
    assert!(net.decisions.iter().all(Option::is_none));
    for i in 0..6 {
        net.timeout(i);
    }
    // Then every operator learns both events; rounds time out until all decide.
    net.candidate(3, A);
    for i in 4..6 {
        net.candidate(i, A);
        net.candidate(i, B);
    }
    for _ in 0..10 {
        net.drain();
        for i in 0..6 {
            net.timeout(i);
        }
    }
    net.drain();
    assert!(
        net.decisions.iter().all(|d| *d == Some((A, 1))),
        "{:?}",
        net.decisions
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Three honest operators and one Byzantine one that sends any votes it likes (for A or B,
    /// any round, either phase, different ones to different operators); the honest ones see the
    /// two conflicting events in any order; messages arrive in any order with timeouts anywhere.
    /// Safety: no two honest operators decide differently. Liveness: once messages flow and
    /// rounds time out, every honest operator decides.
    #[test]
    fn at_most_one_event_is_decided(orders in prop::collection::vec(any::<bool>(), 3), steps in prop::collection::vec(arb_step(), 0..200)) {
        one_event_at_most(CFG, &orders, steps)?;
    }

    /// The same with fast decisions (a prevote from all four in round 0) beside the commits.
    #[test]
    fn at_most_one_event_is_decided_with_fast_decisions(orders in prop::collection::vec(any::<bool>(), 3), steps in prop::collection::vec(arb_step(), 0..200)) {
        one_event_at_most(FAST, &orders, steps)?;
    }

    /// ... and with every honest operator seeing A first, so that fast decisions are common:
    /// the Byzantine operator's votes (any, to anyone) decide whether all four prevotes meet.
    #[test]
    fn a_fast_decision_is_never_overturned(steps in prop::collection::vec(arb_step(), 0..200)) {
        one_event_at_most(FAST, &[true; 3], steps)?;
    }

    /// The same two with round-0 commits held back while the fast decision may come (released
    /// by timeouts here): still safe, and still live.
    #[test]
    fn at_most_one_event_is_decided_with_held_commits(orders in prop::collection::vec(any::<bool>(), 3), steps in prop::collection::vec(arb_step(), 0..200)) {
        one_event_at_most(HELD, &orders, steps)?;
    }

    #[test]
    fn a_fast_decision_is_never_overturned_with_held_commits(steps in prop::collection::vec(arb_step(), 0..200)) {
        one_event_at_most(HELD, &[true; 3], steps)?;
    }
}

fn one_event_at_most(
    cfg: SlotConfig,
    orders: &[bool],
    steps: Vec<Step>,
) -> Result<(), TestCaseError> {
    {
        let mut net = Net::with(cfg, 3);
        for (i, a_first) in orders.iter().enumerate() {
            let (x, y) = if *a_first { (A, B) } else { (B, A) };
            net.candidate(i, x);
            net.candidate(i, y);
        }
        for step in steps {
            match step {
                Step::Deliver(k) if !net.queue.is_empty() => net.deliver(k % net.queue.len()),
                Step::Deliver(_) => {}
                Step::Timeout(i) => net.timeout(i),
                Step::Byzantine {
                    to,
                    vote: (a, round, commit),
                } => {
                    let e = if a { A } else { B };
                    let v = if commit {
                        Vote::commit(e, round)
                    } else {
                        Vote::prevote(e, round)
                    };
                    net.queue.push((to, 3, v));
                }
            }
        }
        for _ in 0..30 {
            net.drain();
            if net.decisions.iter().all(Option::is_some) {
                break;
            }
            for i in 0..3 {
                net.timeout(i);
            }
        }
        net.drain();
        let decided: BTreeSet<EventHash> =
            net.decisions.iter().flatten().map(|(e, _)| *e).collect();
        prop_assert!(
            decided.len() <= 1,
            "conflicting decisions {:?}",
            net.decisions
        );
        prop_assert!(
            net.decisions.iter().all(Option::is_some),
            "not live: {:?}",
            net.decisions
        );
        for s in &net.slots {
            let rounds: BTreeSet<u32> = s.own().prevotes.iter().map(|(r, _)| *r).collect();
            prop_assert_eq!(
                rounds.len(),
                s.own().prevotes.len(),
                "two prevotes in one round"
            );
            let rounds: BTreeSet<u32> = s.own().commits.iter().map(|(r, _)| *r).collect();
            prop_assert_eq!(
                rounds.len(),
                s.own().commits.len(),
                "two commits in one round"
            );
        }
    }
    Ok(())
}
