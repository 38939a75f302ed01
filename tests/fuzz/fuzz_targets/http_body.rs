//! The body of `POST /v1/events`: JSON parsed exactly as the API handler does, then the
//! stateless checks it runs before anything reaches the event loop.
#![no_main]
use hallmark_protocol::{testkit, Event};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// A 3-of-4 federation of fixed test keys (built once; deriving keys per input would dominate).
static FEDERATION: LazyLock<hallmark_protocol::Federation> =
    LazyLock::new(|| testkit::federation(3, 4));

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = serde_json::from_slice::<Event>(data) {
        let _ = event.check(FEDERATION.id());
    }
});
