//! `GET /metrics`: the counters of [`crate::metrics`] and the state of
//! stores and connections, in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::rss_bytes;
use crate::outbound::alerting::WebhookCounts;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics_get))
}

/// A gauge with one sample per value of `label`.
fn labelled_gauge<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (value, n) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

async fn metrics_get(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    for (name, help, v) in [
        (
            "tsstore_inserts_total",
            "Objects inserted.",
            m.inserts.load(Ordering::Relaxed),
        ),
        (
            "tsstore_insert_bytes_total",
            "Payload bytes inserted.",
            m.insert_bytes.load(Ordering::Relaxed),
        ),
        (
            "tsstore_queries_total",
            "Read queries answered.",
            m.queries.load(Ordering::Relaxed),
        ),
        (
            "tsstore_auth_failures_total",
            "Credentials refused (wrong, malformed or unknown keys).",
            state.throttle.failures(),
        ),
        (
            "tsstore_auth_throttled_total",
            "Authentication attempts refused unverified, the client having failed too often (429).",
            state.throttle.refused(),
        ),
        (
            "tsstore_key_hashes_total",
            "argon2 hashes computed to verify store keys.",
            state.keys.hashes(),
        ),
        (
            "tsstore_http_connections_refused_total",
            "HTTP connections refused at accept, server.max_connections being open or server.max_connections_per_address from the same address.",
            m.http_refused.load(Ordering::Relaxed),
        ),
        (
            "tsstore_http_connections_refused_per_address_total",
            "HTTP connections refused at accept, server.max_connections_per_address being open from the same address.",
            m.http_refused_per_address.load(Ordering::Relaxed),
        ),
        (
            "tsstore_http_connections_timed_out_total",
            "HTTP connections closed for sending a request head too slowly or for being idle.",
            m.http_timed_out.load(Ordering::Relaxed),
        ),
    ] {
        counter(name, help, v);
    }
    let _ = writeln!(
        out,
        "# HELP tsstore_rejected_inserts_total Inserts rejected, by reason.\n# TYPE tsstore_rejected_inserts_total counter"
    );
    for (reason, n) in m.rejected.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(
            out,
            "tsstore_rejected_inserts_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let open = state.stores.open_stores();
    let _ = writeln!(
        out,
        "# HELP tsstore_open_stores Stores open in this process.\n# TYPE tsstore_open_stores gauge\ntsstore_open_stores {}",
        open.len()
    );
    labelled_gauge(
        &mut out,
        "tsstore_busy_stores",
        "Stores an operation is working on (they answer 503 meanwhile), by operation.",
        "operation",
        state.stores.busy().map(|(p, n)| (p.as_str(), n as u64)),
    );
    let _ = writeln!(
        out,
        "# HELP tsstore_store_fill_ratio Fraction of a store's blocks in use.\n# TYPE tsstore_store_fill_ratio gauge"
    );
    for (name, s) in &open {
        if let Ok(st) = s.stats() {
            let fill = st.active_blocks as f64 / st.num_blocks.max(1) as f64;
            let _ = writeln!(out, "tsstore_store_fill_ratio{{store=\"{name}\"}} {fill}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP tsstore_alerts_fired_total Alerts fired by a store's rule since the server started.\n# TYPE tsstore_alerts_fired_total counter"
    );
    // Store names and rule names are both [A-Za-z0-9_.-]: no escaping.
    for (name, rules) in state.rules.all() {
        for r in rules.list().iter() {
            let _ = writeln!(
                out,
                "tsstore_alerts_fired_total{{store=\"{name}\",rule=\"{}\"}} {}",
                r.spec.name,
                r.alerts_fired()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP tsstore_webhook_deliveries_total Alerts of a rule POSTed to its webhook (ok), given up on a final answer (failed: a 4xx, a redirect, a policy refusal) or dropped from a full queue (dropped), since the server started (or the connection or sink was created); owner is store, connection (push) or sink (MQTT), id the connection's or sink's.\n# TYPE tsstore_webhook_deliveries_total counter"
    );
    for (name, rules) in state.rules.all() {
        for r in rules.list().iter() {
            let Some(o) = r.webhook() else { continue };
            let c = o.counts();
            let w = WebhookCounts {
                rule: r.spec.name.clone(),
                delivered: c.delivered,
                failed: c.failed,
                dropped: c.dropped,
            };
            webhook_lines(&mut out, &name, "store", None, &w);
        }
    }
    let owned = [
        ("connection", state.outbound.rules()),
        ("sink", state.mqtt.sinks.rules()),
    ];
    for (owner, list) in owned {
        for (name, id, rules) in list {
            for w in rules.webhooks() {
                webhook_lines(&mut out, &name, owner, Some(&id), &w);
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP tsstore_ws_clients Connected WebSocket clients.\n# TYPE tsstore_ws_clients gauge\ntsstore_ws_clients {}",
        m.ws_clients.load(Ordering::Relaxed)
    );
    labelled_gauge(
        &mut out,
        "tsstore_outbound_connections",
        "Outbound WebSocket connections, by status.",
        "status",
        state
            .outbound
            .count_by_status()
            .map(|(st, n)| (st.as_str(), n)),
    );
    mqtt_metrics(&mut out, &state);
    let _ = writeln!(
        out,
        "# HELP tsstore_http_connections Open HTTP connections (WebSocket streams included).\n# TYPE tsstore_http_connections gauge\ntsstore_http_connections {}",
        m.http_connections.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP tsstore_unix_clients Open Unix-socket connections.\n# TYPE tsstore_unix_clients gauge\ntsstore_unix_clients {}",
        m.unix_clients.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP tsstore_process_resident_memory_bytes Resident memory of the server.\n# TYPE tsstore_process_resident_memory_bytes gauge\ntsstore_process_resident_memory_bytes {}",
        rss_bytes()
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// The MQTT links: connections by kind and status, and their counters
/// (summed over the links that exist now).
/// The `tsstore_webhook_deliveries_total` lines of one rule. Store and
/// rule names are [A-Za-z0-9_.-]; a connection's id is escaped (it comes
/// from a file).
fn webhook_lines(out: &mut String, store: &str, owner: &str, id: Option<&str>, w: &WebhookCounts) {
    let (rule, delivered, failed, dropped) = (&w.rule, w.delivered, w.failed, w.dropped);
    let id = id.map_or(String::new(), |id| {
        let id = id
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        format!(",id=\"{id}\"")
    });
    for (result, n) in [("ok", delivered), ("failed", failed), ("dropped", dropped)] {
        let _ = writeln!(
            out,
            "tsstore_webhook_deliveries_total{{store=\"{store}\",owner=\"{owner}\"{id},rule=\"{rule}\",result=\"{result}\"}} {n}"
        );
    }
}

fn mqtt_metrics(out: &mut String, state: &AppState) {
    let (sinks, subs) = (&state.mqtt.sinks, &state.mqtt.subscriptions);
    let _ = writeln!(
        out,
        "# HELP tsstore_mqtt_connections MQTT links, by kind and status.\n# TYPE tsstore_mqtt_connections gauge"
    );
    let counts = [
        ("sink", sinks.count_by_status()),
        ("subscription", subs.count_by_status()),
    ];
    for (kind, by_status) in counts {
        for (st, n) in by_status {
            let _ = writeln!(
                out,
                "tsstore_mqtt_connections{{kind=\"{kind}\",status=\"{}\"}} {n}",
                st.as_str()
            );
        }
    }
    let (sent, _, _, sink_errors) = sinks.totals();
    let (_, received, stored, sub_errors) = subs.totals();
    let _ = writeln!(
        out,
        "# HELP tsstore_mqtt_messages_published_total Messages the MQTT sinks published and the broker acknowledged.\n# TYPE tsstore_mqtt_messages_published_total counter\ntsstore_mqtt_messages_published_total {sent}"
    );
    let _ = writeln!(
        out,
        "# HELP tsstore_mqtt_messages_received_total Messages the MQTT subscriptions received.\n# TYPE tsstore_mqtt_messages_received_total counter\ntsstore_mqtt_messages_received_total {received}"
    );
    let _ = writeln!(
        out,
        "# HELP tsstore_mqtt_messages_stored_total Messages the MQTT subscriptions stored.\n# TYPE tsstore_mqtt_messages_stored_total counter\ntsstore_mqtt_messages_stored_total {stored}"
    );
    let _ = writeln!(
        out,
        "# HELP tsstore_mqtt_errors_total Errors of the MQTT links (failed dials, refused or unpublishable messages), by kind.\n# TYPE tsstore_mqtt_errors_total counter\ntsstore_mqtt_errors_total{{kind=\"sink\"}} {sink_errors}\ntsstore_mqtt_errors_total{{kind=\"subscription\"}} {sub_errors}"
    );
}
