//! PLACEHOLDER of the base branch: the mqtt connection kind, to be written.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::outbound::links::{Ctx, Kind, Link};
use crate::outbound::policy::{Role, Target};
use crate::outbound::supervise::{Ended, Timing};

use super::Broker;

/// What a mqtt connection is, as created and persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    pub broker_url: String,
    pub created_at: String,
    #[serde(default)]
    pub created_by: Role,
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub last_timestamp: i64,
}

pub struct Sink;

impl Kind for Sink {
    const FILE: &'static str = "mqtt_connections.json";
    const LIST: &'static str = "connections";
    const WHAT: &'static str = "mqtt connection";
    type Spec = Spec;

    fn id(spec: &Spec) -> &str {
        &spec.id
    }
    fn set_id(spec: &mut Spec, id: String) {
        spec.id = id;
    }
    fn created_at(spec: &Spec) -> &str {
        &spec.created_at
    }
    fn url(spec: &Spec) -> &str {
        &spec.broker_url
    }
    fn target(spec: &Spec) -> Result<Target, String> {
        Broker::parse(&spec.broker_url).map(|b| b.target())
    }
    fn role(spec: &Spec) -> Role {
        spec.created_by
    }
    fn ca_file(spec: &Spec) -> Option<&Path> {
        spec.ca_file.as_deref()
    }
    fn cursor(spec: &Spec) -> i64 {
        spec.last_timestamp
    }
    fn with_cursor(spec: &Spec, cursor: i64) -> Spec {
        Spec {
            last_timestamp: cursor,
            ..spec.clone()
        }
    }
    fn persist_every(_: &Spec, timing: &Timing) -> Option<Duration> {
        Some(timing.persist_every)
    }
    fn status_json(link: &Link<Self>) -> Value {
        json!({ "id": link.id(), "status": link.status().as_str() })
    }
    fn session(ctx: Arc<Ctx<Self>>) -> Pin<Box<dyn Future<Output = Ended> + Send>> {
        Box::pin(async move {
            let _ = ctx;
            Ended::Stopped
        })
    }
}
