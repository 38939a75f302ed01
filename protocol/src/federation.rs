//! The federation: its operators, its M-of-N quorum rule and its fee schedule.
//!
//! Safety needs any two quorums to share an honest operator: two quorums of `m` out of `n`
//! overlap in at least `2m - n` operators, so with at most `f` faulty ones they share an honest
//! one iff `2m - n >= f + 1`. Liveness needs a quorum among the non-faulty: `m <= n - f`. The
//! number of faults a configuration tolerates is the largest `f` meeting both:
//! `min(2m - n - 1, n - m)`. So 3-of-4 and 4-of-5 tolerate one, 5-of-7 two, and 2-of-3 none
//! (its quorums overlap in one operator, which may be the faulty one).

use bitcoin::ScriptBuf;
use serde::{Deserialize, Serialize};

use crate::encoding::encode;
use crate::hash::{tagged_hash, tags};
use crate::ids::{FederationId, OperatorId};
use crate::keys::PublicKey;

/// Most operators a federation may have.
pub const MAX_OPERATORS: u32 = 64;
/// Longest federation name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// M-of-N: a certificate needs `m` signatures of the `n` operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawQuorum", into = "RawQuorum")]
pub struct QuorumConfig {
    m: u32,
    n: u32,
}

#[derive(Serialize, Deserialize)]
struct RawQuorum {
    m: u32,
    n: u32,
}

impl TryFrom<RawQuorum> for QuorumConfig {
    type Error = QuorumError;
    fn try_from(r: RawQuorum) -> Result<Self, QuorumError> {
        Self::new(r.m, r.n)
    }
}

impl From<QuorumConfig> for RawQuorum {
    fn from(q: QuorumConfig) -> Self {
        Self { m: q.m, n: q.n }
    }
}

impl QuorumConfig {
    /// Requires `1 <= m <= n <= MAX_OPERATORS` and `2m > n` (any two quorums intersect).
    pub fn new(m: u32, n: u32) -> Result<Self, QuorumError> {
        if n == 0 || n > MAX_OPERATORS {
            return Err(QuorumError::BadSize { n });
        }
        if m == 0 || m > n {
            return Err(QuorumError::ThresholdOutOfRange { m, n });
        }
        if 2 * m <= n {
            return Err(QuorumError::QuorumsNeedNotIntersect { m, n });
        }
        Ok(Self { m, n })
    }

    /// Signatures a certificate needs.
    pub fn m(&self) -> u32 {
        self.m
    }

    /// Operators in the federation.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// The largest number of faulty operators this rule stays safe and live with.
    pub fn tolerated_faults(&self) -> u32 {
        (2 * self.m - self.n - 1).min(self.n - self.m)
    }

    /// Checks that the rule tolerates `f` faulty operators.
    pub fn check_tolerates(&self, f: u32) -> Result<(), QuorumError> {
        if f > self.tolerated_faults() {
            return Err(QuorumError::DoesNotTolerate {
                m: self.m,
                n: self.n,
                claimed: f,
                tolerated: self.tolerated_faults(),
            });
        }
        Ok(())
    }
}

/// The fee schedule every invoice is computed from (see [`crate::invoice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSchedule {
    /// Operator fee in basis points of the price, split evenly among all operators.
    pub operator_fee_bps: u32,
    /// Treasury fee in basis points of the price.
    pub treasury_fee_bps: u32,
    /// No invoice output may be below this (Bitcoin's dust limit for the scripts used).
    pub dust_limit_sats: u64,
}

impl Default for FeeSchedule {
    fn default() -> Self {
        Self {
            operator_fee_bps: 100,
            treasury_fee_bps: 50,
            dust_limit_sats: 546,
        }
    }
}

/// One operator: the key it signs with and the script its fees are paid to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorEntry {
    /// Signing key (and, through libp2p, its network identity).
    pub key: PublicKey,
    /// Where this operator's share of sale fees goes.
    pub payout: ScriptBuf,
}

/// Everything that defines a federation; its canonical bytes hash to the [`FederationId`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationParams {
    /// Human name, e.g. "hallmark-devnet".
    pub name: String,
    /// The certificate rule.
    pub quorum: QuorumConfig,
    /// Faulty operators the federation claims to tolerate; checked against the quorum rule.
    pub max_faulty: u32,
    /// The operators, in a fixed order.
    pub operators: Vec<OperatorEntry>,
    /// Where the treasury fee goes.
    pub treasury: ScriptBuf,
    /// Sale fees.
    pub fees: FeeSchedule,
}

/// A validated federation, with its id and its operators' ids computed once. Cheap to clone
/// (shared), as every task of an operator holds one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FederationParams", into = "FederationParams")]
pub struct Federation {
    params: std::sync::Arc<FederationParams>,
    id: FederationId,
    operator_ids: std::sync::Arc<[OperatorId]>,
}

impl TryFrom<FederationParams> for Federation {
    type Error = QuorumError;
    fn try_from(p: FederationParams) -> Result<Self, QuorumError> {
        Self::new(p)
    }
}

impl From<Federation> for FederationParams {
    fn from(f: Federation) -> Self {
        std::sync::Arc::unwrap_or_clone(f.params)
    }
}

impl Federation {
    /// Validates the parameters: operator count equals `n`, keys distinct, the quorum rule
    /// tolerates `max_faulty`, fees below 100% in total.
    pub fn new(params: FederationParams) -> Result<Self, QuorumError> {
        if params.name.is_empty() || params.name.len() > MAX_NAME_LEN {
            return Err(QuorumError::BadName);
        }
        let n = params.operators.len();
        if n != params.quorum.n() as usize {
            return Err(QuorumError::OperatorCount {
                n: params.quorum.n(),
                listed: n,
            });
        }
        params.quorum.check_tolerates(params.max_faulty)?;
        let operator_ids: Vec<OperatorId> = params
            .operators
            .iter()
            .map(|o| OperatorId::of(&o.key))
            .collect();
        let mut sorted = operator_ids.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != n {
            return Err(QuorumError::DuplicateOperator);
        }
        let fees = params.fees;
        if u64::from(fees.operator_fee_bps) + u64::from(fees.treasury_fee_bps) >= 10_000 {
            return Err(QuorumError::FeesTooHigh);
        }
        let id = FederationId(tagged_hash(tags::FEDERATION_ID, &[&encode(&params)]));
        Ok(Self {
            params: params.into(),
            id,
            operator_ids: operator_ids.into(),
        })
    }

    /// The federation's id.
    pub fn id(&self) -> FederationId {
        self.id
    }

    /// The parameters.
    pub fn params(&self) -> &FederationParams {
        &self.params
    }

    /// The quorum rule.
    pub fn quorum(&self) -> QuorumConfig {
        self.params.quorum
    }

    /// Operator ids in configuration order.
    pub fn operator_ids(&self) -> &[OperatorId] {
        &self.operator_ids
    }

    /// Position of an operator in the configuration, if it is a member.
    pub fn operator_index(&self, id: &OperatorId) -> Option<usize> {
        self.operator_ids.iter().position(|o| o == id)
    }

    /// An operator's entry.
    pub fn operator(&self, index: usize) -> Option<&OperatorEntry> {
        self.params.operators.get(index)
    }
}

/// A quorum or federation configuration that is not safe or not consistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// `n` out of range.
    #[error("a federation needs 1..={MAX_OPERATORS} operators, not {n}")]
    BadSize {
        /// The size given.
        n: u32,
    },
    /// `m` out of range.
    #[error("threshold {m} out of range for {n} operators")]
    ThresholdOutOfRange {
        /// Threshold.
        m: u32,
        /// Operators.
        n: u32,
    },
    /// `2m <= n`: two disjoint quorums could certify conflicting events.
    #[error("{m}-of-{n}: two quorums need not share any operator (need 2m > n)")]
    QuorumsNeedNotIntersect {
        /// Threshold.
        m: u32,
        /// Operators.
        n: u32,
    },
    /// The claimed fault tolerance is more than the rule gives.
    #[error("{m}-of-{n} tolerates {tolerated} faulty operators, not {claimed} (need 2m-n >= f+1 and m <= n-f)")]
    DoesNotTolerate {
        /// Threshold.
        m: u32,
        /// Operators.
        n: u32,
        /// Faults claimed.
        claimed: u32,
        /// Faults tolerated.
        tolerated: u32,
    },
    /// The operator list does not have `n` entries.
    #[error("quorum says {n} operators but {listed} are listed")]
    OperatorCount {
        /// `n` of the rule.
        n: u32,
        /// Entries listed.
        listed: usize,
    },
    /// The same key listed twice.
    #[error("an operator key is listed twice")]
    DuplicateOperator,
    /// Empty or too long name.
    #[error("federation name must be 1..={MAX_NAME_LEN} bytes")]
    BadName,
    /// Fees would take the whole price.
    #[error("operator and treasury fees must total below 100%")]
    FeesTooHigh,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::federation;

    #[test]
    fn tolerated_faults_table() {
        struct Case {
            name: &'static str,
            m: u32,
            n: u32,
            f: Option<u32>,
        }
        let cases = [
            Case {
                name: "3-of-4",
                m: 3,
                n: 4,
                f: Some(1),
            },
            Case {
                name: "4-of-5",
                m: 4,
                n: 5,
                f: Some(1),
            },
            Case {
                name: "2-of-3",
                m: 2,
                n: 3,
                f: Some(0),
            },
            Case {
                name: "5-of-7",
                m: 5,
                n: 7,
                f: Some(2),
            },
            Case {
                name: "7-of-9",
                m: 7,
                n: 9,
                f: Some(2),
            },
            Case {
                name: "1-of-1",
                m: 1,
                n: 1,
                f: Some(0),
            },
            Case {
                name: "2-of-4",
                m: 2,
                n: 4,
                f: None,
            },
            Case {
                name: "1-of-2",
                m: 1,
                n: 2,
                f: None,
            },
            Case {
                name: "0-of-3",
                m: 0,
                n: 3,
                f: None,
            },
            Case {
                name: "4-of-3",
                m: 4,
                n: 3,
                f: None,
            },
        ];
        for c in cases {
            let q = QuorumConfig::new(c.m, c.n);
            assert_eq!(
                q.as_ref().ok().map(|q| q.tolerated_faults()),
                c.f,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn claimed_fault_tolerance_is_checked() {
        let q = QuorumConfig::new(2, 3).unwrap();
        assert!(q.check_tolerates(0).is_ok());
        assert!(matches!(
            q.check_tolerates(1),
            Err(QuorumError::DoesNotTolerate { tolerated: 0, .. })
        ));
    }

    #[test]
    fn federation_rejects_inconsistent_params() {
        let good = federation(3, 4).params().clone();
        assert!(Federation::new(good.clone()).is_ok());

        let mut p = good.clone();
        p.operators.pop();
        assert!(matches!(
            Federation::new(p),
            Err(QuorumError::OperatorCount { .. })
        ));

        let mut p = good.clone();
        p.operators[1] = p.operators[0].clone();
        assert_eq!(Federation::new(p), Err(QuorumError::DuplicateOperator));

        let mut p = good.clone();
        p.max_faulty = 2;
        assert!(matches!(
            Federation::new(p),
            Err(QuorumError::DoesNotTolerate { .. })
        ));

        let mut p = good;
        p.fees.operator_fee_bps = 9_000;
        p.fees.treasury_fee_bps = 1_000;
        assert_eq!(Federation::new(p), Err(QuorumError::FeesTooHigh));
    }

    #[test]
    fn deserializing_validates() {
        let f = federation(3, 4);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Federation>(&json).unwrap(), f);
        let bad = json.replace("\"m\":3", "\"m\":2");
        assert!(serde_json::from_str::<Federation>(&bad).is_err());
    }

    #[test]
    fn id_depends_on_every_parameter() {
        let f = federation(3, 4);
        let mut p = f.params().clone();
        p.fees.dust_limit_sats += 1;
        assert_ne!(Federation::new(p).unwrap().id(), f.id());
    }
}
