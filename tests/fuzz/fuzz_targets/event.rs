//! Events as operators receive them in gossip: canonical postcard bytes. Whatever decodes must
//! re-encode to the same bytes and survive the stateless checks without panicking.
#![no_main]
use hallmark_protocol::encoding::{decode, encode};
use hallmark_protocol::{testkit, Event};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// A 3-of-4 federation of fixed test keys (built once; deriving keys per input would dominate).
static FEDERATION: LazyLock<hallmark_protocol::Federation> =
    LazyLock::new(|| testkit::federation(3, 4));

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode::<Event>(data) {
        assert_eq!(encode(&event), data, "decode accepts only canonical bytes");
        let _ = event.check(FEDERATION.id());
    }
});
