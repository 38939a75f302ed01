//! Writes the seed corpus of the fuzz targets in `tests/fuzz/` from valid protocol values (the
//! test keys of `testkit`), so the fuzzers start from inputs that reach deep into verification.
//! Run by `scripts/fuzz.sh --seeds`; ignored in normal test runs (it writes into the tree).

use std::path::Path;

use hallmark_protocol::checkpoint::{ProofBundle, ProvenEvent};
use hallmark_protocol::encoding::encode;
use hallmark_protocol::invoice::compute_invoice;
use hallmark_protocol::testkit::{body, certify, federation, key, operator_key, script};
use hallmark_protocol::wire::{Gossip, LogEntry, Rpc, RpcResponse};
use hallmark_protocol::{
    BatchVote, CertifiedEvent, EventHash, EventKind, ItemId, ManufacturerId, OfferId, Subject, Vote,
};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

#[test]
#[ignore = "writes the fuzz seed corpus into the source tree; run by scripts/fuzz.sh --seeds"]
fn write_fuzz_seeds() {
    let f = federation(3, 4);
    let maker = key(1);
    let (alice, bob) = (key(2), key(3));
    let register = certify(
        &f,
        body(
            &f,
            &maker,
            0,
            EventHash::ZERO,
            EventKind::RegisterManufacturer {
                name: "Acme".into(),
            },
        )
        .sign(&maker)
        .expect("own key"),
    );
    let mint = certify(
        &f,
        body(
            &f,
            &maker,
            0,
            EventHash::ZERO,
            EventKind::Mint {
                serial: "SN-1".into(),
                product: "Watch".into(),
                owner: alice.public_key(),
            },
        )
        .sign(&maker)
        .expect("own key"),
    );
    let item = ItemId::new(&ManufacturerId::of(&maker.public_key()), "SN-1");
    let transfer = certify(
        &f,
        body(
            &f,
            &alice,
            1,
            mint.certificate.event,
            EventKind::Transfer {
                item,
                to: bob.public_key(),
            },
        )
        .sign(&alice)
        .expect("own key"),
    );
    let offer = body(
        &f,
        &alice,
        0,
        EventHash::ZERO,
        EventKind::CreateOffer {
            item,
            item_height: 2,
            seller: bob.public_key(),
            price_sats: 2_000_000,
        },
    )
    .sign(&alice)
    .expect("own key");
    let invoice = compute_invoice(&f, OfferId::from(offer.hash()), 2_000_000, script(7), 500)
        .expect("valid invoice");
    let accept = certify(
        &f,
        body(
            &f,
            &bob,
            2,
            transfer.certificate.event,
            EventKind::AcceptOffer {
                offer: Box::new(offer),
                invoice,
            },
        )
        .sign(&bob)
        .expect("own key"),
    );
    let history: Vec<CertifiedEvent> = vec![mint, transfer, accept];

    for (i, ce) in history.iter().enumerate() {
        write("event", &format!("event-{i}"), &encode(&ce.event));
        write("certificate", &format!("certified-{i}"), &encode(ce));
        write(
            "certificate",
            &format!("cert-{i}"),
            &encode(&ce.certificate),
        );
        write(
            "http_body",
            &format!("event-{i}.json"),
            &serde_json::to_vec(&ce.event).expect("json"),
        );
    }
    let votes: Vec<Vote> = history
        .iter()
        .map(|ce| Vote::prevote(ce.certificate.event, 0))
        .collect();
    let signed = BatchVote::sign(&operator_key(0), f.id(), votes.clone()).expect("valid batch");
    let relayed = votes
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, signed.attestation(i).expect("in the batch")))
        .collect();
    write("gossip", "relayed", &encode(&Gossip::Relayed(relayed)));
    write(
        "gossip",
        "events",
        &encode(&Gossip::Events(
            history.iter().map(|ce| ce.event.clone()).collect(),
        )),
    );
    let batch = signed.to_batch_vote();
    write(
        "gossip",
        "votes",
        &encode(&Gossip::Votes {
            checkpoints: Vec::new(),
            batch,
            nonce: 7,
        }),
    );
    write(
        "gossip",
        "certified",
        &encode(&Gossip::Certified(history.clone())),
    );
    write(
        "gossip",
        "rpc-chain",
        &encode(&Rpc::Chain {
            subject: Subject::Item(item),
            from_height: 0,
        }),
    );
    write(
        "gossip",
        "rpc-response",
        &encode(&RpcResponse {
            log_len: 3,
            events: history.clone(),
            next_checkpoint: 0,
            checkpoints: Vec::new(),
            log: history
                .iter()
                .map(|ce| LogEntry {
                    event: ce.certificate.event,
                    round: ce.certificate.round,
                    phase: ce.certificate.phase,
                    signers: vec![0, 1, 2],
                })
                .collect(),
        }),
    );
    let bundle = ProofBundle {
        item,
        manufacturer: register,
        events: history
            .into_iter()
            .map(|event| ProvenEvent {
                event,
                anchored: None,
            })
            .collect(),
    };
    write(
        "proof_bundle",
        "pending.json",
        &serde_json::to_vec(&bundle).expect("json"),
    );
}
