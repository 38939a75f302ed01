//! This operator's own votes as the store keeps them: a journal.
//!
//! Before any vote leaves the process, the operator's votes at the slots it voted at are written
//! with fsync, one group commit per flush of the event loop, and on restart each slot resumes
//! from them, so that the operator never votes twice in a round (`docs/consensus.md`). Up to
//! schema version 4 they were a key per slot ((subject, height) -> `OwnVotes`): every certified
//! event inserted one into a hash memtable (sorted again at the memtable's flush) and every new
//! slot read one, nearly always absent. Now each flush writes one journal entry (a sequence
//! number -> the votes of the slots it changed), and the journal is read once, when the store is
//! opened, into memory: the slots still undecided then resume from it
//! ([`Store::take_own_votes`]). A slot is undecided for milliseconds to seconds, so the journal
//! is compacted now and then ([`Store::compact_own_votes`]): one entry with the votes of every
//! slot still undecided replaces all the entries before it, in one synced write.

use foldhash::HashMap;
use hallmark_protocol::consensus::OwnVotes;
use hallmark_protocol::encoding::decode_stored;
use hallmark_protocol::{encode, ItemId, ManufacturerId, OfferId, Subject};
use rocksdb::{IteratorMode, WriteBatch};

use super::{Column, Store, StoreError};

/// The column family of versions 1 to 4 for the votes, a key per slot: read into the journal
/// when such a store is opened, then dropped.
pub(super) const LEGACY_VOTES: &str = "votes";

/// One journal entry: the votes at each slot it names (all of this operator's votes there).
type Entry = Vec<(Subject, u64, OwnVotes)>;

/// What the store keeps in memory of the journal.
#[derive(Default)]
pub(super) struct Journal {
    /// The key of the next entry.
    next: u64,
    /// Entries written (or found when opened) since the last compaction.
    since_compaction: u64,
    /// The votes read when the store was opened, at slots that were undecided then, until the
    /// event loop takes them for a slot it opens.
    restored: HashMap<(Subject, u64), OwnVotes>,
}

/// The slot of a version 4 key (subject key, then big-endian height).
fn parse_slot_key(k: &[u8]) -> Option<(Subject, u64)> {
    let k: &[u8; 41] = k.try_into().ok()?;
    let id: [u8; 32] = k[1..33].try_into().ok()?;
    let subject = match k[0] {
        0 => Subject::Manufacturer(ManufacturerId(id)),
        1 => Subject::Item(ItemId(id)),
        2 => Subject::Offer(OfferId(id)),
        3 => Subject::Checkpoint,
        _ => return None,
    };
    Some((subject, u64::from_be_bytes(k[33..].try_into().ok()?)))
}

fn corrupt(column: &'static str, what: &str) -> StoreError {
    StoreError::Corrupt {
        column,
        error: hallmark_protocol::DecodeError::Malformed(what.into()),
    }
}

impl Store {
    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        // Every change under the lock follows a successful write and is made in full.
        self.votes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the journal (and the votes of a version 4 store, `legacy`) when the store is
    /// opened, keeping the votes at slots still undecided (legacy votes are then written into
    /// the journal by [`Store::write_restored`]).
    pub(super) fn load_own_votes(&self, legacy: bool) -> Result<(), StoreError> {
        let mut restored: HashMap<(Subject, u64), OwnVotes> = HashMap::default();
        if legacy {
            let cf = self
                .db
                .cf_handle(LEGACY_VOTES)
                .expect("the legacy column is opened when present");
            for kv in self.db.iterator_cf(cf, IteratorMode::Start) {
                let (k, v) = kv?;
                let slot = parse_slot_key(&k).ok_or_else(|| corrupt(LEGACY_VOTES, "bad slot"))?;
                let votes = decode_stored(&v).map_err(|error| StoreError::Corrupt {
                    column: LEGACY_VOTES,
                    error,
                })?;
                restored.insert(slot, votes);
            }
        }
        let mut next = 0;
        let mut entries = 0;
        for kv in self
            .db
            .iterator_cf(self.cf(Column::Votes), IteratorMode::Start)
        {
            let (k, v) = kv?;
            let seq = <[u8; 8]>::try_from(k.as_ref())
                .map_err(|_| corrupt(Column::Votes.name(), "bad key"))?;
            next = u64::from_be_bytes(seq) + 1;
            entries += 1;
            let entry: Entry = decode_stored(&v).map_err(|error| StoreError::Corrupt {
                column: Column::Votes.name(),
                error,
            })?;
            // Later entries hold all the votes of the earlier ones at the same slot, and more.
            for (subject, height, votes) in entry {
                restored.insert((subject, height), votes);
            }
        }
        let restored = self.undecided(restored)?;
        *self.journal() = Journal {
            next,
            since_compaction: entries,
            restored,
        };
        Ok(())
    }

    /// The votes in `votes` at slots whose chain has not reached them yet.
    fn undecided(
        &self,
        votes: HashMap<(Subject, u64), OwnVotes>,
    ) -> Result<HashMap<(Subject, u64), OwnVotes>, StoreError> {
        let mut next_heights: HashMap<Subject, u64> = HashMap::default();
        let mut kept = HashMap::default();
        for ((subject, height), v) in votes {
            let next = match next_heights.entry(subject) {
                std::collections::hash_map::Entry::Occupied(e) => *e.get(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    *e.insert(self.next_height(&subject)?)
                }
            };
            if height >= next {
                kept.insert((subject, height), v);
            }
        }
        Ok(kept)
    }

    /// Writes the votes read from a version 4 store into the journal, as one entry (synced), so
    /// that its column can be dropped.
    pub(super) fn write_restored(&self) -> Result<(), StoreError> {
        let entry = (self.journal().restored.iter())
            .map(|((s, h), v)| (*s, *h, v.clone()))
            .collect();
        self.compact_from(&entry)
    }

    /// This operator's votes at a slot from before the store was opened (none for a slot it
    /// never voted at), for the event loop to resume the slot from; taken only once.
    pub fn take_own_votes(&self, subject: &Subject, height: u64) -> OwnVotes {
        self.journal()
            .restored
            .remove(&(*subject, height))
            .unwrap_or_default()
    }

    /// Durably records this operator's votes at several slots (all its votes at each): one
    /// journal entry, one fsync.
    pub fn put_own_votes<'a>(
        &self,
        slots: impl IntoIterator<Item = (&'a Subject, u64, &'a OwnVotes)>,
    ) -> Result<(), StoreError> {
        // (Encoded from references: the same bytes as an `Entry`.)
        let entry: Vec<(&Subject, u64, &OwnVotes)> = slots.into_iter().collect();
        if entry.is_empty() {
            return Ok(());
        }
        let mut journal = self.journal();
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(Column::Votes),
            journal.next.to_be_bytes(),
            encode(&entry),
        );
        self.write_synced(batch)?;
        journal.next += 1;
        journal.since_compaction += 1;
        Ok(())
    }

    /// Journal entries written since the last compaction.
    pub fn own_votes_since_compaction(&self) -> u64 {
        self.journal().since_compaction
    }

    /// Compacts the journal: one entry with the votes at `open` (the slots the event loop holds
    /// undecided, with all its votes at each) and at the slots read when the store was opened and
    /// not taken yet that are still undecided replaces every entry before it, in one synced
    /// write. A slot left out must be decided already: its votes are gone afterwards.
    pub fn compact_own_votes<'a>(
        &self,
        open: impl IntoIterator<Item = (&'a Subject, u64, &'a OwnVotes)>,
    ) -> Result<(), StoreError> {
        let restored = std::mem::take(&mut self.journal().restored);
        let restored = self.undecided(restored)?;
        let mut entry: Entry = restored
            .iter()
            .map(|((s, h), v)| (*s, *h, v.clone()))
            .collect();
        self.journal().restored = restored;
        entry.extend(
            open.into_iter()
                .filter(|(_, _, v)| !v.prevotes.is_empty() || !v.commits.is_empty())
                .map(|(s, h, v)| (*s, h, v.clone())),
        );
        self.compact_from(&entry)
    }

    fn compact_from(&self, entry: &Entry) -> Result<(), StoreError> {
        let mut journal = self.journal();
        let seq = journal.next;
        let mut batch = WriteBatch::default();
        let cf = self.cf(Column::Votes);
        batch.put_cf(cf, seq.to_be_bytes(), encode(entry));
        batch.delete_range_cf(cf, 0u64.to_be_bytes(), seq.to_be_bytes());
        self.write_synced(batch)?;
        journal.next = seq + 1;
        journal.since_compaction = 0;
        crate::metrics::VOTE_JOURNAL_COMPACTIONS.inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::store::slot_key;
    use hallmark_protocol::testkit::federation;
    use hallmark_protocol::EventHash;

    fn votes(round: u32, e: u8) -> OwnVotes {
        OwnVotes {
            prevotes: vec![(round, EventHash([e; 32]))],
            commits: vec![],
        }
    }

    fn entries(s: &Store) -> usize {
        s.db.iterator_cf(s.cf(Column::Votes), IteratorMode::Start)
            .count()
    }

    #[test]
    fn votes_survive_reopening_and_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = Subject::Item(ItemId([1; 32]));
        let b = Subject::Item(ItemId([2; 32]));
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_own_votes([(&a, 0, &votes(0, 1)), (&b, 0, &votes(0, 2))])
                .unwrap();
            let mut later = votes(0, 1);
            later.commits.push((0, EventHash([1; 32])));
            s.put_own_votes([(&a, 0, &later)]).unwrap();
            assert_eq!(s.own_votes_since_compaction(), 2);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.own_votes_since_compaction(), 2);
        let a0 = s.take_own_votes(&a, 0);
        assert_eq!(a0.commits, vec![(0, EventHash([1; 32]))]);
        assert_eq!(a0.prevotes, vec![(0, EventHash([1; 32]))]);
        assert_eq!(s.take_own_votes(&b, 0), votes(0, 2));
        assert_eq!(s.take_own_votes(&b, 0), OwnVotes::default());
        assert_eq!(s.take_own_votes(&b, 1), OwnVotes::default());
        // Writes after reopening go after the entries found.
        s.put_own_votes([(&b, 1, &votes(0, 3))]).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.take_own_votes(&b, 1), votes(0, 3));
        assert_eq!(s.take_own_votes(&a, 0).commits.len(), 1);
    }

    #[test]
    fn compaction_keeps_the_undecided_slots_only_in_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let open = Subject::Item(ItemId([1; 32]));
        let decided = Subject::Item(ItemId([2; 32]));
        let restored = Subject::Offer(OfferId([3; 32]));
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_own_votes([(&restored, 0, &votes(1, 3))]).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            s.put_own_votes([(&open, 0, &votes(i, 1)), (&decided, 0, &votes(i, 2))])
                .unwrap();
        }
        assert_eq!(entries(&s), 6);
        // The event loop still holds `open` undecided; `decided` it no longer holds.
        s.compact_own_votes([(&open, 0, &votes(4, 1))]).unwrap();
        assert_eq!(s.own_votes_since_compaction(), 0);
        assert_eq!(entries(&s), 1);
        s.put_own_votes([(&open, 1, &votes(0, 4))]).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(entries(&s), 2);
        assert_eq!(s.take_own_votes(&open, 0), votes(4, 1));
        assert_eq!(s.take_own_votes(&open, 1), votes(0, 4));
        assert_eq!(s.take_own_votes(&decided, 0), OwnVotes::default());
        // Read at opening and never taken, but still undecided: kept by the compaction.
        assert_eq!(s.take_own_votes(&restored, 0), votes(1, 3));
    }

    #[test]
    fn votes_at_slots_decided_before_opening_are_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        let m;
        {
            let s = Store::open(dir.path()).unwrap();
            let hash = crate::store::tests::register(&s, &f, 1);
            m = s.certified(&hash).unwrap().unwrap().event.subject(hash);
            s.put_own_votes([(&m, 0, &votes(0, 1)), (&m, 1, &votes(0, 2))])
                .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        // Height 0 of the manufacturer's chain is certified; height 1 is not.
        assert_eq!(s.take_own_votes(&m, 0), OwnVotes::default());
        assert_eq!(s.take_own_votes(&m, 1), votes(0, 2));
    }

    #[test]
    fn a_version_4_store_has_its_votes_moved_into_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let a = Subject::Item(ItemId([1; 32]));
        let c = Subject::Checkpoint;
        {
            let mut s = Store::open(dir.path()).unwrap();
            // As a version 4 build left it: a key per slot in a column of their own.
            let db = Arc::get_mut(&mut s.db).unwrap();
            db.create_cf(LEGACY_VOTES, &rocksdb::Options::default())
                .unwrap();
            let legacy = db.cf_handle(LEGACY_VOTES).unwrap();
            db.put_cf(legacy, slot_key(&a, 3), encode(&votes(0, 1)))
                .unwrap();
            db.put_cf(legacy, slot_key(&c, 0), encode(&votes(2, 9)))
                .unwrap();
            s.db.put_cf(
                s.cf(Column::Meta),
                super::super::META_SCHEMA,
                4u32.to_be_bytes(),
            )
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(entries(&s), 1);
        drop(s);
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        assert!(!names.iter().any(|n| n == LEGACY_VOTES), "{names:?}");
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.take_own_votes(&a, 3), votes(0, 1));
        assert_eq!(s.take_own_votes(&c, 0), votes(2, 9));
    }

    #[test]
    fn slot_keys_parse_back() {
        for s in [
            Subject::Manufacturer(ManufacturerId([1; 32])),
            Subject::Item(ItemId([2; 32])),
            Subject::Offer(OfferId([3; 32])),
            Subject::Checkpoint,
        ] {
            assert_eq!(parse_slot_key(&slot_key(&s, 77)), Some((s, 77)));
        }
        assert_eq!(parse_slot_key(&[9; 41]), None);
        assert_eq!(parse_slot_key(&[1; 40]), None);
    }
}
