//! Recently decided slots, set aside with the votes they recorded, so that a vote arriving after
//! the decision that conflicts with one the same operator cast before is still recorded as
//! evidence of equivocation. (An operator that decides before the conflicting vote reaches it
//! would otherwise drop that vote as one for an event that lost.) Bounded: the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use hallmark_protocol::consensus::{Action, Slot};
use hallmark_protocol::{EventHash, Subject, Vote};

/// How many decided slots, and how many losing events, are remembered.
pub(super) const RETIRED_SLOTS: usize = 4096;

type SlotKey = (Subject, u64);

/// A map that forgets its oldest entries beyond `cap`.
struct Fifo<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Copy + Eq + Hash, V> Fifo<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// Decided slots and the events seen competing for them after the decision.
pub(super) struct Retired {
    slots: Fifo<SlotKey, Slot>,
    losers: Fifo<EventHash, SlotKey>,
}

impl Retired {
    pub(super) fn new() -> Self {
        Self {
            slots: Fifo::new(RETIRED_SLOTS),
            losers: Fifo::new(RETIRED_SLOTS),
        }
    }

    /// `slot` at `key` was decided.
    pub(super) fn retire(&mut self, key: SlotKey, slot: Slot) {
        self.slots.insert(key, slot);
    }

    /// `event` competes for `key` but was not admitted: if `key` was decided recently, votes for
    /// `event` are checked against that slot's (returns whether it was).
    pub(super) fn note_loser(&mut self, event: EventHash, key: SlotKey) -> bool {
        let recent = self.slots.map.contains_key(&key);
        if recent {
            self.losers.insert(event, key);
        }
        recent
    }

    /// Whether `event` lost at a recently decided slot (its votes are witnessed, not kept).
    pub(super) fn lost(&self, event: &EventHash) -> bool {
        self.losers.map.contains_key(event)
    }

    /// A vote by `operator` for `vote.event`, a recent loser: evidence, if the operator voted
    /// for another event in the same round and phase at that slot.
    pub(super) fn witness(&mut self, operator: usize, vote: Vote) -> Option<(SlotKey, Action)> {
        let key = *self.losers.map.get(&vote.event)?;
        let slot = self.slots.map.get_mut(&key)?;
        slot.witness(operator, vote).map(|a| (key, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_go_first() {
        let mut f = Fifo::new(2);
        f.insert(1, 'a');
        f.insert(2, 'b');
        f.insert(1, 'c');
        f.insert(3, 'd');
        assert_eq!(f.map.len(), 2);
        assert!(!f.map.contains_key(&1));
        assert_eq!(f.map.get(&3), Some(&'d'));
    }
}
