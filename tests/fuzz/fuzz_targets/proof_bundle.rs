//! Proof bundles as clients and auditors receive them (JSON over HTTP, or a file given to
//! `hallmark verify-proof`), verified offline.
#![no_main]
use hallmark_protocol::checkpoint::{verify_bundle, ProofBundle};
use hallmark_protocol::testkit;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// A 3-of-4 federation of fixed test keys (built once; deriving keys per input would dominate).
static FEDERATION: LazyLock<hallmark_protocol::Federation> =
    LazyLock::new(|| testkit::federation(3, 4));

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = serde_json::from_slice::<ProofBundle>(data) {
        let _ = verify_bundle(&FEDERATION, &bundle);
    }
});
