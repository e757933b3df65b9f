//! The signed-in user's devices, "sign out of all devices", and their recent security events.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Caller, ClientAddress};
use super::AppState;
use crate::clock::rfc3339;
use crate::domain::audit::SecurityEvent;
use crate::domain::devices::DeviceView;

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceEntry {
    pub id: String,
    pub name: String,
    pub product: String,
    pub platform: String,
    pub client_identifier: String,
    /// Channels of the device's live sessions: `web`, `device`, …
    pub channels: Vec<String>,
    /// First sign-in, RFC 3339.
    pub created_at: String,
    /// Last sign-in or refresh, RFC 3339.
    pub last_seen_at: String,
    /// Address of the last sign-in.
    pub last_address: Option<String>,
    /// Whether this is the device making the request.
    pub current: bool,
}

impl From<DeviceView> for DeviceEntry {
    fn from(view: DeviceView) -> Self {
        let d = view.device;
        Self {
            id: d.id,
            name: d.name,
            product: d.product,
            platform: d.platform,
            client_identifier: d.client_identifier,
            channels: view.channels.into_iter().collect(),
            created_at: rfc3339(d.first_seen_at),
            last_seen_at: rfc3339(d.last_seen_at),
            last_address: d.last_address,
            current: view.current,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", security(("bearer" = [])),
    responses(
        (status = 200, description = "Devices with a live session, most recently seen first", body = [DeviceEntry]),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
    ))]
pub async fn list_devices(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Vec<DeviceEntry>>, ApiError> {
    let devices = state.devices.list(&who).await?;
    Ok(Json(devices.into_iter().map(DeviceEntry::from).collect()))
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "The device's id")),
    responses(
        (status = 204, description = "Every token of the device is dead"),
        (status = 404, description = "`device_not_found`", body = ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
    ))]
pub async fn delete_device(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.devices.sign_out_device(&who, &id, address.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RevokeAll {
    /// Keep the session making this request signed in.
    #[serde(default)]
    pub keep_current: bool,
}

#[utoipa::path(post, path = "/api/v1/sessions/revoke-all", tag = "sessions", security(("bearer" = [])),
    request_body = RevokeAll,
    responses(
        (status = 204, description = "Signed out of all devices: every token of the account issued until now is dead (but this session's, with `keep_current`)"),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: signed out of all devices too often for now; see Retry-After", body = ErrorBody),
    ))]
pub async fn revoke_all_sessions(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<RevokeAll>,
) -> Result<StatusCode, ApiError> {
    state.devices.sign_out_everywhere(&who, body.keep_current, address.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// How many events, newest first (1–200, default 50).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/security-events", tag = "accounts", security(("bearer" = [])),
    params(EventsQuery),
    responses(
        (status = 200, description = "The account's recent security events, newest first", body = [SecurityEvent]),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
    ))]
pub async fn security_events(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<SecurityEvent>>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    Ok(Json(state.audit.events_of(&who.user_id, limit).await?))
}
