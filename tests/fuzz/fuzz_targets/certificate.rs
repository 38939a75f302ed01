//! Certified events (event + quorum certificate) in canonical bytes: decode, then the full
//! verification a scanner and an operator run. Nothing may panic; a forged certificate must
//! never verify (the fuzzer cannot forge ECDSA, so any success must be a real certificate).
#![no_main]
use hallmark_protocol::encoding::decode;
use hallmark_protocol::{testkit, Certificate, CertifiedEvent, Vote};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// A 3-of-4 federation of fixed test keys (built once; deriving keys per input would dominate).
static FEDERATION: LazyLock<hallmark_protocol::Federation> =
    LazyLock::new(|| testkit::federation(3, 4));

fuzz_target!(|data: &[u8]| {
    let federation = &*FEDERATION;
    if let Ok(ce) = decode::<CertifiedEvent>(data) {
        let _ = ce.verify(federation);
    }
    if let Ok(c) = decode::<Certificate>(data) {
        let _ = c.verify(federation);
        for a in &c.attestations {
            let _ = a.verify(federation, &Vote::commit(c.event, c.round));
        }
    }
});
