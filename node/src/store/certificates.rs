//! Certificates as the store keeps them.
//!
//! A certificate holds, per attestation, the signer's batch signature and the Merkle path from
//! its commit vote to the batch root: some 260 bytes each, 800 for a 3-of-4 certificate, half of
//! what an operator wrote per certified event. Every operator signs one batch per flush for all
//! the events it votes on, so the events certified together share their batches: a certificate
//! the event loop assembled from batches it holds is stored by reference ([`BatchedCertificate`],
//! some 110 bytes), each batch once in [`Column::Batches`] (the votes and the signature, some 40
//! bytes per vote), and the paths are rebuilt when it is read. A certificate whose batches the
//! loop does not hold (gossiped, caught up, or from a batch it no longer keeps) is stored whole
//! in [`Column::Certificates`].
//!
//! A batch is stored under its root and its signer's operator index: operators that vote alike
//! sign batches with the same votes, hence the same root (a batch of one commit vote, say).
//!
//! A batch is written in the same write batch as the first certificate that refers to it, and
//! the WAL keeps writes in order, so a certificate that survives a crash finds its batches.

use std::sync::Arc;

use foldhash::HashMap;
use hallmark_protocol::{
    BatchVote, Certificate, DecodeError, EventHash, Federation, MerkleRoot, Phase, Rank,
    VerifiedBatch,
};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::{Column, Store, StoreError};
use crate::metrics;
use hallmark_protocol::encode;

/// A certificate by reference: its round, its phase and, per attestation in operator order, the
/// signer's operator index, the root of the batch that holds its vote and the vote's position
/// there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct BatchedCertificate {
    round: u32,
    phase: Phase,
    attestations: Vec<(u32, MerkleRoot, u32)>,
}

impl BatchedCertificate {
    /// [`Certificate::rank`], without reading the batches.
    pub(super) fn rank(&self) -> Rank {
        let signers = self.attestations.iter().map(|a| a.0 as usize).collect();
        (self.round, self.phase, signers)
    }
}

/// The vote batches read for one request, each decoded and its tree built once (the events of
/// a log range share their batches).
#[derive(Default)]
pub struct BatchCache(HashMap<BatchKey, VerifiedBatch>);

/// Where a batch is stored: its root, then its signer's operator index.
pub(super) type BatchKey = [u8; 36];

fn batch_key(root: &MerkleRoot, signer: u32) -> BatchKey {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(&root.0);
    k[32..].copy_from_slice(&signer.to_be_bytes());
    k
}

fn corrupt(column: Column, why: &str) -> StoreError {
    StoreError::Corrupt {
        column: column.name(),
        error: DecodeError::Malformed(why.into()),
    }
}

impl Store {
    /// Adds `cert` (of rank `rank`) to `b`: by reference when `batches` (aligned with its
    /// attestations) holds the batch of each, with the batches not written yet; else whole.
    /// `replacing`: an earlier certificate of the event is stored, and deleted if of the other
    /// form (or of a form not remembered). Returns whether it is stored by reference, and the
    /// keys of the batches added, to be marked written once `b` is.
    pub(super) fn stage_certificate(
        &self,
        b: &mut WriteBatch,
        cert: &Certificate,
        rank: &Rank,
        batches: &[Option<Arc<VerifiedBatch>>],
        replacing: bool,
    ) -> (bool, Vec<BatchKey>) {
        let key = cert.event.0;
        // The form of the certificate replaced, if remembered: only the other one is deleted.
        let before = replacing
            .then(|| {
                self.recent_ranks()
                    .get(&cert.event)
                    .map(|(_, batched)| *batched)
            })
            .flatten();
        let vote = cert.vote();
        let refs: Option<Vec<(u32, MerkleRoot, u32)>> = (batches.len() == cert.attestations.len())
            .then(|| {
                cert.attestations
                    .iter()
                    .zip(batches)
                    .zip(&rank.2)
                    .map(|((a, batch), &signer)| {
                        let batch = batch.as_ref()?;
                        // The batch the loop handed over is the one signed for this vote.
                        let holds = batch.operator() == a.operator
                            && batch.signature() == a.signature
                            && batch.votes().get(a.path.index as usize) == Some(&vote);
                        holds.then(|| (signer as u32, batch.root(), a.path.index))
                    })
                    .collect()
            })
            .flatten();
        let cause = if replacing { "improved" } else { "certified" };
        let Some(attestations) = refs else {
            metrics::CERTIFICATES_STORED
                .with_label_values(&["whole", cause])
                .inc();
            b.put_cf(self.cf(Column::Certificates), key, encode(cert));
            if replacing && before != Some(false) {
                b.delete_cf(self.cf(Column::CertificateRefs), key);
            }
            return (false, Vec::new());
        };
        metrics::CERTIFICATES_STORED
            .with_label_values(&["batched", cause])
            .inc();
        let mut added = Vec::new();
        {
            let written = self.written_batches();
            // (`refs` needs every attestation's batch, so none is skipped and the two align.)
            for (batch, (signer, root, _)) in batches.iter().flatten().zip(&attestations) {
                let k = batch_key(root, *signer);
                if !written.contains_key(&k) && !added.contains(&k) {
                    b.put_cf(self.cf(Column::Batches), k, encode(&batch.to_batch_vote()));
                    added.push(k);
                }
            }
        }
        let stored = BatchedCertificate {
            round: cert.round,
            phase: cert.phase,
            attestations,
        };
        b.put_cf(self.cf(Column::CertificateRefs), key, encode(&stored));
        if replacing && before != Some(true) {
            b.delete_cf(self.cf(Column::Certificates), key);
        }
        (true, added)
    }

    /// Marks batches as written (after the write that added them succeeded).
    pub(super) fn mark_written(&self, keys: Vec<BatchKey>) {
        let mut written = self.written_batches();
        for k in keys {
            written.insert(k, ());
        }
    }

    /// The certificate of a certified event, rebuilt from its batches if stored by reference.
    pub(super) fn read_certificate(
        &self,
        hash: &EventHash,
        cache: &mut BatchCache,
    ) -> Result<Option<Certificate>, StoreError> {
        let Some(stored) = self.get::<BatchedCertificate>(Column::CertificateRefs, &hash.0)? else {
            return self.get(Column::Certificates, &hash.0);
        };
        let mut attestations = Vec::with_capacity(stored.attestations.len());
        for (signer, root, index) in stored.attestations {
            let k = batch_key(&root, signer);
            let batch = match cache.0.entry(k) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let batch: BatchVote = self.get(Column::Batches, &k)?.ok_or_else(|| {
                        corrupt(Column::Batches, "a certificate's batch is missing")
                    })?;
                    let batch = batch
                        .trusted()
                        .map_err(|e| corrupt(Column::Batches, &e.to_string()))?;
                    if batch.root() != root {
                        return Err(corrupt(Column::Batches, "batch under another root"));
                    }
                    e.insert(batch)
                }
            };
            let a = batch
                .attestation(index as usize)
                .ok_or_else(|| corrupt(Column::CertificateRefs, "vote index beyond its batch"))?;
            // (Canonical already: `VerifiedBatch::attestation` builds it so.)
            attestations.push(a);
        }
        Ok(Some(Certificate {
            event: *hash,
            round: stored.round,
            phase: stored.phase,
            attestations,
        }))
    }

    /// The rank of the stored certificate of `hash`, if any (without rebuilding it).
    pub(super) fn stored_rank(
        &self,
        hash: &EventHash,
        federation: &Federation,
    ) -> Result<Option<Rank>, StoreError> {
        if let Some(c) = self.get::<BatchedCertificate>(Column::CertificateRefs, &hash.0)? {
            return Ok(Some(c.rank()));
        }
        Ok(self
            .get::<Certificate>(Column::Certificates, &hash.0)?
            .map(|c| c.rank(federation)))
    }

    /// Whether a certificate of `hash` is stored, in either form.
    pub fn has_certificate(&self, hash: &EventHash) -> Result<bool, StoreError> {
        Ok(self.get_raw(Column::CertificateRefs, &hash.0)?.is_some()
            || self.get_raw(Column::Certificates, &hash.0)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateChange;
    use hallmark_protocol::testkit::{body, federation, key, operator_key};
    use hallmark_protocol::{
        CertifiedEvent, Event, EventKind, ManufacturerRecord, Phase, Subject, Vote,
    };

    /// A signed registration of manufacturer key `i`.
    fn registration(f: &Federation, i: u32) -> Event {
        let m = key(i);
        let kind = EventKind::RegisterManufacturer {
            name: format!("maker {i}"),
        };
        body(f, &m, 0, EventHash::ZERO, kind).sign(&m).unwrap()
    }

    /// A manufacturer registration certified by operators 0, 1 and 2 of `f`, each voting in a
    /// batch with `others` other votes; the batches with it.
    fn certified_in_batches(
        f: &Federation,
        i: u32,
        others: usize,
    ) -> (CertifiedEvent, Vec<Option<Arc<VerifiedBatch>>>) {
        let event = registration(f, 100 + i);
        let hash = event.hash();
        let vote = Vote::commit(hash, 0);
        let batches: Vec<Arc<VerifiedBatch>> = (0..3u32)
            .map(|op| {
                let mut votes: Vec<Vote> = (0..others)
                    .map(|n| Vote {
                        event: EventHash([n as u8 + op as u8; 32]),
                        round: 0,
                        phase: Phase::Prevote,
                    })
                    .collect();
                votes.insert((op as usize) % (others + 1), vote);
                Arc::new(BatchVote::sign(&operator_key(op), f.id(), votes).unwrap())
            })
            .collect();
        let atts = batches.iter().map(|b| {
            let i = b.votes().iter().position(|v| *v == vote).unwrap();
            b.attestation(i).unwrap()
        });
        let certificate = Certificate::assemble(f, vote, atts).unwrap();
        certificate.verify(f).unwrap();
        (
            CertifiedEvent { event, certificate },
            batches.into_iter().map(Some).collect(),
        )
    }

    fn apply(
        s: &Store,
        f: &Federation,
        ce: &CertifiedEvent,
        batches: &[Option<Arc<VerifiedBatch>>],
    ) {
        let hash = ce.certificate.event;
        let rec = ManufacturerRecord::from_event(&ce.event, hash).unwrap();
        s.apply(
            &Subject::Manufacturer(rec.id),
            ce,
            &StateChange::Manufacturer(rec),
            ce.certificate.rank(f),
            batches,
        )
        .unwrap();
    }

    #[test]
    fn certificates_stored_by_batch_read_back_identical_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        let (a, a_batches) = certified_in_batches(&f, 1, 20);
        let (b, _) = certified_in_batches(&f, 2, 5);
        {
            let s = Store::open(dir.path()).unwrap();
            apply(&s, &f, &a, &a_batches);
            // Without its batches: whole.
            apply(&s, &f, &b, &[]);
            let refs = s
                .get_raw(Column::CertificateRefs, &a.certificate.event.0)
                .unwrap()
                .unwrap();
            let whole = encode(&a.certificate);
            assert!(
                refs.len() * 5 < whole.len(),
                "{} bytes by reference, {} whole",
                refs.len(),
                whole.len()
            );
            assert!(s
                .get_raw(Column::Certificates, &a.certificate.event.0)
                .unwrap()
                .is_none());
            assert!(s
                .get_raw(Column::CertificateRefs, &b.certificate.event.0)
                .unwrap()
                .is_none());
        }
        let s = Store::open(dir.path()).unwrap();
        for ce in [&a, &b] {
            let hash = ce.certificate.event;
            assert!(!s.recently_certified(&hash));
            assert_eq!(s.certified(&hash).unwrap().as_ref(), Some(ce));
            assert_eq!(s.rank(&hash, &f).unwrap(), Some(ce.certificate.rank(&f)));
            assert!(s.has_certificate(&hash).unwrap());
            s.certified(&hash)
                .unwrap()
                .unwrap()
                .certificate
                .verify(&f)
                .unwrap();
        }
        assert_eq!(
            s.log_range(0, 10).unwrap(),
            vec![a, b],
            "a log range rebuilds them too"
        );
    }

    #[test]
    fn a_batch_shared_by_certificates_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        let s = Store::open(dir.path()).unwrap();
        // Two events voted on in the same three batches.
        let events: Vec<Event> = (1..=2).map(|i| registration(&f, 200 + i)).collect();
        let votes: Vec<Vote> = events.iter().map(|e| Vote::commit(e.hash(), 0)).collect();
        let batches: Vec<Option<Arc<VerifiedBatch>>> = (0..3)
            .map(|op| {
                Some(Arc::new(
                    BatchVote::sign(&operator_key(op), f.id(), votes.clone()).unwrap(),
                ))
            })
            .collect();
        let mut certified = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            let atts = batches.iter().flatten().map(|b| b.attestation(i).unwrap());
            let certificate = Certificate::assemble(&f, votes[i], atts).unwrap();
            let ce = CertifiedEvent { event, certificate };
            apply(&s, &f, &ce, &batches);
            certified.push(ce);
        }
        // Each operator's batch is stored, under its own key although all three have one root.
        let root = batches[0].as_ref().unwrap().root();
        for op in 0..3 {
            let stored: BatchVote = s
                .get(Column::Batches, &batch_key(&root, op))
                .unwrap()
                .unwrap();
            assert_eq!(
                stored.operator,
                batches[op as usize].as_ref().unwrap().operator()
            );
        }
        // Writing a certificate from them again adds no batch: only the reference.
        let mut b = WriteBatch::default();
        let cert = &certified[1].certificate;
        let (batched, added) = s.stage_certificate(&mut b, cert, &cert.rank(&f), &batches, true);
        assert!(batched && added.is_empty());
        assert_eq!(b.len(), 1);
        for ce in &certified {
            assert_eq!(
                s.certified(&ce.certificate.event).unwrap().as_ref(),
                Some(ce)
            );
        }
    }

    #[test]
    fn a_replaced_certificate_leaves_one_form() {
        let dir = tempfile::tempdir().unwrap();
        let f = federation(3, 4);
        let s = Store::open(dir.path()).unwrap();
        let (ce, batches) = certified_in_batches(&f, 3, 7);
        let hash = ce.certificate.event;
        apply(&s, &f, &ce, &batches);
        // Replaced by a whole certificate (its batches not given), then by reference again.
        let rank = ce.certificate.rank(&f);
        s.replace_certificate(&ce.certificate, rank.clone(), &[])
            .unwrap();
        assert!(s
            .get_raw(Column::CertificateRefs, &hash.0)
            .unwrap()
            .is_none());
        assert_eq!(
            s.certificate(&hash).unwrap().as_ref(),
            Some(&ce.certificate)
        );
        s.replace_certificate(&ce.certificate, rank, &batches)
            .unwrap();
        assert!(s.get_raw(Column::Certificates, &hash.0).unwrap().is_none());
        assert_eq!(
            s.certificate(&hash).unwrap().as_ref(),
            Some(&ce.certificate)
        );
    }
}
