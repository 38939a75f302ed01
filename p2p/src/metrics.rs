//! The network's prometheus metrics (registered in the default registry).

use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};
use std::sync::LazyLock;

pub(crate) static PEERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "hallmark_p2p_peers_connected",
        "Federation members connected"
    )
    .expect("metric registers once")
});
pub(crate) static OFFENCES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hallmark_p2p_offences_total",
        "Rejected gossip messages and refused requests, counted against the member that sent them"
    )
    .expect("metric registers once")
});
pub(crate) static BANNED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hallmark_p2p_members_banned_total",
        "Times a member was disconnected and shut out for misbehaving"
    )
    .expect("metric registers once")
});
pub(crate) static DENIED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hallmark_p2p_connections_denied_total",
        "Connections refused because the peer is not a federation member"
    )
    .expect("metric registers once")
});
pub(crate) static GOSSIP_IN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hallmark_p2p_gossip_received_total",
        "Gossip messages received"
    )
    .expect("metric registers once")
});
pub(crate) static GOSSIP_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hallmark_p2p_gossip_published_total",
        "Gossip messages sent (once per message, to every connected member)"
    )
    .expect("metric registers once")
});
pub(crate) static GOSSIP_REJECTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hallmark_p2p_gossip_rejected_total",
        "Gossip messages the node rejected as invalid"
    )
    .expect("metric registers once")
});
pub(crate) static GOSSIP_PUBLISH_FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hallmark_p2p_gossip_publish_failed_total",
        "Gossip messages not sent to a member: its queue was full, or the message was over the size limit"
    )
    .expect("metric registers once")
});

/// Forces registration so the metrics appear (at zero) before their first use.
pub(crate) fn register() {
    LazyLock::force(&PEERS);
    LazyLock::force(&DENIED);
    LazyLock::force(&OFFENCES);
    LazyLock::force(&BANNED);
    LazyLock::force(&GOSSIP_IN);
    LazyLock::force(&GOSSIP_OUT);
    LazyLock::force(&GOSSIP_REJECTED);
    LazyLock::force(&GOSSIP_PUBLISH_FAILED);
}
