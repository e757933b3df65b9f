//! Prometheus metrics: sign-ins by outcome, token validations, the password-hash queue and request latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

impl Outcome {
    /// `success` for a success, the stable error code otherwise.
    pub fn of<T>(result: &Result<T, crate::domain::Error>, success: &'static str) -> Self {
        Self { outcome: result.as_ref().map_or_else(|e| e.code(), |_| success) }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of the methods HTTP defines, or `other`: a client invents methods at will, and every
    /// label value is kept for the life of the process.
    pub method: &'static str,
    /// The route template (`/api/v1/devices/{id}`), never the raw path, which may carry secrets.
    pub route: String,
    pub status: u16,
}

/// The label of a request method: one of a fixed set, so that invented methods cannot grow `/metrics`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|known| *known == method.as_str()).unwrap_or("other")
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub kind: &'static str,
    pub severity: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub alerts: Family<AlertLabels, Counter>,
    pub sign_ins: Family<Outcome, Counter>,
    pub token_validations: Family<Outcome, Counter>,
    pub token_refreshes: Family<Outcome, Counter>,
    pub hash_queue_depth: Gauge,
    pub password_verifications: Counter,
    pub request_duration: LatencyFamily,
    pub scrape_lock: std::sync::Mutex<()>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keywarden");
        let sign_ins = Family::<Outcome, Counter>::default();
        registry.register("sign_ins", "Password sign-ins by outcome", sign_ins.clone());
        let token_validations = Family::<Outcome, Counter>::default();
        registry.register("token_validations", "Access-token validations by outcome", token_validations.clone());
        let token_refreshes = Family::<Outcome, Counter>::default();
        registry.register(
            "token_refreshes",
            "Refresh-token exchanges by outcome; refresh_token_reused means a replayed token",
            token_refreshes.clone(),
        );
        let hash_queue_depth = Gauge::default();
        registry.register("password_hash_queue_depth", "Password hashes waiting for a slot", hash_queue_depth.clone());
        let password_verifications = Counter::default();
        registry.register(
            "password_verifications",
            "argon2id verifications, including those against the dummy hash for unknown accounts",
            password_verifications.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "security_alerts",
            "Security alerts raised (credential stuffing, honeytokens)",
            alerts.clone(),
        );
        let request_duration: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register("http_request_duration_seconds", "HTTP request latency", request_duration.clone());
        Self {
            registry,
            alerts,
            sign_ins,
            token_validations,
            token_refreshes,
            hash_queue_depth,
            password_verifications,
            request_duration,
            scrape_lock: Default::default(),
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts every alert in `keywarden_security_alerts_total`.
pub struct AlertCounter(pub std::sync::Arc<Metrics>);

#[async_trait::async_trait]
impl crate::domain::alerts::AlertHook for AlertCounter {
    async fn alerted(&self, alert: &crate::domain::alerts::Alert) {
        let labels = AlertLabels { kind: alert.kind, severity: alert.severity.as_str() };
        self.0.alerts.get_or_create(&labels).inc();
    }
}
