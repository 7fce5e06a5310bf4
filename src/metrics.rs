//! Every metric fanout exports: names as constants (and nowhere else),
//! descriptions, the Prometheus recorder, and small typed helpers so call
//! sites never spell a name or a label.
//!
//! Labels are low-cardinality by construction: reasons, operations and
//! transports from fixed sets; never a uid, group, channel or message id.

use std::{sync::OnceLock, time::Duration};

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const BROKER_MESSAGES_RECEIVED: &str = "fanout_broker_messages_received_total";
pub const BROKER_MESSAGES_DROPPED: &str = "fanout_broker_messages_dropped_total";
pub const BROKER_COMMANDS: &str = "fanout_broker_commands_total";
pub const BROKER_ERRORS: &str = "fanout_broker_errors_total";
pub const BROKER_RECONNECTS: &str = "fanout_broker_reconnects_total";
pub const BROKER_RESUBSCRIBE_DURATION: &str = "fanout_broker_resubscribe_duration_seconds";
pub const BROKER_PROBE_FAILURES: &str = "fanout_broker_probe_failures_total";

fn describe_all() {
    describe_counter!(
        BROKER_MESSAGES_RECEIVED,
        "Messages received from the broker and handed to the node."
    );
    describe_counter!(
        BROKER_MESSAGES_DROPPED,
        "Messages from the broker that were dropped, by reason (invalid_json, invalid_field, unknown_command, lagged)."
    );
    describe_counter!(BROKER_COMMANDS, "Broker commands sent, by operation.");
    describe_counter!(BROKER_ERRORS, "Broker commands that failed, by operation.");
    describe_counter!(
        BROKER_RECONNECTS,
        "Reconnects (or cluster topology changes) of broker pub/sub connections."
    );
    describe_histogram!(
        BROKER_RESUBSCRIBE_DURATION,
        Unit::Seconds,
        "Time to resubscribe a pub/sub connection's channels after a reconnect."
    );
    describe_counter!(
        BROKER_PROBE_FAILURES,
        "Pub/sub probes that did not come back through their connection in time."
    );
}

/// Installs the Prometheus recorder once per process and returns its
/// handle; later calls (more servers in one test process) share it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .map(PrometheusBuilder::build_recorder);
            let recorder = match recorder {
                Ok(r) => r,
                // Only fails for an empty bucket list, which this is not.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe_all();
            handle
        })
        .clone()
}

pub fn broker_received() {
    counter!(BROKER_MESSAGES_RECEIVED).increment(1);
}

pub fn broker_dropped(reason: &'static str, n: u64) {
    counter!(BROKER_MESSAGES_DROPPED, "reason" => reason).increment(n);
}

pub fn broker_command(op: &'static str, ok: bool) {
    counter!(BROKER_COMMANDS, "op" => op).increment(1);
    if !ok {
        counter!(BROKER_ERRORS, "op" => op).increment(1);
    }
}

pub fn broker_reconnected() {
    counter!(BROKER_RECONNECTS).increment(1);
}

pub fn broker_resubscribed(took: Duration) {
    histogram!(BROKER_RESUBSCRIBE_DURATION).record(took.as_secs_f64());
}

pub fn broker_probe_failed() {
    counter!(BROKER_PROBE_FAILURES).increment(1);
}
