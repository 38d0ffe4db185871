//! Prometheus metrics of the API (`GET /metrics`), in an explicit registry.
//!
//! Request counts and latencies are labelled by the route's pattern
//! (`/api/deployments/{id}`), never by the concrete path, so the label set stays small.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub name: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 14))
}

/// The server's metrics and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Requests refused: unauthenticated, forbidden, rate_limited, not_allowed (allow-list).
    pub refused: Family<NameLabels, Counter>,
    /// Plans created, approvals given, executions started, operator commands.
    pub changes: Family<NameLabels, Counter>,
    /// Executions pending, running or paused (set on each scrape).
    pub active_executions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cutover");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let refused = Family::<NameLabels, Counter>::default();
        let changes = Family::<NameLabels, Counter>::default();
        let active_executions = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            latency.clone(),
        );
        registry.register(
            "http_refused",
            "Requests refused before reaching a handler, by reason",
            refused.clone(),
        );
        registry.register(
            "api_changes",
            "Changes made through the API, by kind",
            changes.clone(),
        );
        registry.register(
            "active_executions",
            "Executions pending, running or paused",
            active_executions.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            refused,
            changes,
            active_executions,
        }
    }

    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&NameLabels {
                name: reason.to_string(),
            })
            .inc();
    }

    pub fn change(&self, kind: &str) {
        self.changes
            .get_or_create(&NameLabels {
                name: kind.to_string(),
            })
            .inc();
    }

    /// The registry in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}
