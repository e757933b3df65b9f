//! Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use utoipa::OpenApi as _;

use super::error::ApiError;
use super::openapi::ApiDoc;
use super::AppState;
use crate::domain::readiness::NotReady;

/// The process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: its database answers, and its revocation rules are current.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let not_ready = |why: &str| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why)
            .retry_after(crate::domain::error::DATABASE_RETRY_AFTER_SECS)
    };
    match state.readiness.check().await {
        Ok(engine) => Ok(Json(json!({ "status": "ready", "database": engine }))),
        Err(NotReady::RulesNotCurrent) => Err(not_ready("the revocation rules are not current yet")),
        Err(NotReady::DatabaseSilent) => Err(not_ready("the database does not answer")),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let metrics = &state.metrics;
    metrics.hash_queue_depth.set(i64::try_from(state.hasher.queue_depth()).unwrap_or(i64::MAX));
    // Counters only go up: add what the hasher counted since the last scrape, one scrape at a time.
    let _one_scrape = metrics.scrape_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let seen = metrics.password_verifications.get();
    metrics.password_verifications.inc_by(state.hasher.verifications().saturating_sub(seen));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.render())
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
