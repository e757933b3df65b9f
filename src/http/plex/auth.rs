//! Device-key tokens (plex.tv's JWT scheme): register a device's public key, get a nonce, trade a
//! JWT signed with the key for a token, and our verification keys. JSON, as plex.tv answers here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{PlexClient, PlexError};
use crate::http::extract::ClientAddress;
use crate::http::AppState;

#[derive(Deserialize)]
pub struct RegisterBody {
    #[serde(default)]
    jwk: Value,
}

/// `POST /api/v2/auth/jwk` (`{"jwk": {…}}`, with `X-Plex-Token`): the device's Ed25519 public key.
pub async fn register(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
    body: Option<Json<RegisterBody>>,
) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    let Some(Json(body)) = body else {
        return Err(client.error(&crate::domain::Error::InvalidDevice("send {\"jwk\": {…}} as JSON")));
    };
    let token = client.token.clone().unwrap_or_default();
    state.device_keys.register(&who, &token, &body.jwk, address.as_deref()).await.map_err(|e| client.error(&e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v2/auth/nonce`: `{"nonce": …}` for the next device JWT (five minutes, once).
pub async fn nonce(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "nonce": state.device_keys.nonce() }))
}

#[derive(Deserialize)]
pub struct TokenBody {
    #[serde(default)]
    jwt: String,
}

/// `POST /api/v2/auth/token` (`{"jwt": …}`): `{"auth_token": …}`, a signed token for a week.
pub async fn token(
    State(state): State<AppState>,
    client: PlexClient,
    body: Option<Json<TokenBody>>,
) -> Result<Response, PlexError> {
    let jwt = body.map(|Json(b)| b.jwt).unwrap_or_default();
    let token = state.device_keys.exchange(&jwt).await.map_err(|e| client.error(&e))?;
    Ok(Json(json!({ "auth_token": token })).into_response())
}

/// `GET /api/v2/auth/keys`: the Ed25519 keys our device tokens are signed with.
pub async fn keys(State(state): State<AppState>) -> Json<Value> {
    Json(state.device_keys.keys())
}
