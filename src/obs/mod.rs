//! Observability: Prometheus metrics and the log and trace set-up.

pub mod metrics;
pub mod telemetry;
