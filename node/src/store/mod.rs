//! The operator's RocksDB store. Every column family is listed once in [`Column`]; keys are
//! big-endian so iteration is ordered; each certified event is written with everything it
//! changes in one `WriteBatch`.
//!
//! Durability: the operator's own votes are written with `sync` (fsync) before they are sent,
//! grouped per flush (one entry of a journal, `votes.rs`), so neither a crash nor a power loss
//! can make it vote twice. Certified events go through the WAL without fsync: that survives a
//! killed process (the OS keeps the log), and after a power loss anything lost is fetched back
//! from peers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use hallmark_protocol::checkpoint::FinalCheckpoint;
use hallmark_protocol::checkpoint::{Anchor, CheckpointHash};
use hallmark_protocol::encoding::decode_stored;
use hallmark_protocol::wire::LogEntry;
use hallmark_protocol::{
    encode, Certificate, CertifiedEvent, Event, EventHash, Federation, ItemId, ItemState,
    ManufacturerId, ManufacturerRecord, OfferId, OfferRecord, Rank, Subject, VerifiedBatch,
};
use rocksdb::{ColumnFamily, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Serialize};

use crate::fifo::Fifo;
use foldhash::{HashMap, HashSet};

mod certificates;
mod votes;
pub use certificates::BatchCache;

/// Memory all memtables together may use before they are flushed to disk.
const MEMTABLE_BUDGET: usize = 64 << 20;
/// The block cache shared by every column family.
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// Hash buckets of the memtable of a column read only by whole key: about as many as the entries
/// a memtable holds before it is flushed (some 10^4 to 10^5). Four times as many (1 << 18) made
/// every insert a cache and TLB miss into a 2 MB array: 6.7 % fewer events/s at the max rate.
const MEMTABLE_BUCKETS: usize = 1 << 16;
/// How many of the last certified events' certificate ranks are kept in memory.
pub const RECENT_RANKS: usize = 65_536;
/// How many of the vote batches written last are remembered as written (a batch forgotten and
/// referred to again is written again: harmless).
const RECENT_BATCHES: usize = 16_384;

/// Version of the on-disk layout; a store of another version is refused. Version 3 keeps the
/// events awaiting a checkpoint in memory (found again from the log when the store is opened)
/// instead of in a column of their own, which every certified event wrote and every checkpoint
/// deleted from. Version 4 stores most certificates by reference into vote batches
/// (`certificates.rs`); a version 3 store is read as it is (its certificates are whole), but a
/// version 3 build would not find the certificates stored by reference. Version 5 keeps the
/// operator's own votes in a journal (`votes.rs`) instead of a key per slot; an older store's
/// votes are moved into it when it is opened.
pub const SCHEMA_VERSION: u32 = 5;
/// The column family of versions 1 and 2 for the events awaiting a checkpoint, dropped when such
/// a store is opened.
const LEGACY_UNCHECKPOINTED: &str = "uncheckpointed";

/// Every column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// Schema version, next checkpoint number, the count of checkpointed events not held.
    Meta,
    /// Event hash -> certified `Event`.
    Events,
    /// Event hash -> its `Certificate`, when stored whole.
    Certificates,
    /// Event hash -> its certificate by reference into `Batches` (`certificates.rs`).
    CertificateRefs,
    /// (batch root, signer's operator index) -> a signed vote batch (`BatchVote`) that stored
    /// certificates refer to.
    Batches,
    /// (subject, height) -> event hash: the certified chains.
    Chains,
    /// Item id -> `ItemState`.
    Items,
    /// Manufacturer id -> `ManufacturerRecord`.
    Manufacturers,
    /// Offer id -> `OfferRecord`.
    Offers,
    /// Journal sequence number -> this operator's `OwnVotes` at the slots one flush changed
    /// (`votes.rs`).
    Votes,
    /// Log position -> event hash, in the order this operator applied them.
    Log,
    /// Evidence of operators voting for two events in one round.
    Evidence,
    /// Checkpoint number -> `FinalCheckpoint` (certified checkpoint and its events).
    Checkpoints,
    /// Event hash -> number of the checkpoint covering it.
    CheckpointOf,
    /// Checkpoint number -> `AnchorRecord` (its confirmed Bitcoin anchor).
    Anchors,
    /// The operator's BDK wallet change set.
    Wallet,
}

impl Column {
    /// All columns.
    pub const ALL: [Column; 16] = [
        Column::Meta,
        Column::Events,
        Column::Certificates,
        Column::CertificateRefs,
        Column::Batches,
        Column::Chains,
        Column::Items,
        Column::Manufacturers,
        Column::Offers,
        Column::Votes,
        Column::Log,
        Column::Evidence,
        Column::Checkpoints,
        Column::CheckpointOf,
        Column::Anchors,
        Column::Wallet,
    ];

    /// The column family's name.
    pub fn name(self) -> &'static str {
        match self {
            Column::Meta => "meta",
            Column::Events => "events",
            Column::Certificates => "certificates",
            Column::CertificateRefs => "certificate_refs",
            Column::Batches => "vote_batches",
            Column::Chains => "chains",
            Column::Items => "items",
            Column::Manufacturers => "manufacturers",
            Column::Offers => "offers",
            Column::Votes => "vote_journal",
            Column::Log => "log",
            Column::Evidence => "evidence",
            Column::Checkpoints => "checkpoints",
            Column::CheckpointOf => "checkpoint_of",
            Column::Anchors => "anchors",
            Column::Wallet => "wallet",
        }
    }
}

impl Column {
    /// For the columns read only by whole key, or (chains) by the keys of one prefix, the length
    /// of that prefix. These are never iterated across prefixes.
    fn prefix_len(self) -> Option<usize> {
        match self {
            Column::Events
            | Column::Certificates
            | Column::CertificateRefs
            | Column::Batches
            | Column::Items => Some(32),
            // A chain is read by height or all at once from its subject's prefix.
            Column::Chains => Some(33),
            _ => None,
        }
    }

    /// The column's options: columns read only by whole key (or chains, by subject) keep their
    /// memtable in a hash table of short lists instead of one skip list. Every certified event
    /// inserts into five of them and most reads ask for a key that is not there; in a skip list
    /// of some 10^5 entries each is a chain of cache misses (memtable inserts were 12 % of an
    /// operator's CPU samples at the max rate).
    fn options(self, mut opts: Options) -> Options {
        if let Some(len) = self.prefix_len() {
            opts.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(len));
            opts.set_memtable_factory(rocksdb::MemtableFactory::HashLinkList {
                bucket_count: MEMTABLE_BUCKETS,
            });
        }
        opts
    }
}

const META_SCHEMA: &[u8] = b"schema_version";
const META_NEXT_CHECKPOINT: &[u8] = b"next_checkpoint";
const META_AHEAD: &[u8] = b"checkpointed_ahead";
/// A log position before which every event is in a final checkpoint: opening the store looks for
/// the events awaiting one from there on.
const META_UNCHECKPOINTED_FROM: &[u8] = b"uncheckpointed_from";
const WALLET_KEY: &[u8] = b"changeset";

/// A checkpoint's Bitcoin anchor as this operator saw it confirmed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnchorRecord {
    /// The anchor (transaction, header, height, branch).
    pub anchor: Anchor,
    /// Transaction id.
    pub txid: bitcoin::Txid,
    /// Block hash.
    pub block: bitcoin::BlockHash,
}

/// 33-byte key of a subject: a tag byte then the id.
pub fn subject_key(s: &Subject) -> [u8; 33] {
    let (tag, id) = match s {
        Subject::Manufacturer(m) => (0u8, m.0),
        Subject::Item(i) => (1, i.0),
        Subject::Offer(o) => (2, o.0),
        Subject::Checkpoint => (3, [0; 32]),
    };
    let mut k = [0u8; 33];
    k[0] = tag;
    k[1..].copy_from_slice(&id);
    k
}

/// 41-byte key of a slot: subject key then big-endian height.
pub fn slot_key(s: &Subject, height: u64) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[..33].copy_from_slice(&subject_key(s));
    k[33..].copy_from_slice(&height.to_be_bytes());
    k
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB said no.
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    /// A stored value does not decode: corruption or a foreign store.
    #[error("corrupt value in column {column}: {error}")]
    Corrupt {
        /// Column.
        column: &'static str,
        /// Decoder's complaint.
        error: hallmark_protocol::DecodeError,
    },
    /// The store was written by another schema version.
    #[error("store has schema version {found}, this build reads {SCHEMA_VERSION}")]
    Schema {
        /// Version found.
        found: u32,
    },
}

/// The store, shared read-only with the API; only the node's event loop writes.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    /// The certified events not yet in a final checkpoint (found from the log when the store is
    /// opened, then kept by the writes). Kept in memory, since each certified event is added
    /// and each checkpoint takes them out: as a column, they were a random-key insert and a
    /// tombstone per event and reads per checkpoint, about a tenth of the event loop's time.
    pending: Arc<Mutex<Pending>>,
    /// The log's length (found once when opened, then kept by `apply`).
    log_len: Arc<AtomicU64>,
    /// At least the number of events final checkpoints cover that are not certified here yet
    /// (stored under `META_AHEAD`): while it is zero, no event being applied can already be in
    /// a checkpoint, and `apply` need not look.
    ahead: Arc<AtomicU64>,
    /// The ranks of the certificates of the events certified last, kept by the writes: whether
    /// an event is certified, and with which certificate, is asked for every vote that arrives
    /// after the decision and for every entry of a peer's log at catch-up; each would otherwise
    /// be a RocksDB read and a decode.
    /// With each, whether its certificate is stored by reference (`certificates.rs`).
    ranks: Arc<Mutex<Fifo<EventHash, (Rank, bool)>>>,
    /// The roots of the vote batches written last (`certificates.rs`).
    written: Arc<Mutex<Fifo<certificates::BatchKey, ()>>>,
    /// The own-votes journal's next key, and the votes read from it when opened (`votes.rs`).
    votes: Arc<Mutex<votes::Journal>>,
}

/// Certified events awaiting a checkpoint, in log order.
#[derive(Default)]
struct Pending {
    by_pos: BTreeMap<u64, EventHash>,
    pos: HashMap<EventHash, u64>,
}

impl Pending {
    fn insert(&mut self, pos: u64, hash: EventHash) {
        self.by_pos.insert(pos, hash);
        self.pos.insert(hash, pos);
    }

    fn remove(&mut self, pos: u64) {
        if let Some(h) = self.by_pos.remove(&pos) {
            self.pos.remove(&h);
        }
    }
}

/// What applying one certified event writes, beyond the event and its certificate.
pub enum StateChange {
    /// A manufacturer registered.
    Manufacturer(ManufacturerRecord),
    /// An offer was made.
    Offer(OfferRecord),
    /// An item's new state.
    Item(ItemState),
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        // Memory is bounded for the whole store, not per column family (14 of them): memtables
        // share one write budget and tables one block cache.
        let mut opts = Options::default();
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        // Many lookups are for keys that do not exist (is this event already certified?): bloom
        // filters answer those without reading table blocks.
        let mut tables = rocksdb::BlockBasedOptions::default();
        tables.set_block_cache(&rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES));
        tables.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&tables);
        // One writer (the event loop) at a time: hash-based memtables need this off.
        opts.set_allow_concurrent_memtable_write(false);
        // Unsynced writes (certified events, mostly) gather in the WAL's buffer and reach the
        // file in one write per event-loop iteration (`flush_wal`), or with the next synced
        // write (votes), which writes the buffer first: one system call per iteration instead
        // of one per event. The WAL stays in order, so a crash loses a suffix of unsynced
        // writes, as an OS crash could already; certified events lost that way come back by
        // catch-up, and everything that must survive (votes, checkpoints, the wallet) is synced.
        opts.set_manual_wal_flush(true);
        // A store of version 1 or 2 has a column this one no longer uses: opened, then dropped.
        // So has a store of version 4 or before: its votes, a key per slot.
        let names = DB::list_cf(&opts, dir).unwrap_or_default();
        let legacy = names.iter().any(|n| n == LEGACY_UNCHECKPOINTED);
        let legacy_votes = names.iter().any(|n| n == votes::LEGACY_VOTES);
        let mut columns: Vec<_> = Column::ALL
            .map(|c| rocksdb::ColumnFamilyDescriptor::new(c.name(), c.options(opts.clone())))
            .into();
        for (present, name) in [
            (legacy, LEGACY_UNCHECKPOINTED),
            (legacy_votes, votes::LEGACY_VOTES),
        ] {
            if present {
                columns.push(rocksdb::ColumnFamilyDescriptor::new(name, opts.clone()));
            }
        }
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&opts, dir, columns)?;
        let meta = db
            .cf_handle(Column::Meta.name())
            .expect("every Column is created when the store is opened");
        let version = db.get_cf(meta, META_SCHEMA)?.map(|v| {
            v.as_slice()
                .try_into()
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX)
        });
        if let Some(found) = version.filter(|v| !(1..=SCHEMA_VERSION).contains(v)) {
            return Err(StoreError::Schema { found });
        }
        let mut store = Self {
            db: Arc::new(db),
            pending: Arc::default(),
            log_len: Arc::default(),
            ahead: Arc::default(),
            ranks: Arc::new(Mutex::new(Fifo::new(RECENT_RANKS))),
            written: Arc::new(Mutex::new(Fifo::new(RECENT_BATCHES))),
            votes: Arc::default(),
        };
        let last = store
            .db
            .iterator_cf(store.cf(Column::Log), IteratorMode::End)
            .next()
            .transpose()?;
        let log_len = match last {
            None => 0,
            Some((k, _)) => match <[u8; 8]>::try_from(k.as_ref()) {
                Ok(k) => u64::from_be_bytes(k) + 1,
                Err(_) => {
                    return Err(StoreError::Corrupt {
                        column: Column::Log.name(),
                        error: hallmark_protocol::DecodeError::Malformed("bad position".into()),
                    })
                }
            },
        };
        store.log_len.store(log_len, Ordering::Relaxed);
        let ahead = match version {
            None => 0,
            // Version 1 kept the log length in Meta and no count: count once. The version
            // changes so that a version 1 build refuses the store (it would trust a stale log
            // length and append over the log).
            Some(1) => store.count_ahead()?,
            Some(_) => match store.get_raw(Column::Meta, META_AHEAD)? {
                // Unreadable: always look (it is only an upper bound).
                Some(v) => v.as_slice().try_into().map_or(u64::MAX, u64::from_be_bytes),
                None => store.count_ahead()?,
            },
        };
        // Versions before 3 have no mark: the whole log is looked through once.
        let from = match store.get_raw(Column::Meta, META_UNCHECKPOINTED_FROM)? {
            Some(v) => v.as_slice().try_into().map_or(0, u64::from_be_bytes),
            None => 0,
        };
        let pending = store.find_uncheckpointed(from)?;
        // The mark moves up to the first waiting event now, so the next opening need not look
        // through the same stretch again (an upgraded store's mark starts at 0).
        let first = pending.by_pos.keys().next().copied().unwrap_or(log_len);
        *store.pending() = pending;
        store.load_own_votes(legacy_votes)?;
        if legacy_votes {
            // In the journal (synced) before the version says 5 and the column goes.
            store.write_restored()?;
        }
        let upgrade = version != Some(SCHEMA_VERSION);
        if upgrade || first != from {
            let mut b = WriteBatch::default();
            b.put_cf(
                store.cf(Column::Meta),
                META_UNCHECKPOINTED_FROM,
                first.to_be_bytes(),
            );
            if upgrade {
                b.put_cf(store.cf(Column::Meta), META_AHEAD, ahead.to_be_bytes());
                b.put_cf(
                    store.cf(Column::Meta),
                    META_SCHEMA,
                    SCHEMA_VERSION.to_be_bytes(),
                );
            }
            store.write_synced(b)?;
        }
        // Dropped only once the store says version 3 or later (synced above): a crash before leaves a
        // version 2 store with its column, which either build reads right. (Likewise the votes
        // of a version 4 store, once they are in the journal: read again, they change nothing.)
        for (present, name) in [
            (legacy, LEGACY_UNCHECKPOINTED),
            (legacy_votes, votes::LEGACY_VOTES),
        ] {
            if present {
                Arc::get_mut(&mut store.db)
                    .expect("the store is not shared while it is opened")
                    .drop_cf(name)?;
            }
        }
        store.ahead.store(ahead, Ordering::Relaxed);
        Ok(store)
    }

    /// The certified events from log position `from` on that no final checkpoint covers.
    fn find_uncheckpointed(&self, from: u64) -> Result<Pending, StoreError> {
        let mut pending = Pending::default();
        let iter = self.db.iterator_cf(
            self.cf(Column::Log),
            IteratorMode::From(&from.to_be_bytes(), rocksdb::Direction::Forward),
        );
        for kv in iter {
            let (k, v) = kv?;
            let (Ok(pos), Ok(hash)) = (
                <[u8; 8]>::try_from(k.as_ref()),
                <[u8; 32]>::try_from(v.as_ref()),
            ) else {
                return Err(StoreError::Corrupt {
                    column: Column::Log.name(),
                    error: hallmark_protocol::DecodeError::Malformed("bad log entry".into()),
                });
            };
            let hash = EventHash(hash);
            if self.checkpoint_of(&hash)?.is_none() {
                pending.insert(u64::from_be_bytes(pos), hash);
            }
        }
        Ok(pending)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while the lock was held cannot leave it half-changed: its writers change it
        // only after their write to the store succeeded, and then in full.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events covered by final checkpoints and not certified here (one scan).
    fn count_ahead(&self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for kv in self
            .db
            .iterator_cf(self.cf(Column::CheckpointOf), IteratorMode::Start)
        {
            let (k, _) = kv?;
            let hash = <[u8; 32]>::try_from(k.as_ref()).map(EventHash);
            n += u64::from(!hash.map_or(Ok(false), |h| self.has_certificate(&h))?);
        }
        Ok(n)
    }

    fn cf(&self, c: Column) -> &ColumnFamily {
        self.db
            .cf_handle(c.name())
            .expect("every Column is created when the store is opened")
    }

    /// Writes `batch` with fsync.
    fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    fn get_raw(&self, c: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(c), key)?)
    }

    fn get<T: Serialize + DeserializeOwned>(
        &self,
        c: Column,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get_raw(c, key)?
            .map(|v| {
                decode_stored(&v).map_err(|error| StoreError::Corrupt {
                    column: c.name(),
                    error,
                })
            })
            .transpose()
    }

    /// Number of events in this operator's log.
    pub fn log_len(&self) -> u64 {
        self.log_len.load(Ordering::Relaxed)
    }

    fn recent_ranks(&self) -> std::sync::MutexGuard<'_, Fifo<EventHash, (Rank, bool)>> {
        // A panic while the lock was held cannot leave the map half-changed (single inserts).
        self.ranks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `hash` is among the events certified here last (a quick yes; no is not an
    /// answer: older events are not remembered).
    pub fn recently_certified(&self, hash: &EventHash) -> bool {
        self.recent_ranks().contains_key(hash)
    }

    /// The rank of the certificate held here for `hash` ([`Certificate::rank`]), if certified.
    pub fn rank(
        &self,
        hash: &EventHash,
        federation: &Federation,
    ) -> Result<Option<Rank>, StoreError> {
        if let Some((r, _)) = self.recent_ranks().get(hash) {
            return Ok(Some(r.clone()));
        }
        self.stored_rank(hash, federation)
    }

    /// A certified event by hash.
    pub fn certified(&self, hash: &EventHash) -> Result<Option<CertifiedEvent>, StoreError> {
        self.certified_with(hash, &mut BatchCache::default())
    }

    /// A certified event by hash, with the vote batches read for the request so far.
    pub fn certified_with(
        &self,
        hash: &EventHash,
        cache: &mut BatchCache,
    ) -> Result<Option<CertifiedEvent>, StoreError> {
        let Some(event) = self.get::<Event>(Column::Events, &hash.0)? else {
            return Ok(None);
        };
        let certificate = self
            .read_certificate(hash, cache)?
            .ok_or(StoreError::Corrupt {
                column: Column::Certificates.name(),
                error: hallmark_protocol::DecodeError::Malformed("missing certificate".into()),
            })?;
        Ok(Some(CertifiedEvent { event, certificate }))
    }

    /// The certificate of a certified event.
    pub fn certificate(&self, hash: &EventHash) -> Result<Option<Certificate>, StoreError> {
        self.read_certificate(hash, &mut BatchCache::default())
    }

    fn written_batches(&self) -> std::sync::MutexGuard<'_, Fifo<certificates::BatchKey, ()>> {
        // A panic while the lock was held cannot leave the map half-changed (single inserts).
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The certified event at (subject, height).
    pub fn chain_at(
        &self,
        subject: &Subject,
        height: u64,
    ) -> Result<Option<EventHash>, StoreError> {
        Ok(self
            .get_raw(Column::Chains, &slot_key(subject, height))?
            .and_then(|v| v.as_slice().try_into().ok().map(EventHash)))
    }

    /// The certified chain of a subject, from height 0.
    pub fn chain(&self, subject: &Subject) -> Result<Vec<CertifiedEvent>, StoreError> {
        let prefix = subject_key(subject);
        let mut out = Vec::new();
        // Within the subject's prefix (the column's memtable is a hash of prefixes).
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_prefix_same_as_start(true);
        let iter = self.db.iterator_cf_opt(
            self.cf(Column::Chains),
            ro,
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        );
        for kv in iter {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let hash = EventHash(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                column: Column::Chains.name(),
                error: hallmark_protocol::DecodeError::Malformed("bad hash".into()),
            })?);
            if let Some(ce) = self.certified(&hash)? {
                out.push(ce);
            }
        }
        Ok(out)
    }

    /// Next height of a subject's chain (0 if it has none).
    pub fn next_height(&self, subject: &Subject) -> Result<u64, StoreError> {
        Ok(match subject {
            Subject::Item(i) => self.item(i)?.map_or(0, |s| s.height + 1),
            Subject::Manufacturer(m) => u64::from(self.manufacturer(m)?.is_some()),
            Subject::Offer(o) => u64::from(self.offer(o)?.is_some()),
            Subject::Checkpoint => self.next_checkpoint()?,
        })
    }

    /// An item's state.
    pub fn item(&self, id: &ItemId) -> Result<Option<ItemState>, StoreError> {
        self.get(Column::Items, &id.0)
    }

    /// A registered manufacturer.
    pub fn manufacturer(
        &self,
        id: &ManufacturerId,
    ) -> Result<Option<ManufacturerRecord>, StoreError> {
        self.get(Column::Manufacturers, &id.0)
    }

    /// An offer.
    pub fn offer(&self, id: &OfferId) -> Result<Option<OfferRecord>, StoreError> {
        self.get(Column::Offers, &id.0)
    }

    /// The event hashes at log positions `[from, from + limit)`.
    fn log_hashes(&self, from: u64, limit: usize) -> Result<Vec<EventHash>, StoreError> {
        let iter = self.db.iterator_cf(
            self.cf(Column::Log),
            IteratorMode::From(&from.to_be_bytes(), rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for kv in iter.take(limit) {
            let (_, v) = kv?;
            out.extend(<[u8; 32]>::try_from(v.as_ref()).ok().map(EventHash));
        }
        Ok(out)
    }

    /// Log entries `[from, from + limit)`.
    pub fn log_range(&self, from: u64, limit: usize) -> Result<Vec<CertifiedEvent>, StoreError> {
        let hashes = self.log_hashes(from, limit)?;
        let mut cache = BatchCache::default();
        let found = hashes.iter().map(|h| self.certified_with(h, &mut cache));
        found.filter_map(Result::transpose).collect()
    }

    /// Log entries `[from, from + limit)` as hashes and certificate ranks (what catch-up
    /// compares; see [`Store::with_ranks`]).
    pub fn log_entries(
        &self,
        from: u64,
        limit: usize,
        federation: &Federation,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let hashes = self.log_hashes(from, limit)?;
        let entries = self.with_ranks(
            &hashes,
            |h| h,
            federation,
            |h, rank| LogEntry::ranked(*h, rank),
        )?;
        Ok(entries.into_iter().flatten().collect())
    }

    /// For each of a peer's log entries, how the rank the entry claims compares with that of
    /// the certificate held here (`None`: the event is not certified here), compared in place
    /// (see [`Store::with_ranks`]).
    pub fn compare_ranks(
        &self,
        entries: &[LogEntry],
        federation: &Federation,
    ) -> Result<Vec<Option<std::cmp::Ordering>>, StoreError> {
        self.with_ranks(entries, |e| &e.event, federation, LogEntry::cmp_rank)
    }

    /// `f` of each item and the rank of the certificate held here for its event (`None`: not
    /// certified here). Recent ranks are read under one lock for all items, older ones from
    /// the stored certificates: catch-up reads and compares every entry of every peer's log.
    fn with_ranks<I, T>(
        &self,
        items: &[I],
        event: impl Fn(&I) -> &EventHash,
        federation: &Federation,
        f: impl Fn(&I, &Rank) -> T,
    ) -> Result<Vec<Option<T>>, StoreError> {
        let recent: Vec<_> = {
            let ranks = self.recent_ranks();
            items
                .iter()
                .map(|i| ranks.get(event(i)).map(|(rank, _)| f(i, rank)))
                .collect()
        };
        items
            .iter()
            .zip(recent)
            .map(|(i, found)| match found {
                Some(t) => Ok(Some(t)),
                None => Ok(self
                    .stored_rank(event(i), federation)?
                    .map(|rank| f(i, &rank))),
            })
            .collect()
    }

    /// Applies a certified event: the event, its certificate (of rank `rank`; by reference into
    /// `batches`, the vote batches of its attestations where the caller holds them, see
    /// `certificates.rs`), the chain index, the new state and a log entry, in one atomic batch.
    /// Returns the event's log position. Only the event loop writes, so the log length and the
    /// ranks kept in memory follow.
    pub fn apply(
        &self,
        subject: &Subject,
        ce: &CertifiedEvent,
        change: &StateChange,
        rank: Rank,
        batches: &[Option<Arc<VerifiedBatch>>],
    ) -> Result<u64, StoreError> {
        let hash = ce.certificate.event;
        let pos = self.log_len();
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(Column::Events), hash.0, encode(&ce.event));
        let (batched, written) =
            self.stage_certificate(&mut b, &ce.certificate, &rank, batches, false);
        b.put_cf(
            self.cf(Column::Chains),
            slot_key(subject, ce.event.body.height),
            hash.0,
        );
        match change {
            StateChange::Manufacturer(m) => {
                b.put_cf(self.cf(Column::Manufacturers), m.id.0, encode(m))
            }
            StateChange::Offer(o) => b.put_cf(self.cf(Column::Offers), o.id.0, encode(o)),
            StateChange::Item(i) => b.put_cf(self.cf(Column::Items), i.id.0, encode(i)),
        }
        b.put_cf(self.cf(Column::Log), pos.to_be_bytes(), hash.0);
        let ahead = self.ahead.load(Ordering::Relaxed);
        let pending = ahead == 0 || self.checkpoint_of(&hash)?.is_none();
        if !pending {
            b.put_cf(self.cf(Column::Meta), META_AHEAD, (ahead - 1).to_be_bytes());
        }
        self.db.write(b)?;
        self.mark_written(written);
        self.log_len.store(pos + 1, Ordering::Relaxed);
        if pending {
            self.pending().insert(pos, hash);
        } else {
            self.ahead.store(ahead - 1, Ordering::Relaxed);
        }
        self.recent_ranks().insert(hash, (rank, batched));
        Ok(pos)
    }

    /// Replaces the certificate of a certified event (by a canonical one with the same event,
    /// of rank `rank`; by reference into `batches` where possible, as in [`Store::apply`]).
    pub fn replace_certificate(
        &self,
        cert: &Certificate,
        rank: Rank,
        batches: &[Option<Arc<VerifiedBatch>>],
    ) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        let (batched, written) = self.stage_certificate(&mut b, cert, &rank, batches, true);
        self.db.write(b)?;
        self.mark_written(written);
        if let Some(r) = self.recent_ranks().get_mut(&cert.event) {
            *r = (rank, batched);
        }
        Ok(())
    }

    /// Records evidence under `key`.
    pub fn put_evidence(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db.put_cf(self.cf(Column::Evidence), key, value)?;
        Ok(())
    }

    /// Number of evidence records.
    pub fn evidence_count(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self
            .db
            .iterator_cf(self.cf(Column::Evidence), IteratorMode::Start)
        {
            kv?;
            n += 1;
        }
        Ok(n)
    }

    /// Number of the next checkpoint (0 before the first).
    pub fn next_checkpoint(&self) -> Result<u64, StoreError> {
        Ok(self
            .get_raw(Column::Meta, META_NEXT_CHECKPOINT)?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// A final checkpoint.
    pub fn checkpoint(&self, number: u64) -> Result<Option<FinalCheckpoint>, StoreError> {
        self.get(Column::Checkpoints, &number.to_be_bytes())
    }

    /// The hash of the last final checkpoint (zero before the first).
    pub fn last_checkpoint_hash(&self) -> Result<CheckpointHash, StoreError> {
        let next = self.next_checkpoint()?;
        if next == 0 {
            return Ok(CheckpointHash::ZERO);
        }
        Ok(self
            .checkpoint(next - 1)?
            .map_or(CheckpointHash::ZERO, |c| c.certified.checkpoint.hash()))
    }

    /// The checkpoint covering an event.
    pub fn checkpoint_of(&self, event: &EventHash) -> Result<Option<u64>, StoreError> {
        Ok(self
            .get_raw(Column::CheckpointOf, &event.0)?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Up to `limit` certified events not yet in a checkpoint, the earliest certified here
    /// first.
    pub fn uncheckpointed(&self, limit: usize) -> Vec<EventHash> {
        self.pending()
            .by_pos
            .values()
            .take(limit)
            .copied()
            .collect()
    }

    /// How many certified events are not yet in a checkpoint.
    pub fn uncheckpointed_count(&self) -> u64 {
        self.pending().by_pos.len() as u64
    }

    /// Whether an event is certified here and not yet checkpointed.
    pub fn is_uncheckpointed(&self, event: &EventHash) -> bool {
        self.pending().pos.contains_key(event)
    }

    /// Stores the next final checkpoint, marking its events, atomically.
    pub fn put_checkpoint(&self, f: &FinalCheckpoint) -> Result<(), StoreError> {
        let n = f.certified.checkpoint.number;
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(Column::Checkpoints), n.to_be_bytes(), encode(f));
        let mut pending = self.pending();
        // The log positions of the events it covers that were waiting for it.
        let covered: HashSet<u64> = f
            .events
            .iter()
            .filter_map(|e| pending.pos.get(e).copied())
            .collect();
        // In key order: the column's memtable is a skip list, and the keys of one write batch are
        // each inserted from where the one before went (a splice), so that keys in order are
        // found near it rather than from the top of the list (random keys cost 1.25 % of the
        // machine at the max rate, profile of the eighth session of 2026-12-07).
        let mut keys: Vec<&[u8; 32]> = f.events.iter().map(|e| &e.0).collect();
        keys.sort_unstable();
        for k in keys {
            b.put_cf(self.cf(Column::CheckpointOf), k, n.to_be_bytes());
        }
        b.put_cf(
            self.cf(Column::Meta),
            META_NEXT_CHECKPOINT,
            (n + 1).to_be_bytes(),
        );
        // The events it covers that are not certified here (or were already covered).
        let ahead = self
            .ahead
            .load(Ordering::Relaxed)
            .saturating_add(f.events.len() as u64 - covered.len() as u64);
        b.put_cf(self.cf(Column::Meta), META_AHEAD, ahead.to_be_bytes());
        // Every event before the first one still waiting is covered now.
        let from = pending
            .by_pos
            .keys()
            .find(|p| !covered.contains(p))
            .copied()
            .unwrap_or_else(|| self.log_len());
        b.put_cf(
            self.cf(Column::Meta),
            META_UNCHECKPOINTED_FROM,
            from.to_be_bytes(),
        );
        self.db.write(b)?;
        for p in covered {
            pending.remove(p);
        }
        self.ahead.store(ahead, Ordering::Relaxed);
        Ok(())
    }

    /// A checkpoint's recorded anchor.
    pub fn anchor(&self, number: u64) -> Result<Option<AnchorRecord>, StoreError> {
        self.get(Column::Anchors, &number.to_be_bytes())
    }

    /// Records (or replaces) a checkpoint's anchor.
    pub fn put_anchor(&self, number: u64, r: &AnchorRecord) -> Result<(), StoreError> {
        self.db
            .put_cf(self.cf(Column::Anchors), number.to_be_bytes(), encode(r))?;
        self.flush_wal()
    }

    /// Forgets a checkpoint's anchor (its block was reorganised away).
    pub fn delete_anchor(&self, number: u64) -> Result<(), StoreError> {
        self.db
            .delete_cf(self.cf(Column::Anchors), number.to_be_bytes())?;
        self.flush_wal()
    }

    /// Writes the unsynced writes buffered so far to the WAL file (see `Store::open`); the
    /// event loop calls it once per iteration.
    pub fn flush_wal(&self) -> Result<(), StoreError> {
        self.db.flush_wal(false)?;
        Ok(())
    }

    /// The wallet's stored change set.
    pub fn wallet_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_raw(Column::Wallet, WALLET_KEY)
    }

    /// Replaces the wallet's change set (synced write: it holds spent and revealed state).
    pub fn put_wallet_state(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(self.cf(Column::Wallet), WALLET_KEY, bytes, &wo)?;
        Ok(())
    }

    /// Bytes of the table (SST) files of every column, for metrics. (The property without a
    /// column family is that of the default one, which the store does not use: it read 0.)
    pub fn size_on_disk(&self) -> u64 {
        Column::ALL
            .iter()
            .filter_map(|&c| {
                self.db
                    .property_int_value_cf(self.cf(c), rocksdb::properties::TOTAL_SST_FILES_SIZE)
                    .ok()
                    .flatten()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hallmark_protocol::checkpoint::{CertifiedCheckpoint, Checkpoint};
    use hallmark_protocol::consensus::OwnVotes;
    use hallmark_protocol::testkit::{body, certify, federation, key};
    use hallmark_protocol::{Certificate, EventKind, Federation};

    /// The certified registration of manufacturer key `i`, and its record.
    fn registration(f: &Federation, i: u32) -> (CertifiedEvent, ManufacturerRecord) {
        let m = key(i);
        let ev = body(
            f,
            &m,
            0,
            EventHash::ZERO,
            EventKind::RegisterManufacturer { name: "A".into() },
        )
        .sign(&m)
        .unwrap();
        let ce = certify(f, ev);
        let rec = ManufacturerRecord::from_event(&ce.event, ce.certificate.event).unwrap();
        (ce, rec)
    }

    /// Applies the certified registration of manufacturer key `i`; returns its hash.
    pub(super) fn register(s: &Store, f: &Federation, i: u32) -> EventHash {
        let (ce, rec) = registration(f, i);
        let hash = ce.certificate.event;
        let rank = ce.certificate.rank(f);
        s.apply(
            &ce.event.subject(hash),
            &ce,
            &StateChange::Manufacturer(rec),
            rank,
            &[],
        )
        .unwrap();
        hash
    }

    /// Checkpoint `number` over `events`, as final (its certificate is not checked here).
    fn final_checkpoint(
        f: &Federation,
        number: u64,
        mut events: Vec<EventHash>,
    ) -> FinalCheckpoint {
        let (checkpoint, _) =
            Checkpoint::build(f.id(), number, CheckpointHash::ZERO, &mut events).unwrap();
        let certificate = Certificate {
            event: checkpoint.vote_target(),
            round: 0,
            phase: hallmark_protocol::Phase::Commit,
            attestations: Vec::new(),
        };
        FinalCheckpoint {
            certified: CertifiedCheckpoint {
                checkpoint,
                certificate,
            },
            events,
        }
    }

    #[test]
    fn apply_is_atomic_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        let (ce, rec) = registration(&f, 1);
        let hash = ce.certificate.event;
        let subject = ce.event.subject(hash);
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(
                s.apply(
                    &subject,
                    &ce,
                    &StateChange::Manufacturer(rec.clone()),
                    ce.certificate.rank(&f),
                    &[],
                )
                .unwrap(),
                0
            );
            // (At the next height: the votes at a decided slot are not kept.)
            let mut v = OwnVotes::default();
            v.prevotes.push((0, hash));
            s.put_own_votes([(&subject, 1, &v)]).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.log_len(), 1);
        assert_eq!(s.certified(&hash).unwrap(), Some(ce.clone()));
        assert_eq!(s.chain(&subject).unwrap(), vec![ce.clone()]);
        assert_eq!(s.manufacturer(&rec.id).unwrap(), Some(rec));
        assert_eq!(s.next_height(&subject).unwrap(), 1);
        assert_eq!(s.take_own_votes(&subject, 1).prevotes, vec![(0, hash)]);
        assert_eq!(s.log_range(0, 10).unwrap().len(), 1);
        // The rank comes from the certificate once the store is reopened (nothing in memory).
        assert!(!s.recently_certified(&hash));
        let entries = s.log_entries(0, 10, &f).unwrap();
        assert_eq!(
            entries,
            vec![LogEntry::ranked(hash, &ce.certificate.rank(&f))]
        );
        assert_eq!(s.log_entries(1, 10, &f).unwrap().len(), 0);
        assert_eq!(s.uncheckpointed_count(), 1);
        assert_eq!(s.uncheckpointed(10), vec![hash]);
        // A peer's entries compared with the stored certificate.
        assert_eq!(
            s.compare_ranks(&entries, &f).unwrap(),
            vec![Some(std::cmp::Ordering::Equal)]
        );
    }

    /// The size metric counts the table files of every column (the events' among them).
    #[test]
    fn size_on_disk_counts_the_tables_of_every_column() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.size_on_disk(), 0);
        for i in 1..=20 {
            register(&s, &f, i);
        }
        s.db.flush_cf(s.cf(Column::Events)).unwrap();
        let events =
            s.db.property_int_value_cf(
                s.cf(Column::Events),
                rocksdb::properties::TOTAL_SST_FILES_SIZE,
            )
            .unwrap()
            .unwrap();
        assert!(events > 0);
        assert_eq!(s.size_on_disk(), events);
        s.db.flush_cf(s.cf(Column::Log)).unwrap();
        assert!(s.size_on_disk() > events);
    }

    /// Catch-up compares each peer entry with the rank held here: from memory (one lock for
    /// all) for recent events, from the stored certificate for older ones, `None` for events not
    /// certified here.
    #[test]
    fn compare_ranks_orders_peer_entries_against_the_certificates_held() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        let s = Store::open(dir.path()).unwrap();
        let recent = register(&s, &f, 1);
        let held = s.log_entries(0, 1, &f).unwrap().remove(0);
        let worse = LogEntry {
            round: held.round + 1,
            ..held.clone()
        };
        let better = LogEntry {
            round: 0,
            phase: hallmark_protocol::Phase::Prevote,
            signers: vec![0],
            ..held
        };
        assert!(better.rank() < held.rank());
        let unknown = LogEntry {
            event: EventHash([9; 32]),
            ..held.clone()
        };
        use std::cmp::Ordering::*;
        let expected = vec![Some(Equal), Some(Greater), Some(Less), None];
        let entries = [held, worse, better, unknown];
        assert!(s.recently_certified(&recent));
        assert_eq!(s.compare_ranks(&entries, &f).unwrap(), expected);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.recently_certified(&recent));
        assert_eq!(s.compare_ranks(&entries, &f).unwrap(), expected);
    }

    #[test]
    fn the_count_of_uncheckpointed_events_follows_checkpoints_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        let s = Store::open(dir.path()).unwrap();
        let apply = |s: &Store, ce: &CertifiedEvent, rec| {
            let hash = ce.certificate.event;
            s.apply(
                &ce.event.subject(hash),
                ce,
                &StateChange::Manufacturer(rec),
                ce.certificate.rank(&f),
                &[],
            )
            .unwrap();
            assert!(s.recently_certified(&hash));
            assert_eq!(s.rank(&hash, &f).unwrap(), Some(ce.certificate.rank(&f)));
        };
        let mut hashes = Vec::new();
        for i in 1..=3 {
            let (ce, rec) = registration(&f, i);
            apply(&s, &ce, rec);
            hashes.push(ce.certificate.event);
        }
        assert_eq!(s.uncheckpointed_count(), 3);
        // A checkpoint over two of them and an event this operator does not hold yet.
        let (late, late_rec) = registration(&f, 4);
        s.put_checkpoint(&final_checkpoint(
            &f,
            0,
            vec![hashes[0], hashes[2], late.certificate.event],
        ))
        .unwrap();
        assert_eq!(s.uncheckpointed_count(), 1);
        assert_eq!(s.uncheckpointed(10), vec![hashes[1]]);
        assert!(!s.is_uncheckpointed(&hashes[0]) && s.is_uncheckpointed(&hashes[1]));
        assert_eq!(s.ahead.load(Ordering::Relaxed), 1);
        // Opening looks for waiting events from the first one on (position 1).
        let mark = |s: &Store| s.get_raw(Column::Meta, META_UNCHECKPOINTED_FROM).unwrap();
        assert_eq!(mark(&s), Some(1u64.to_be_bytes().to_vec()));
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.uncheckpointed_count(), 1);
        assert_eq!(s.ahead.load(Ordering::Relaxed), 1);
        // Certified after the checkpoint that covers it: not waiting for another checkpoint.
        apply(&s, &late, late_rec);
        assert_eq!(s.uncheckpointed_count(), 1);
        assert_eq!(s.ahead.load(Ordering::Relaxed), 0);
        assert_eq!(s.checkpoint_of(&late.certificate.event).unwrap(), Some(0));
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!((s.uncheckpointed_count(), s.log_len()), (1, 4));
        assert_eq!(s.uncheckpointed(10), vec![hashes[1]]);
        assert_eq!(s.ahead.load(Ordering::Relaxed), 0);
        assert_eq!(mark(&s), Some(1u64.to_be_bytes().to_vec()));
        // A checkpoint of the last one: nothing waits, and the mark moves to the log's end.
        s.put_checkpoint(&final_checkpoint(&f, 1, vec![hashes[1]]))
            .unwrap();
        assert_eq!(s.uncheckpointed_count(), 0);
        assert_eq!(mark(&s), Some(4u64.to_be_bytes().to_vec()));
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!((s.uncheckpointed_count(), s.log_len()), (0, 4));
    }

    #[test]
    fn a_version_2_store_is_upgraded_finding_the_waiting_events_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        let mut hashes = Vec::new();
        {
            let mut s = Store::open(dir.path()).unwrap();
            for i in 1..=3 {
                hashes.push(register(&s, &f, i));
            }
            // As a version 2 build left it: the first event checkpointed, the others listed in
            // the column of their own, and no mark.
            s.db.put_cf(s.cf(Column::CheckpointOf), hashes[0].0, 0u64.to_be_bytes())
                .unwrap();
            let db = Arc::get_mut(&mut s.db).unwrap();
            db.create_cf(LEGACY_UNCHECKPOINTED, &Options::default())
                .unwrap();
            let legacy = db.cf_handle(LEGACY_UNCHECKPOINTED).unwrap();
            for h in &hashes[1..] {
                db.put_cf(legacy, h.0, []).unwrap();
            }
            s.db.delete_cf(s.cf(Column::Meta), META_UNCHECKPOINTED_FROM)
                .unwrap();
            s.db.put_cf(s.cf(Column::Meta), META_SCHEMA, 2u32.to_be_bytes())
                .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.uncheckpointed(10), hashes[1..].to_vec());
        // The mark starts at the first waiting event (position 1), not at the log's start.
        let mark = s.get_raw(Column::Meta, META_UNCHECKPOINTED_FROM).unwrap();
        assert_eq!(mark, Some(1u64.to_be_bytes().to_vec()));
        let version = s.get_raw(Column::Meta, META_SCHEMA).unwrap().unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_be_bytes());
        drop(s);
        let names = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(
            !names.iter().any(|n| n == LEGACY_UNCHECKPOINTED),
            "{names:?}"
        );
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.uncheckpointed(10), hashes[1..].to_vec());
        assert_eq!(s.log_len(), 3);
    }

    #[test]
    fn a_version_1_store_is_upgraded_counting_checkpointed_events_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        {
            let s = Store::open(dir.path()).unwrap();
            let hash = register(&s, &f, 1);
            // As an older build left it: two events covered by a checkpoint, one certified.
            let cf = s.cf(Column::CheckpointOf);
            s.db.put_cf(cf, hash.0, 0u64.to_be_bytes()).unwrap();
            s.db.put_cf(cf, [7; 32], 0u64.to_be_bytes()).unwrap();
            s.db.delete_cf(s.cf(Column::Meta), META_AHEAD).unwrap();
            s.db.put_cf(s.cf(Column::Meta), META_SCHEMA, 1u32.to_be_bytes())
                .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.ahead.load(Ordering::Relaxed), 1);
        assert_eq!(s.log_len(), 1);
        let version = s.get_raw(Column::Meta, META_SCHEMA).unwrap().unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_be_bytes());
        drop(s);
        assert_eq!(
            Store::open(dir.path())
                .unwrap()
                .ahead
                .load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn refuses_another_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.db.put_cf(s.cf(Column::Meta), META_SCHEMA, 99u32.to_be_bytes())
                .unwrap();
        }
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Schema { found: 99 })
        ));
    }
}
