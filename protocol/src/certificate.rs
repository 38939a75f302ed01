//! Votes and quorum certificates.
//!
//! Voting on an event is two-phase (as in Tendermint, per (subject, height)): operators first
//! *prevote* for an event; an operator that sees `m` prevotes for an event in a round *commits*
//! to it (and is then locked on it); `m` commit votes form the [`Certificate`]. The second phase
//! is what makes it safe to vote again in a later round when an (item, height) is stuck because
//! the votes split between conflicting events (see `docs/consensus.md`).
//!
//! An operator does not sign votes one by one: it signs the Merkle root of a *batch* of votes,
//! `tagged_hash(VOTE_BATCH, federation || root)`, where each leaf is
//! `tagged_hash(VOTE_LEAF, event_hash || round || phase)`. One ECDSA signature thus covers any
//! number of votes; a single vote is a batch of one (its root is its leaf, its path is empty).
//!
//! A [`Certificate`] for an event holds, from at least `m` distinct operators, that operator's
//! batch signature and the path from the event's commit leaf to the batch root. Operators batch
//! independently, so each attestation carries its own path. A *fast* certificate holds instead
//! the round-0 prevotes of all `n` operators: when every operator prevoted the
//! same event first, no other event can ever be certified at its height (`docs/consensus.md`),
//! and the commit phase is not waited for.

use serde::{Deserialize, Serialize};

use crate::federation::Federation;
use crate::hash::{tagged_hash, tags};
use crate::ids::{EventHash, FederationId, MerkleRoot, OperatorId};
use crate::keys::{Signature, SigningKey};
use crate::merkle::{InclusionProof, MerkleError, Tree};

/// Most votes one batch may carry.
pub const MAX_BATCH_VOTES: usize = 8192;

/// The two phases of a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// First phase: "this event is valid and the first I saw at its height in this round".
    Prevote,
    /// Second phase, after `m` prevotes: "I commit to this event". `m` of these certify it.
    Commit,
}

impl Phase {
    fn commit() -> Self {
        Self::Commit
    }

    fn byte(self) -> u8 {
        match self {
            Self::Prevote => 0,
            Self::Commit => 1,
        }
    }
}

/// One operator's vote for one event in one round and phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vote {
    /// The event voted for.
    pub event: EventHash,
    /// The voting round at the event's (subject, height); 0 unless that height got stuck.
    pub round: u32,
    /// Prevote or commit.
    pub phase: Phase,
}

impl Vote {
    /// A commit vote: what certificates are made of.
    pub fn commit(event: EventHash, round: u32) -> Self {
        Self {
            event,
            round,
            phase: Phase::Commit,
        }
    }

    /// A prevote.
    pub fn prevote(event: EventHash, round: u32) -> Self {
        Self {
            event,
            round,
            phase: Phase::Prevote,
        }
    }

    /// The Merkle leaf of this vote.
    pub fn leaf(&self) -> [u8; 32] {
        tagged_hash(
            tags::VOTE_LEAF,
            &[
                &self.event.0,
                &self.round.to_be_bytes(),
                &[self.phase.byte()],
            ],
        )
    }
}

/// The digest an operator signs for a batch with this root.
pub fn batch_digest(federation: FederationId, root: &MerkleRoot) -> [u8; 32] {
    tagged_hash(tags::VOTE_BATCH, &[&federation.0, &root.0])
}

/// A signed batch of votes, as operators gossip them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchVote {
    /// The signer.
    pub operator: OperatorId,
    /// The votes, in leaf order.
    pub votes: Vec<Vote>,
    /// Signature of [`batch_digest`] of the votes' Merkle root.
    pub signature: Signature,
}

/// A batch whose signature has been checked, with its tree built, ready to hand out
/// attestations.
pub struct VerifiedBatch {
    operator: OperatorId,
    votes: Vec<Vote>,
    tree: Tree,
    signature: Signature,
}

impl BatchVote {
    /// Signs `votes` as operator `key` of federation `federation`.
    pub fn sign(
        key: &SigningKey,
        federation: FederationId,
        votes: Vec<Vote>,
    ) -> Result<VerifiedBatch, CertificateError> {
        let tree = build_tree(&votes)?;
        let signature = key.sign(&batch_digest(federation, &tree.root()));
        Ok(VerifiedBatch {
            operator: OperatorId::of(&key.public_key()),
            votes,
            tree,
            signature,
        })
    }

    /// Checks the batch: its signer is a member and signed this batch's root.
    pub fn verify(self, federation: &Federation) -> Result<VerifiedBatch, CertificateError> {
        let index = federation
            .operator_index(&self.operator)
            .ok_or(CertificateError::NotAMember(self.operator))?;
        let tree = build_tree(&self.votes)?;
        let key = federation
            .operator(index)
            .expect("operator_index returns valid indices")
            .key;
        key.verify(
            &batch_digest(federation.id(), &tree.root()),
            &self.signature,
        )
        .map_err(|_| CertificateError::BadSignature(self.operator))?;
        Ok(VerifiedBatch {
            operator: self.operator,
            votes: self.votes,
            tree,
            signature: self.signature,
        })
    }

    /// The batch with its tree built, its signature *not* checked: for a batch read back from
    /// the operator's own store, where it was put after [`BatchVote::verify`] or
    /// [`BatchVote::sign`]. Attestations it hands out are as good as the store they came from.
    pub fn trusted(self) -> Result<VerifiedBatch, CertificateError> {
        let tree = build_tree(&self.votes)?;
        Ok(VerifiedBatch {
            operator: self.operator,
            votes: self.votes,
            tree,
            signature: self.signature,
        })
    }
}

fn build_tree(votes: &[Vote]) -> Result<Tree, CertificateError> {
    if votes.is_empty() || votes.len() > MAX_BATCH_VOTES {
        return Err(CertificateError::BadBatchSize(votes.len()));
    }
    let leaves: Vec<[u8; 32]> = votes.iter().map(Vote::leaf).collect();
    Tree::new(&leaves).map_err(|_| CertificateError::BadBatchSize(votes.len()))
}

impl VerifiedBatch {
    /// The signer.
    pub fn operator(&self) -> OperatorId {
        self.operator
    }

    /// The votes.
    pub fn votes(&self) -> &[Vote] {
        &self.votes
    }

    /// The Merkle root of the votes (what the signature is over, with the federation).
    pub fn root(&self) -> MerkleRoot {
        self.tree.root()
    }

    /// The batch signature.
    pub fn signature(&self) -> Signature {
        self.signature
    }

    /// The attestation for vote `index`, with its path in canonical form (the only one
    /// [`Attestation::verify`] accepts).
    pub fn attestation(&self, index: usize) -> Option<Attestation> {
        Some(Attestation {
            operator: self.operator,
            path: self
                .tree
                .proof(u32::try_from(index).ok()?)?
                .into_canonical(),
            signature: self.signature,
        })
    }

    /// The batch in its gossip form.
    pub fn to_batch_vote(&self) -> BatchVote {
        BatchVote {
            operator: self.operator,
            votes: self.votes.clone(),
            signature: self.signature,
        }
    }
}

/// One operator's signed statement that it voted for an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The signer.
    pub operator: OperatorId,
    /// Path from the vote's leaf to the signed batch root.
    pub path: InclusionProof,
    /// The batch signature.
    pub signature: Signature,
}

impl Attestation {
    /// Checks this attestation for `vote` against the federation; returns the signer's index.
    pub fn verify(&self, federation: &Federation, vote: &Vote) -> Result<usize, CertificateError> {
        let index = federation
            .operator_index(&self.operator)
            .ok_or(CertificateError::NotAMember(self.operator))?;
        let root = self
            .path
            .root(&vote.leaf())
            .map_err(|e| CertificateError::BadPath(self.operator, e))?;
        // The batch's size is not signed: only the canonical path is accepted, so nobody can
        // re-encode a valid certificate (`Certificate::assemble` writes canonical paths).
        let canonical = self.path.canonical_total();
        if canonical != self.path.total {
            let e = MerkleError::NotCanonical {
                index: self.path.index,
                total: self.path.total,
                canonical,
            };
            return Err(CertificateError::BadPath(self.operator, e));
        }
        let key = federation
            .operator(index)
            .expect("operator_index returns valid indices")
            .key;
        key.verify(&batch_digest(federation.id(), &root), &self.signature)
            .map_err(|_| CertificateError::BadSignature(self.operator))?;
        Ok(index)
    }
}

/// Where a certificate stands among the valid certificates of its event ([`Certificate::rank`]):
/// its round, then its phase (fast, on prevotes, first), then its signers' operator indices
/// ascending; smaller is preferred.
pub type Rank = (u32, Phase, Vec<usize>);

/// Proof that the federation certified an event: `m` commit votes, or (fast) the round-0
/// prevotes of all `n` operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The event.
    pub event: EventHash,
    /// The round it was certified in (0 for a fast certificate).
    pub round: u32,
    /// The phase of the votes it holds: [`Phase::Commit`] (`m` commits, the slow path) or
    /// [`Phase::Prevote`] (fast: round-0 prevotes of every operator). Commit where absent
    /// (self-describing formats such as JSON: certificates from before fast ones).
    #[serde(default = "Phase::commit")]
    pub phase: Phase,
    /// The attestations of distinct members, ordered by operator index: `m` commits, or `n`
    /// prevotes.
    pub attestations: Vec<Attestation>,
}

impl Certificate {
    /// Builds a certificate from attestations of `vote` (already verified by the caller): a
    /// commit vote, of which it keeps the `m` of lowest operator index, or a round-0 prevote,
    /// of which it needs all `n` (a fast certificate); each with its canonical path
    /// ([`InclusionProof::canonical`]), so that every operator that holds the same attestations
    /// builds byte-identical certificates.
    pub fn assemble(
        federation: &Federation,
        vote: Vote,
        attestations: impl IntoIterator<Item = Attestation>,
    ) -> Result<Self, CertificateError> {
        let mut by_index: Vec<(usize, Attestation)> = attestations
            .into_iter()
            .filter_map(|a| federation.operator_index(&a.operator).map(|i| (i, a)))
            .collect();
        by_index.sort_by_key(|(i, _)| *i);
        by_index.dedup_by_key(|(i, _)| *i);
        let need = Self::needs(federation, vote)?;
        if by_index.len() < need {
            return Err(CertificateError::TooFewSignatures {
                have: by_index.len(),
                need,
            });
        }
        Ok(Self {
            event: vote.event,
            round: vote.round,
            phase: vote.phase,
            attestations: by_index
                .into_iter()
                .take(need)
                .map(|(_, a)| Attestation {
                    path: a.path.into_canonical(),
                    ..a
                })
                .collect(),
        })
    }

    /// How many attestations of `vote` a certificate needs: `m` commits, or the round-0
    /// prevotes of all `n` operators. (Fast certificates need `n >= 3f + 1`, which every valid
    /// federation has: `f <= n - m` and `2f <= m - 1` add up to it.)
    fn needs(federation: &Federation, vote: Vote) -> Result<usize, CertificateError> {
        let quorum = federation.quorum();
        match (vote.phase, vote.round) {
            (Phase::Commit, _) => Ok(quorum.m() as usize),
            (Phase::Prevote, 0) => Ok(quorum.n() as usize),
            (Phase::Prevote, _) => Err(CertificateError::NotFast),
        }
    }

    /// The vote whose attestations this certificate holds.
    pub fn vote(&self) -> Vote {
        Vote {
            event: self.event,
            round: self.round,
            phase: self.phase,
        }
    }

    /// This certificate with `extra` attestations of the same vote (already verified by the
    /// caller) merged in, reassembled in canonical form ([`Certificate::assemble`]); itself
    /// unchanged if they do not assemble.
    pub fn merged_with(
        &self,
        federation: &Federation,
        extra: impl IntoIterator<Item = Attestation>,
    ) -> Certificate {
        let all = self.attestations.iter().cloned().chain(extra);
        Self::assemble(federation, self.vote(), all).unwrap_or_else(|_| self.clone())
    }

    /// Orders the valid certificates of one event so that operators settle on the same one:
    /// the lowest round first, then fast before commit certificates (every operator that saw
    /// all round-0 prevotes holds the same fast one, and the others get it at catch-up), then
    /// the lowest operator indices (smaller is preferred).
    pub fn rank(&self, federation: &Federation) -> Rank {
        let indices = self
            .attestations
            .iter()
            .map(|a| federation.operator_index(&a.operator).unwrap_or(usize::MAX))
            .collect();
        (self.round, self.phase, indices)
    }

    /// Verifies the certificate: every attestation a vote of its phase from a distinct member
    /// with a valid path and signature, and at least `m` of them (commits) or all `n` (round-0
    /// prevotes). Any bad attestation rejects the whole
    /// certificate.
    pub fn verify(&self, federation: &Federation) -> Result<(), CertificateError> {
        let vote = self.vote();
        let need = Self::needs(federation, vote)?;
        let mut seen = vec![false; federation.operator_ids().len()];
        for a in &self.attestations {
            let index = federation
                .operator_index(&a.operator)
                .ok_or(CertificateError::NotAMember(a.operator))?;
            if std::mem::replace(&mut seen[index], true) {
                return Err(CertificateError::DuplicateSigner(a.operator));
            }
            a.verify(federation, &vote)?;
        }
        if self.attestations.len() < need {
            return Err(CertificateError::TooFewSignatures {
                have: self.attestations.len(),
                need,
            });
        }
        Ok(())
    }

    /// Operator indices of the signers, in the certificate's order.
    pub fn signer_indices(&self, federation: &Federation) -> Vec<Option<usize>> {
        self.attestations
            .iter()
            .map(|a| federation.operator_index(&a.operator))
            .collect()
    }
}

/// Why a vote batch, attestation or certificate is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Signer not in the federation.
    #[error("operator {0} is not a member of the federation")]
    NotAMember(OperatorId),
    /// One operator counted twice.
    #[error("operator {0} signed more than once")]
    DuplicateSigner(OperatorId),
    /// Signature does not verify.
    #[error("bad signature from operator {0}")]
    BadSignature(OperatorId),
    /// Malformed path to the batch root.
    #[error("bad batch path from operator {0}: {1}")]
    BadPath(OperatorId, MerkleError),
    /// Below the threshold.
    #[error("{have} signatures, the quorum needs {need}")]
    TooFewSignatures {
        /// Valid distinct signatures.
        have: usize,
        /// Threshold.
        need: usize,
    },
    /// Empty or oversized batch.
    #[error("a vote batch needs 1..={MAX_BATCH_VOTES} votes, not {0}")]
    BadBatchSize(usize),
    /// A certificate of prevotes from a later round than 0.
    #[error("only round-0 prevotes make a (fast) certificate")]
    NotFast,
}

impl CertificateError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAMember(_) => "not_a_member",
            Self::DuplicateSigner(_) => "duplicate_signer",
            Self::BadSignature(_) => "bad_operator_signature",
            Self::BadPath(..) => "bad_batch_path",
            Self::TooFewSignatures { .. } => "too_few_signatures",
            Self::BadBatchSize(_) => "bad_batch_size",
            Self::NotFast => "not_fast",
        }
    }
}
