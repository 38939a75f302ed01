use super::*;
use crate::certificate::{BatchVote, Vote};
use crate::event::EventKind;
use crate::testkit::{body, certify, federation, key, operator_key};
use bitcoin::block::Version;
use bitcoin::script::PushBytesBuf;
use bitcoin::{
    absolute, transaction, Amount, CompactTarget, OutPoint, ScriptBuf, TxIn, TxMerkleNode, TxOut,
};
use proptest::prelude::*;

fn tx_with(payload: Option<&[u8]>, salt: u8) -> Transaction {
    let mut output = vec![TxOut {
        value: Amount::from_sat(1000 + u64::from(salt)),
        script_pubkey: crate::testkit::script(salt),
    }];
    if let Some(p) = payload {
        output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(PushBytesBuf::try_from(p.to_vec()).unwrap()),
        });
    }
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            ..Default::default()
        }],
        output,
    }
}

/// A block (header + txids) containing `txs`, mined to regtest difficulty.
fn mine(txs: &[Transaction]) -> (Header, Vec<Txid>) {
    let txids: Vec<Txid> = txs.iter().map(Transaction::compute_txid).collect();
    let root = bitcoin::merkle_tree::calculate_root(txids.iter().map(|t| t.to_raw_hash())).unwrap();
    let mut header = Header {
        version: Version::TWO,
        prev_blockhash: BlockHash::all_zeros(),
        merkle_root: TxMerkleNode::from_raw_hash(root),
        time: 1_700_000_000,
        bits: CompactTarget::from_consensus(0x207f_ffff),
        nonce: 0,
    };
    while header.validate_pow(header.target()).is_err() {
        header.nonce += 1;
    }
    (header, txids)
}

#[test]
fn payload_round_trip_and_is_at_most_80_bytes() {
    let h = CheckpointHash([5; 32]);
    let p = anchor_payload(&h);
    assert!(p.len() <= 80);
    assert_eq!(parse_anchor_payload(&p), Some(h));
    let mut bad = p;
    bad[3] = 2;
    assert_eq!(parse_anchor_payload(&bad), None);
    assert_eq!(anchors_in(&tx_with(Some(&p), 1)), vec![h]);
    assert!(anchors_in(&tx_with(Some(b"other"), 1)).is_empty());
}

#[test]
fn build_sorts_and_dedups_and_the_root_covers_them() {
    let f = federation(3, 4);
    let mut evs = vec![
        EventHash([3; 32]),
        EventHash([1; 32]),
        EventHash([3; 32]),
        EventHash([2; 32]),
    ];
    let (cp, tree) = Checkpoint::build(f.id(), 0, CheckpointHash::ZERO, &mut evs).unwrap();
    assert_eq!(
        evs,
        vec![EventHash([1; 32]), EventHash([2; 32]), EventHash([3; 32])]
    );
    assert_eq!(cp.count, 3);
    for (i, e) in evs.iter().enumerate() {
        tree.proof(i as u32)
            .unwrap()
            .verify(&e.0, &cp.root)
            .unwrap();
    }
    assert!(Checkpoint::build(f.id(), 0, CheckpointHash::ZERO, &mut vec![]).is_err());
}

proptest! {
    #[test]
    fn tx_branches_match_bitcoin_merkle_roots(n in 1usize..40, pick in any::<prop::sample::Index>()) {
        let txs: Vec<Transaction> = (0..n).map(|i| tx_with(None, i as u8)).collect();
        let (header, txids) = mine(&txs);
        let i = pick.index(n);
        let b = TxBranch::new(&txids, i).unwrap();
        prop_assert_eq!(b.root(&txids[i]), header.merkle_root.to_byte_array());
        if n > 1 {
            prop_assert_ne!(b.root(&txids[(i + 1) % n]), header.merkle_root.to_byte_array());
        }
    }
}

struct Fixture {
    fed: Federation,
    bundle: ProofBundle,
}

/// A minted item whose mint is in checkpoint 0, anchored in a mined block, plus a pending
/// transfer.
fn fixture() -> Fixture {
    let fed = federation(3, 4);
    let m = key(1);
    let reg = certify(
        &fed,
        body(
            &fed,
            &m,
            0,
            EventHash::ZERO,
            EventKind::RegisterManufacturer { name: "A".into() },
        )
        .sign(&m)
        .unwrap(),
    );
    let mint = certify(
        &fed,
        body(
            &fed,
            &m,
            0,
            EventHash::ZERO,
            EventKind::Mint {
                serial: "S".into(),
                product: "P".into(),
                owner: key(2).public_key(),
            },
        )
        .sign(&m)
        .unwrap(),
    );
    let item = ItemId::new(&crate::ids::ManufacturerId::of(&m.public_key()), "S");
    let transfer = certify(
        &fed,
        body(
            &fed,
            &key(2),
            1,
            mint.certificate.event,
            EventKind::Transfer {
                item,
                to: key(3).public_key(),
            },
        )
        .sign(&key(2))
        .unwrap(),
    );
    let mut evs = vec![
        reg.certificate.event,
        mint.certificate.event,
        EventHash([9; 32]),
    ];
    let (cp, tree) = Checkpoint::build(fed.id(), 0, CheckpointHash::ZERO, &mut evs).unwrap();
    let vote = Vote::commit(cp.vote_target(), 0);
    let atts = (0..3).map(|i| {
        BatchVote::sign(&operator_key(i), fed.id(), vec![vote])
            .unwrap()
            .attestation(0)
            .unwrap()
    });
    let certified = CertifiedCheckpoint {
        checkpoint: cp.clone(),
        certificate: Certificate::assemble(&fed, vote, atts).unwrap(),
    };
    let anchor_tx = tx_with(Some(&anchor_payload(&cp.hash())), 7);
    let txs = vec![tx_with(None, 1), tx_with(None, 2), anchor_tx.clone()];
    let (header, txids) = mine(&txs);
    let anchor = Anchor::new(&anchor_tx, &header, 101, &txids).unwrap();
    let idx = evs
        .iter()
        .position(|e| *e == mint.certificate.event)
        .unwrap() as u32;
    let bundle = ProofBundle {
        item,
        manufacturer: reg,
        events: vec![
            ProvenEvent {
                event: mint,
                anchored: Some(AnchoredProof {
                    checkpoint: certified,
                    inclusion: tree.proof(idx).unwrap(),
                    anchor,
                }),
            },
            ProvenEvent {
                event: transfer,
                anchored: None,
            },
        ],
    };
    Fixture { fed, bundle }
}

#[test]
fn an_honest_bundle_verifies() {
    let f = fixture();
    let r = verify_bundle(&f.fed, &f.bundle).unwrap();
    assert_eq!(r.state.owner, key(3).public_key());
    assert!(r.anchors[1].is_none(), "the transfer is pending");
    let (number, facts) = r.anchors[0].clone().unwrap();
    assert_eq!(number, 0);
    assert_eq!(facts.height, 101);
    // It survives JSON.
    let json = serde_json::to_string(&f.bundle).unwrap();
    assert_eq!(
        serde_json::from_str::<ProofBundle>(&json).unwrap(),
        f.bundle
    );
}

#[test]
fn every_tampering_fails_with_its_reason() {
    let f = fixture();
    fn anchored(b: &mut ProofBundle) -> &mut AnchoredProof {
        b.events[0].anchored.as_mut().unwrap()
    }
    type Tamper = fn(&mut ProofBundle);
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "event",
            |b| b.events[0].event.event.body.nonce += 1,
            "history",
        ),
        (
            "signature",
            |b| b.events[0].event.certificate.attestations[0].signature.0[9] ^= 1,
            "history",
        ),
        (
            "checkpoint root",
            |b| anchored(b).checkpoint.checkpoint.root.0[0] ^= 1,
            "certificate",
        ),
        (
            "checkpoint signature",
            |b| {
                anchored(b).checkpoint.certificate.attestations[1]
                    .signature
                    .0[9] ^= 1
            },
            "checkpoint certificate",
        ),
        (
            "inclusion path",
            |b| anchored(b).inclusion.siblings[0].0[0] ^= 1,
            "merkle",
        ),
        (
            "merkle branch",
            |b| anchored(b).anchor.branch.siblings[0][0] ^= 1,
            "Merkle branch",
        ),
        (
            "op_return payload",
            |b| {
                let a = anchored(b);
                let n = a.anchor.tx.len();
                // The payload's last byte sits just before the 4-byte locktime.
                a.anchor.tx[n - 5] ^= 1;
            },
            "no OP_RETURN",
        ),
        (
            "header merkle root",
            |b| anchored(b).anchor.header[40] ^= 1,
            "Merkle",
        ),
        (
            "header difficulty",
            |b| anchored(b).anchor.header[72..76].copy_from_slice(&0x1d00_ffffu32.to_le_bytes()),
            "proof of work",
        ),
    ];
    for (name, tamper, reason) in cases {
        let mut b = f.bundle.clone();
        tamper(&mut b);
        let err = verify_bundle(&f.fed, &b).expect_err(name).to_string();
        assert!(err.contains(reason), "{name}: {err}");
    }
}
