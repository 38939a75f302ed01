//! The operator's prometheus metrics (default registry; one operator per process).

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    Histogram, IntCounter, IntCounterVec, IntGauge,
};
use std::sync::LazyLock;

macro_rules! metric {
    ($name:ident: $ty:ty = $reg:ident!($($arg:tt)*)) => {
        pub(crate) static $name: LazyLock<$ty> =
            LazyLock::new(|| $reg!($($arg)*).expect("metric registers once"));
    };
}

metric!(CERTIFIED: IntCounterVec = register_int_counter_vec!("hallmark_events_certified_total", "Events certified and applied, by kind", &["kind"]));
metric!(REJECTED: IntCounterVec = register_int_counter_vec!("hallmark_events_rejected_total", "Submitted events rejected, by error code", &["code"]));
metric!(EQUIVOCATIONS: IntCounter = register_int_counter!("hallmark_consensus_equivocations_total", "Operators seen voting for two events in one round"));
metric!(CONFLICTING_CERTIFICATES: IntCounter = register_int_counter!("hallmark_consensus_conflicting_certificates_total", "Certified events that conflict with the local chain (should stay 0)"));
metric!(PENDING_SLOTS: IntGauge = register_int_gauge!("hallmark_consensus_pending_slots", "Slots being voted on"));
metric!(VOTE_BATCH_SIZE: Histogram = register_histogram!("hallmark_consensus_vote_batch_size", "Votes per signed batch", vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]));
metric!(HTTP_REQUESTS: IntCounterVec = register_int_counter_vec!("hallmark_http_requests_total", "HTTP requests by route and status", &["route", "status"]));
metric!(UPTIME: IntGauge = register_int_gauge!("hallmark_process_start_time_seconds", "Unix time the process started"));

metric!(CHAIN_ERRORS: IntCounter = register_int_counter!("hallmark_anchor_chain_errors_total", "Failed bitcoind interactions of the anchoring worker"));
metric!(ANCHORS_BROADCAST: IntCounter = register_int_counter!("hallmark_anchor_broadcast_total", "Anchor transactions broadcast by this operator"));
metric!(ANCHORS_CONFIRMED: IntCounter = register_int_counter!("hallmark_anchor_confirmed_total", "Checkpoint anchors seen in a block of the best chain"));
metric!(ANCHORS_REORGED: IntCounter = register_int_counter!("hallmark_anchor_reorged_total", "Anchors whose block left the best chain"));
metric!(CHECKPOINTS: IntGauge = register_int_gauge!("hallmark_checkpoints_final", "Final checkpoints"));
metric!(CHAIN_TIP: IntGauge = register_int_gauge!("hallmark_anchor_chain_tip_height", "Best chain height seen by the anchoring worker"));

/// Registers every metric so all appear from the start.
pub fn register() {
    LazyLock::force(&CERTIFIED);
    LazyLock::force(&REJECTED);
    LazyLock::force(&EQUIVOCATIONS);
    LazyLock::force(&CONFLICTING_CERTIFICATES);
    LazyLock::force(&PENDING_SLOTS);
    LazyLock::force(&VOTE_BATCH_SIZE);
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&CHAIN_ERRORS);
    LazyLock::force(&ANCHORS_BROADCAST);
    LazyLock::force(&ANCHORS_CONFIRMED);
    LazyLock::force(&ANCHORS_REORGED);
    LazyLock::force(&CHECKPOINTS);
    LazyLock::force(&CHAIN_TIP);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UPTIME.set(now as i64);
}

/// The text exposition of every registered metric.
pub fn render() -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_default()
}
