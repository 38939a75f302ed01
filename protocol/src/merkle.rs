//! Merkle trees over Hallmark hashes: built and proven here (one pass over the leaves, paths
//! read off the kept levels), verified with rs_merkle — an independent implementation of the same
//! rule, so every proof this module writes is checked by code it does not share.
//!
//! Interior nodes are `tagged_hash(MERKLE_NODE, left || right)`; an odd last node is promoted
//! unchanged to the next level (rs_merkle's rule; Bitcoin instead duplicates it, so Bitcoin's own
//! transaction trees use `bitcoin::merkle_tree`). Leaves are already hashes of their own
//! domains, so no leaf can be mistaken for an interior node.

use rs_merkle::{Hasher, MerkleProof};
use serde::{Deserialize, Serialize};

use crate::hash::{tagged_hash, tags};
use crate::ids::MerkleRoot;

/// Most leaves in one tree (vote batches and checkpoints are far smaller).
pub const MAX_LEAVES: u32 = 1 << 24;

/// rs_merkle hasher with Hallmark's tagged interior nodes.
#[derive(Clone, Copy, Debug)]
pub struct NodeHasher;

impl Hasher for NodeHasher {
    type Hash = [u8; 32];

    fn hash(data: &[u8]) -> [u8; 32] {
        tagged_hash(tags::MERKLE_NODE, &[data])
    }
}

/// Which side a sibling is on, walking from a leaf up to the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Sibling on the left: parent = H(sibling || node).
    Left,
    /// Sibling on the right: parent = H(node || sibling).
    Right,
    /// No sibling (odd last node): promoted unchanged.
    Promote,
}

/// The shape of the path from leaf `index` of a `total`-leaf tree to the root.
/// `None` when `index >= total` or the tree is empty or too large.
pub fn path_shape(index: u32, total: u32) -> Option<Vec<Step>> {
    if total == 0 || index >= total || total > MAX_LEAVES {
        return None;
    }
    let (mut i, mut count) = (index, total);
    let mut steps = Vec::new();
    while count > 1 {
        steps.push(if i % 2 == 1 {
            Step::Left
        } else if i + 1 < count {
            Step::Right
        } else {
            Step::Promote
        });
        i /= 2;
        count = count.div_ceil(2);
    }
    Some(steps)
}

/// The proof that a leaf is at `index` of a tree of `total` leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// Position of the leaf.
    pub index: u32,
    /// Leaves in the tree.
    pub total: u32,
    /// Sibling hashes from the leaf up (promotions have none).
    pub siblings: Vec<MerkleRoot>,
}

impl InclusionProof {
    /// The root this proof leads to from `leaf`. Rejects malformed proofs (index out of range,
    /// too few or too many siblings) before handing the rest to rs_merkle.
    pub fn root(&self, leaf: &[u8; 32]) -> Result<MerkleRoot, MerkleError> {
        let shape = path_shape(self.index, self.total).ok_or(MerkleError::BadPosition {
            index: self.index,
            total: self.total,
        })?;
        let needed = shape.iter().filter(|s| **s != Step::Promote).count();
        if needed != self.siblings.len() {
            return Err(MerkleError::WrongSiblingCount {
                needed,
                got: self.siblings.len(),
            });
        }
        let proof = MerkleProof::<NodeHasher>::new(self.siblings.iter().map(|s| s.0).collect());
        proof
            .root(&[self.index as usize], &[*leaf], self.total as usize)
            .map(MerkleRoot)
            .map_err(|_| MerkleError::Unprovable)
    }

    /// The same proof with the smallest tree size that gives the leaf the same path (and so
    /// the same root). A proof's `total` is only pinned where something signed fixes it (a
    /// checkpoint's event count); where nothing does (a vote batch), trees of different sizes
    /// can share a path — leaf 2 of 5 leaves and of 7 — and this form makes such proofs
    /// byte-identical. Proofs without a valid shape are returned unchanged.
    pub fn canonical(&self) -> InclusionProof {
        self.clone().into_canonical()
    }

    /// [`InclusionProof::canonical`], in place (without copying the path).
    pub fn into_canonical(mut self) -> InclusionProof {
        self.total = self.canonical_total();
        self
    }

    /// The tree size of [`InclusionProof::canonical`], computed without building any path: the
    /// sizes with this proof's path are an interval, and this is its lower end.
    pub fn canonical_total(&self) -> u32 {
        let (index, total) = (self.index, self.total);
        if total == 0 || index >= total || total > MAX_LEAVES {
            return total;
        }
        // Trees with as many levels as this one: (2^(L-1), 2^L] leaves, and at least index + 1.
        // At level l (index i = index >> l, count = ceil(t / 2^l) nodes) a right sibling
        // (`Step::Right`, i even) needs count >= i + 2, i.e. t > (i + 1) * 2^l; a promotion
        // (i even, no right sibling) needs t <= (i + 1) * 2^l, which `total` already meets and
        // so does every smaller size; a left sibling (i odd) holds for any size. So the smallest
        // size with this path is the largest of these lower bounds.
        let levels = u32::BITS - (total - 1).leading_zeros();
        let mut least = if levels == 0 {
            1
        } else {
            (1u32 << (levels - 1)) + 1
        }
        .max(index + 1);
        let (mut i, mut count) = (index, total);
        let mut level = 0;
        while count > 1 {
            if i % 2 == 0 && i + 1 < count {
                least = least.max(((i + 1) << level) + 1);
            }
            i /= 2;
            count = count.div_ceil(2);
            level += 1;
        }
        least
    }

    /// Whether `leaf` is included under `root`.
    pub fn verify(&self, leaf: &[u8; 32], root: &MerkleRoot) -> Result<(), MerkleError> {
        if self.root(leaf)? == *root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        }
    }
}

/// A built tree: every level, from the leaves up to the root.
#[derive(Clone, Debug)]
pub struct Tree {
    levels: Vec<Vec<[u8; 32]>>,
}

/// `tagged_hash(MERKLE_NODE, left || right)`.
fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    tagged_hash(tags::MERKLE_NODE, &[left, right])
}

impl Tree {
    /// Builds the tree of `leaves` (at least one, at most [`MAX_LEAVES`]).
    pub fn new(leaves: &[[u8; 32]]) -> Result<Self, MerkleError> {
        if leaves.is_empty() || leaves.len() > MAX_LEAVES as usize {
            return Err(MerkleError::BadLeafCount(leaves.len()));
        }
        let mut levels = vec![leaves.to_vec()];
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let up = below
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node(l, r),
                    [odd] => *odd,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
            levels.push(up);
        }
        Ok(Self { levels })
    }

    /// The root.
    pub fn root(&self) -> MerkleRoot {
        MerkleRoot(self.levels[self.levels.len() - 1][0])
    }

    /// Leaves in the tree.
    pub fn len(&self) -> u32 {
        self.levels[0].len() as u32
    }

    /// Never true: a tree has at least one leaf.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The inclusion proof of leaf `index`.
    pub fn proof(&self, index: u32) -> Option<InclusionProof> {
        if index >= self.len() {
            return None;
        }
        let mut i = index as usize;
        let mut siblings = Vec::with_capacity(self.levels.len() - 1);
        for level in &self.levels[..self.levels.len() - 1] {
            // The sibling, unless this is an odd last node (promoted, no sibling).
            if let Some(s) = level.get(i ^ 1) {
                siblings.push(MerkleRoot(*s));
            }
            i /= 2;
        }
        Some(InclusionProof {
            index,
            total: self.len(),
            siblings,
        })
    }
}

/// Why a Merkle proof failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// Index not inside the tree.
    #[error("leaf {index} is not inside a tree of {total} leaves")]
    BadPosition {
        /// Index claimed.
        index: u32,
        /// Tree size claimed.
        total: u32,
    },
    /// The path needs a different number of siblings.
    #[error("proof has {got} sibling hashes, the path needs {needed}")]
    WrongSiblingCount {
        /// Siblings the path needs.
        needed: usize,
        /// Siblings given.
        got: usize,
    },
    /// rs_merkle could not compute a root.
    #[error("proof does not determine a root")]
    Unprovable,
    /// The proof leads to another root.
    #[error("proof leads to a different root")]
    RootMismatch,
    /// A smaller tree gives the leaf the same path: where the tree size is not signed (vote
    /// batches), only the smallest is accepted, so a certificate cannot be re-encoded.
    #[error("leaf {index} has the same path in a tree of {canonical} leaves, not {total}")]
    NotCanonical {
        /// Index claimed.
        index: u32,
        /// Tree size claimed.
        total: u32,
        /// The smallest tree size with that path.
        canonical: u32,
    },
    /// Zero or too many leaves.
    #[error("a tree needs 1..={MAX_LEAVES} leaves, not {0}")]
    BadLeafCount(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256;
    use proptest::prelude::*;

    #[test]
    fn canonical_proofs_keep_the_root_and_erase_the_tree_size() {
        // Leaf 2 has the same path in trees of 5 and 7 leaves.
        let seven = Tree::new(&leaves(7)).unwrap();
        let mut p = seven.proof(2).unwrap();
        assert_eq!(p.canonical().total, 5);
        p.total = 6;
        let five = p.canonical();
        assert_eq!(five.total, 5);
        assert_eq!(five.root(&leaves(7)[2]), Ok(seven.root()));
        for n in 1..=70u32 {
            let tree = Tree::new(&leaves(n)).unwrap();
            for i in 0..n {
                let p = tree.proof(i).unwrap();
                let c = p.canonical();
                assert!(c.total <= n);
                assert_eq!(
                    c.root(&leaves(n)[i as usize]),
                    Ok(tree.root()),
                    "{i} of {n}"
                );
                assert_eq!(c.canonical(), c, "canonical is a fixed point");
                assert_eq!(p.clone().into_canonical(), c, "in place, the same");
                assert_eq!(p.canonical_total(), smallest_size_with_the_path(i, n));
                // Every size with the same path has the same canonical form.
                for t in i + 1..=n {
                    let q = InclusionProof {
                        total: t,
                        ..p.clone()
                    };
                    if path_shape(i, t) == path_shape(i, n) {
                        assert_eq!(q.canonical(), c, "{i} of {t} and of {n}");
                    }
                }
            }
        }
    }

    /// The definition of the canonical size, by search: the smallest tree size at which leaf
    /// `index` has the path it has in a tree of `total`.
    fn smallest_size_with_the_path(index: u32, total: u32) -> u32 {
        let shape = path_shape(index, total);
        (1..=total)
            .find(|t| path_shape(index, *t) == shape)
            .unwrap()
    }

    #[test]
    fn canonical_sizes_match_the_search_up_to_300_leaves_and_near_powers_of_two() {
        let mut sizes: Vec<u32> = (1..=300).collect();
        for k in 9..=20 {
            sizes.extend([(1 << k) - 1, 1 << k, (1 << k) + 1]);
        }
        for n in sizes {
            let indices: Vec<u32> = if n <= 300 {
                (0..n).collect()
            } else {
                vec![0, 1, n / 3, n / 2, n - 2, n - 1]
            };
            for i in indices {
                let p = InclusionProof {
                    index: i,
                    total: n,
                    siblings: Vec::new(),
                };
                assert_eq!(
                    p.canonical_total(),
                    smallest_size_with_the_path(i, n),
                    "{i} of {n}"
                );
            }
        }
        let bad = InclusionProof {
            index: 3,
            total: 3,
            siblings: Vec::new(),
        };
        assert_eq!(bad.canonical_total(), 3, "invalid proofs keep their size");
    }

    fn leaves(n: u32) -> Vec<[u8; 32]> {
        (0..n).map(|i| sha256(&i.to_be_bytes())).collect()
    }

    /// Recomputes the root by walking [`path_shape`] by hand: what an OpenTimestamps path does.
    fn walk(leaf: [u8; 32], proof: &InclusionProof) -> [u8; 32] {
        let mut node = leaf;
        let mut sib = proof.siblings.iter();
        for step in path_shape(proof.index, proof.total).unwrap() {
            node = match step {
                Step::Left => NodeHasher::hash(&[sib.next().unwrap().0, node].concat()),
                Step::Right => NodeHasher::hash(&[node, sib.next().unwrap().0].concat()),
                Step::Promote => node,
            };
        }
        node
    }

    #[test]
    fn single_leaf_is_its_own_root() {
        let l = leaves(1);
        let t = Tree::new(&l).unwrap();
        assert_eq!(t.root().0, l[0]);
        let p = t.proof(0).unwrap();
        assert!(p.siblings.is_empty());
        assert_eq!(p.verify(&l[0], &t.root()), Ok(()));
    }

    #[test]
    fn three_leaves_promote_the_last() {
        let l = leaves(3);
        let t = Tree::new(&l).unwrap();
        let ab = NodeHasher::hash(&[l[0], l[1]].concat());
        assert_eq!(t.root().0, NodeHasher::hash(&[ab, l[2]].concat()));
        assert_eq!(path_shape(2, 3).unwrap(), vec![Step::Promote, Step::Left]);
    }

    #[test]
    fn malformed_proofs_are_errors_not_panics() {
        let l = leaves(5);
        let t = Tree::new(&l).unwrap();
        let mut p = t.proof(4).unwrap();
        p.index = 5;
        assert!(matches!(
            p.root(&l[4]),
            Err(MerkleError::BadPosition { .. })
        ));
        let mut p = t.proof(1).unwrap();
        p.siblings.push(MerkleRoot([0; 32]));
        assert!(matches!(
            p.root(&l[1]),
            Err(MerkleError::WrongSiblingCount { .. })
        ));
        let mut p = t.proof(1).unwrap();
        p.total = 0;
        assert!(p.root(&l[1]).is_err());
        assert!(Tree::new(&[]).is_err());
    }

    proptest! {
        /// rs_merkle, built from the same leaves, has the same root and writes the same proofs.
        #[test]
        fn same_tree_and_proofs_as_rs_merkle(n in 1u32..300) {
            let l = leaves(n);
            let ours = Tree::new(&l).unwrap();
            let theirs = rs_merkle::MerkleTree::<NodeHasher>::from_leaves(&l);
            prop_assert_eq!(Some(ours.root().0), theirs.root());
            for i in 0..n {
                let p = ours.proof(i).unwrap();
                let q = theirs.proof(&[i as usize]);
                prop_assert_eq!(p.siblings.iter().map(|s| s.0).collect::<Vec<_>>(), q.proof_hashes().to_vec());
            }
        }

        #[test]
        fn every_leaf_proves_and_tampering_fails(n in 1u32..300, pick in any::<prop::sample::Index>(), bit in 0usize..256) {
            let l = leaves(n);
            let t = Tree::new(&l).unwrap();
            let i = pick.index(n as usize) as u32;
            let p = t.proof(i).unwrap();
            prop_assert_eq!(p.verify(&l[i as usize], &t.root()), Ok(()));
            prop_assert_eq!(walk(l[i as usize], &p), t.root().0);
            // A flipped bit in the leaf never verifies.
            let mut bad = l[i as usize];
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(p.verify(&bad, &t.root()).is_err());
            // Nor does a flipped bit in any sibling.
            if !p.siblings.is_empty() {
                let mut q = p.clone();
                let k = bit % q.siblings.len();
                q.siblings[k].0[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(q.verify(&l[i as usize], &t.root()).is_err());
            }
            // Nor the proof of another position.
            if n > 1 {
                let j = (i + 1) % n;
                prop_assert!(p.verify(&l[j as usize], &t.root()).is_err());
            }
        }
    }
}
