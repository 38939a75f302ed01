//! The operator's prometheus metrics (default registry; one operator per process).

use prometheus::{
    register_gauge, register_histogram, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge, Gauge, Histogram, HistogramVec, IntCounter,
    IntCounterVec, IntGauge,
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
metric!(HELD_VOTES: IntGauge = register_int_gauge!("hallmark_consensus_held_votes", "Votes held in memory for events not decided here yet (commit attestations, round-0 prevotes for fast certificates, and early votes)"));
metric!(EVENTS_SENT_AHEAD: IntCounter = register_int_counter!("hallmark_consensus_events_sent_ahead_total", "Events sent to the other operators ahead of the vote batch with this operator's first prevotes for them (those clients gave it, and candidates re-sent in later rounds)"));
metric!(VOTE_BATCH_SIZE: Histogram = register_histogram!("hallmark_consensus_vote_batch_size", "Votes per signed batch", vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]));
metric!(HTTP_REQUESTS: IntCounterVec = register_int_counter_vec!("hallmark_http_requests_total", "HTTP requests by route and status", &["route", "status"]));
metric!(HTTP_RATE_LIMITED: IntCounter = register_int_counter!("hallmark_http_rate_limited_total", "HTTP requests refused because their client exceeded its rate"));
metric!(UPTIME: IntGauge = register_int_gauge!("hallmark_process_start_time_seconds", "Unix time the process started"));

metric!(CHAIN_ERRORS: IntCounter = register_int_counter!("hallmark_anchor_chain_errors_total", "Failed bitcoind interactions of the anchoring worker"));
metric!(ANCHORS_BROADCAST: IntCounter = register_int_counter!("hallmark_anchor_broadcast_total", "Anchor transactions broadcast by this operator"));
metric!(ANCHORS_CONFIRMED: IntCounter = register_int_counter!("hallmark_anchor_confirmed_total", "Checkpoint anchors seen in a block of the best chain"));
metric!(ANCHORS_REORGED: IntCounter = register_int_counter!("hallmark_anchor_reorged_total", "Anchors whose block left the best chain"));
metric!(CHECKPOINTS: IntGauge = register_int_gauge!("hallmark_checkpoints_final", "Final checkpoints"));
metric!(CHAIN_TIP: IntGauge = register_int_gauge!("hallmark_anchor_chain_tip_height", "Best chain height seen by the anchoring worker"));

metric!(VALIDATION_SECONDS: Histogram = register_histogram!("hallmark_events_validation_seconds", "Time to validate an event against the certified state", vec![0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03]));
metric!(LOOP_SECONDS: Histogram = register_histogram!("hallmark_consensus_loop_iteration_seconds", "Work of one event-loop iteration: inputs handled, votes persisted and sent, events certified (waits for inputs excluded)", vec![0.0001, 0.0003, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5]));
metric!(VOTE_SYNC_SECONDS: Histogram = register_histogram!("hallmark_consensus_vote_sync_seconds", "Time to write and fsync one flush of this operator's own votes, which the event loop waits for before sending them", vec![0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05]));
metric!(STAGE_SECONDS: HistogramVec = register_histogram_vec!("hallmark_consensus_stage_seconds", "Submission to each step of round 0, for events submitted to this operator: admitted (taken by the event loop), prevote_sent (own prevote synced, signed and sent), polka (own commit cast: a quorum of prevotes seen), all_prevotes (every operator's round-0 prevote seen, or the certificate if that came first: a fast certificate), commit_sent (own commit synced, signed and sent); polka and commit_sent only when reached before the certificate; the certificate is hallmark_consensus_quorum_seconds", &["stage"], vec![0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05, 0.1, 0.5]));
metric!(CATCHUP_ENTRIES: IntCounterVec = register_int_counter_vec!("hallmark_catchup_log_entries_total", "Entries of peers' logs compared by catch-up, by outcome: held (the same or a better certificate here), missing (event not held here) or better (the peer's certificate ranks before ours)", &["outcome"]));
metric!(CATCHUP_REQUESTS: IntCounter = register_int_counter!("hallmark_catchup_requests_total", "Stretches of peers' logs asked for by catch-up (one request each)"));
metric!(CATCHUP_EVENTS: IntCounter = register_int_counter!("hallmark_catchup_events_total", "Certified events received by catch-up from peers that verified (events missing here, or with a better certificate)"));
metric!(QUORUM_SECONDS: Histogram = register_histogram!("hallmark_consensus_quorum_seconds", "Submission (the API's receipt) to certificate, for events submitted to this operator", vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]));
metric!(SIGNATURES: IntCounterVec = register_int_counter_vec!("hallmark_signatures_checked_total", "Signatures checked, by kind (author, operator_batch, operator_relayed, certificate) and result (valid, invalid)", &["kind", "result"]));
metric!(PARTICIPATION: IntCounterVec = register_int_counter_vec!("hallmark_consensus_votes_received_total", "Votes received, by operator index", &["operator"]));
metric!(ROUND_CHANGES: IntCounter = register_int_counter!("hallmark_consensus_round_changes_total", "Slots decided after round 0 (split or stalled votes: quorum failures of round 0)"));
metric!(SETTLEMENTS: IntCounterVec = register_int_counter_vec!("hallmark_sale_settlements_total", "Sale outcomes certified (settled, expired) and payment checks refused", &["outcome"]));
metric!(SETTLE_SECONDS: Histogram = register_histogram!("hallmark_sale_settlement_seconds", "Escrow lock to settlement, as seen by this operator", vec![1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0]));
metric!(ANCHOR_DELAY_SECONDS: Histogram = register_histogram!("hallmark_anchor_confirmation_delay_seconds", "Checkpoint final to its anchor seen confirmed", vec![1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 3600.0]));
metric!(VOTE_JOURNAL_COMPACTIONS: IntCounter = register_int_counter!("hallmark_store_vote_journal_compactions_total", "Compactions of the own-votes journal (the votes at the undecided slots rewritten as one entry, the entries before it deleted)"));
metric!(STORE_BYTES: IntGauge = register_int_gauge!("hallmark_store_size_bytes", "RocksDB SST bytes on disk"));
metric!(CERTIFICATES_STORED: IntCounterVec = register_int_counter_vec!("hallmark_store_certificates_written_total", "Certificates written, by form (batched: by reference into stored vote batches; whole) and cause (certified; improved: replaced by a better-ranked one)", &["form", "cause"]));
metric!(CERTIFIED_BY_PHASE: IntCounterVec = register_int_counter_vec!("hallmark_consensus_certified_by_phase_total", "Events certified here, by the votes of the certificate first applied: prevote (fast: every operator's round-0 prevote) or commit (a quorum of commits)", &["phase"]));
metric!(HELD_COMMITS: IntCounterVec = register_int_counter_vec!("hallmark_consensus_held_commits_total", "Round-0 commits held back after a polka while every operator's prevote (a fast certificate) may still come, by outcome: fast (it came: no commit sent), expired (the hold ran out: committed), not_held (committed at once: not every operator connected, or holding suspended after holds kept running out)", &["outcome"]));
metric!(COMMIT_HOLD_SECONDS: Gauge = register_gauge!("hallmark_consensus_commit_hold_seconds", "How long a round-0 commit is held back now (a multiple of the recent wait from the polka to the fast certificate)"));
metric!(LOG_LEN: IntGauge = register_int_gauge!("hallmark_store_log_events", "Certified events in this operator's log"));

/// Registers every metric so all appear from the start.
pub fn register() {
    LazyLock::force(&CERTIFIED);
    LazyLock::force(&CERTIFIED_BY_PHASE);
    LazyLock::force(&HELD_COMMITS);
    LazyLock::force(&COMMIT_HOLD_SECONDS);
    LazyLock::force(&REJECTED);
    LazyLock::force(&EQUIVOCATIONS);
    LazyLock::force(&CONFLICTING_CERTIFICATES);
    LazyLock::force(&PENDING_SLOTS);
    LazyLock::force(&HELD_VOTES);
    LazyLock::force(&VOTE_BATCH_SIZE);
    LazyLock::force(&EVENTS_SENT_AHEAD);
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_RATE_LIMITED);
    LazyLock::force(&CHAIN_ERRORS);
    LazyLock::force(&ANCHORS_BROADCAST);
    LazyLock::force(&ANCHORS_CONFIRMED);
    LazyLock::force(&ANCHORS_REORGED);
    LazyLock::force(&CHECKPOINTS);
    LazyLock::force(&CHAIN_TIP);
    LazyLock::force(&VALIDATION_SECONDS);
    LazyLock::force(&STAGE_SECONDS);
    LazyLock::force(&QUORUM_SECONDS);
    LazyLock::force(&VOTE_SYNC_SECONDS);
    LazyLock::force(&LOOP_SECONDS);
    LazyLock::force(&CATCHUP_ENTRIES);
    LazyLock::force(&CATCHUP_EVENTS);
    LazyLock::force(&SIGNATURES);
    LazyLock::force(&PARTICIPATION);
    LazyLock::force(&ROUND_CHANGES);
    LazyLock::force(&CERTIFICATES_STORED);
    LazyLock::force(&SETTLEMENTS);
    LazyLock::force(&SETTLE_SECONDS);
    LazyLock::force(&ANCHOR_DELAY_SECONDS);
    LazyLock::force(&STORE_BYTES);
    LazyLock::force(&LOG_LEN);
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
