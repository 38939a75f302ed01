//! Recently decided slots, set aside with the votes they recorded, so that a vote arriving after
//! the decision that conflicts with one the same operator cast before is still recorded as
//! evidence of equivocation. (An operator that decides before the conflicting vote reaches it
//! would otherwise drop that vote as one for an event that lost.) Bounded: the oldest go first.

use hallmark_protocol::consensus::{Action, Slot};
use hallmark_protocol::{EventHash, Subject, Vote};

use crate::fifo::Fifo;

/// How many decided slots, and how many losing events, are remembered.
pub(super) const RETIRED_SLOTS: usize = 4096;

type SlotKey = (Subject, u64);

/// Decided slots and the events seen competing for them after the decision.
pub(super) struct Retired {
    /// Boxed: the map moves its values when it rehashes (it does, as old entries go and new
    /// ones come), and a pointer is cheaper to move than a slot.
    slots: Fifo<SlotKey, Box<Slot>>,
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
        self.slots.insert(key, Box::new(slot));
    }

    /// `event` competes for `key` but was not admitted: if `key` was decided recently, votes for
    /// `event` are checked against that slot's (returns whether it was).
    pub(super) fn note_loser(&mut self, event: EventHash, key: SlotKey) -> bool {
        let recent = self.slots.contains_key(&key);
        if recent {
            self.losers.insert(event, key);
        }
        recent
    }

    /// Whether `event` lost at a recently decided slot (its votes are witnessed, not kept).
    pub(super) fn lost(&self, event: &EventHash) -> bool {
        self.losers.contains_key(event)
    }

    /// A vote by `operator` for `vote.event`, a recent loser: evidence, if the operator voted
    /// for another event in the same round and phase at that slot.
    pub(super) fn witness(&mut self, operator: usize, vote: Vote) -> Option<(SlotKey, Action)> {
        let key = *self.losers.get(&vote.event)?;
        let slot = self.slots.get_mut(&key)?;
        slot.witness(operator, vote).map(|a| (key, a))
    }
}
