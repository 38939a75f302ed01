//! The offline protocol demo (`hallmark demo`). Operators here are in-process signers; the
//! networked federation is `hallmark devnet`.

use anyhow::{bail, Context, Result};
use bitcoin::hashes::Hash as _;
use bitcoin::{ScriptBuf, WPubkeyHash};
use hallmark_protocol::{
    verify_item_history, BatchVote, Certificate, CertifiedEvent, Event, EventBody, EventHash,
    EventKind, Federation, FederationParams, FeeSchedule, ItemId, ItemState, ManufacturerId,
    OperatorEntry, QuorumConfig, SigningKey, VerifyError, Vote,
};

pub(crate) fn random_key() -> SigningKey {
    loop {
        // A random 32-byte string is a valid secret key except with probability ~2^-128.
        if let Ok(k) = SigningKey::from_bytes(&rand::random::<[u8; 32]>()) {
            return k;
        }
    }
}

fn p2wpkh(i: u8) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([i; 20]))
}

struct Demo {
    federation: Federation,
    operators: Vec<SigningKey>,
    clock_ms: u64,
}

impl Demo {
    fn body(
        &mut self,
        author: &SigningKey,
        height: u64,
        prev: EventHash,
        kind: EventKind,
    ) -> EventBody {
        self.clock_ms += 1_000;
        EventBody {
            federation: self.federation.id(),
            height,
            prev,
            timestamp_ms: self.clock_ms,
            nonce: rand::random(),
            author: author.public_key(),
            kind,
        }
    }

    /// Every operator checks the event and votes; the first `m` votes form the certificate.
    fn certify(&self, event: Event) -> Result<CertifiedEvent> {
        let hash = event.check(self.federation.id())?;
        let vote = Vote::commit(hash, 0);
        let mut attestations = Vec::new();
        for op in &self.operators {
            let batch = BatchVote::sign(op, self.federation.id(), vec![vote])?;
            // What the other operators receive is the gossip form; they verify it.
            let verified = batch.to_batch_vote().verify(&self.federation)?;
            attestations.push(verified.attestation(0).context("attestation 0")?);
        }
        let certificate = Certificate::assemble(&self.federation, vote, attestations)?;
        certificate.verify(&self.federation)?;
        println!(
            "  certified {:<22} {}  ({} of {} operator signatures)",
            event.body.kind.name(),
            hash,
            certificate.attestations.len(),
            self.federation.quorum().n()
        );
        Ok(CertifiedEvent { event, certificate })
    }
}

/// Runs the demo; fails if any step does not give the expected verdict.
/// Runs the demo.
pub fn run() -> Result<()> {
    let operators: Vec<SigningKey> = (0..4).map(|_| random_key()).collect();
    let quorum = QuorumConfig::new(3, 4)?;
    let federation = Federation::new(FederationParams {
        name: "hallmark-demo".into(),
        quorum,
        max_faulty: quorum.tolerated_faults(),
        operators: operators
            .iter()
            .enumerate()
            .map(|(i, k)| OperatorEntry {
                key: k.public_key(),
                payout: p2wpkh(i as u8 + 1),
            })
            .collect(),
        treasury: p2wpkh(0xee),
        fees: FeeSchedule::default(),
    })?;
    println!(
        "federation {} (3-of-4, tolerates {} faulty operator)",
        federation.id(),
        quorum.tolerated_faults()
    );
    let mut d = Demo {
        federation,
        operators,
        clock_ms: 1_700_000_000_000,
    };

    let manufacturer = random_key();
    let (alice, bob) = (random_key(), random_key());
    println!("\n1. manufacturer registers, mints SN-0001 to alice; alice gives it to bob");
    let reg = d.body(
        &manufacturer,
        0,
        EventHash::ZERO,
        EventKind::RegisterManufacturer {
            name: "Acme Watches".into(),
        },
    );
    let registration = d.certify(reg.sign(&manufacturer)?)?;
    let mint = d.body(
        &manufacturer,
        0,
        EventHash::ZERO,
        EventKind::Mint {
            serial: "SN-0001".into(),
            product: "Chronograph ref. 1".into(),
            owner: alice.public_key(),
        },
    );
    let mint = d.certify(mint.sign(&manufacturer)?)?;
    let item = ItemId::new(&ManufacturerId::of(&manufacturer.public_key()), "SN-0001");
    let transfer = d.body(
        &alice,
        1,
        mint.certificate.event,
        EventKind::Transfer {
            item,
            to: bob.public_key(),
        },
    );
    let transfer = d.certify(transfer.sign(&alice)?)?;
    let history = vec![mint, transfer];

    println!("\n2. a client scans item {item}");
    let state: ItemState = verify_item_history(&d.federation, item, &registration, &history)?;
    if state.owner != bob.public_key() {
        bail!("verified owner is not bob");
    }
    println!(
        "  AUTHENTIC: {} by Acme Watches, {}, owner {}, {} events, every certificate 3-of-4",
        state.product,
        state.status.name(),
        state.owner.short(),
        state.height + 1
    );

    println!("\n3. a lying operator serves a history whose transfer names mallory");
    let mut forged = history.clone();
    if let EventKind::Transfer { to, .. } = &mut forged[1].event.body.kind {
        *to = random_key().public_key();
    }
    match verify_item_history(&d.federation, item, &registration, &forged) {
        Err(e @ VerifyError::Event { .. }) => println!("  REJECTED: {e}"),
        other => bail!("forged history was not rejected: {other:?}"),
    }

    println!("\n4. a look-alike manufacturer mints the same serial under its own key");
    let fake = random_key();
    let fake_reg = d.body(
        &fake,
        0,
        EventHash::ZERO,
        EventKind::RegisterManufacturer {
            name: "Acme Watches".into(),
        },
    );
    let fake_reg = d.certify(fake_reg.sign(&fake)?)?;
    match verify_item_history(&d.federation, item, &fake_reg, &history) {
        Err(e @ VerifyError::ManufacturerMismatch { .. }) => println!("  REJECTED: {e}"),
        other => bail!("look-alike manufacturer was not rejected: {other:?}"),
    }
    println!("\ndemo OK");
    Ok(())
}
