//! Everything an operator receives from peers: gossip messages and catch-up requests and
//! responses, decoded and verified as the node's ingress does before anything reaches the event
//! loop.
#![no_main]
use hallmark_protocol::encoding::decode;
use hallmark_protocol::testkit;
use hallmark_protocol::wire::{Gossip, Rpc, RpcResponse};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// A 3-of-4 federation of fixed test keys (built once; deriving keys per input would dominate).
static FEDERATION: LazyLock<hallmark_protocol::Federation> =
    LazyLock::new(|| testkit::federation(3, 4));

fuzz_target!(|data: &[u8]| {
    let federation = &*FEDERATION;
    match decode::<Gossip>(data) {
        Ok(Gossip::Votes { batch, .. }) => {
            let _ = batch.verify(federation);
        }
        Ok(Gossip::Events(events)) => {
            for e in &events {
                let _ = e.check(federation.id());
            }
        }
        Ok(Gossip::Certified(list)) => {
            for ce in &list {
                let _ = ce.verify(federation);
            }
        }
        Ok(Gossip::Relayed(votes)) => {
            for (vote, att) in &votes {
                let _ = att.verify(federation, vote);
            }
        }
        Ok(Gossip::Checkpoints(list)) => {
            for f in &list {
                let _ = f.certified.verify(federation);
            }
        }
        Err(_) => {}
    }
    let _ = decode::<Rpc>(data);
    if let Ok(r) = decode::<RpcResponse>(data) {
        for ce in &r.events {
            let _ = ce.verify(federation);
        }
    }
});
