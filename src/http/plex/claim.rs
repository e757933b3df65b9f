//! Claiming a media server: `GET /api/claim/token(.json)` for the owner, `POST /api/claim/exchange`
//! for the new server (the official container's first-run script, `plexapi`'s `claimToken()`).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::xml::{Element, Format};
use super::{account_v1, PlexClient, PlexError};
use crate::http::extract::ClientAddress;
use crate::http::AppState;

/// `GET /api/claim/token.json` → `{"token": "claim-…"}`; `GET /api/claim/token` →
/// `<MediaContainer token="claim-…"/>`. Single use, five minutes.
pub async fn token(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
    json: bool,
) -> Result<Response, PlexError> {
    let format = if json { Format::Json } else { Format::Xml };
    let client = PlexClient { format, ..client };
    let who = client.signed_in(&state).await?;
    let claim = state.claims.create(&who, address.as_deref()).await.map_err(|e| client.error(&e))?;
    Ok(match format {
        Format::Json => axum::Json(serde_json::json!({ "token": claim.token.as_str() })).into_response(),
        Format::Xml => {
            Format::Xml.answer(StatusCode::OK, &Element::new("MediaContainer").attr("token", claim.token.as_str()))
        }
    })
}

pub async fn token_json(
    state: State<AppState>,
    client: PlexClient,
    address: ClientAddress,
) -> Result<Response, PlexError> {
    token(state, client, address, true).await
}

pub async fn token_xml(
    state: State<AppState>,
    client: PlexClient,
    address: ClientAddress,
) -> Result<Response, PlexError> {
    token(state, client, address, false).await
}

#[derive(Deserialize)]
pub struct ExchangeQuery {
    #[serde(default)]
    token: String,
}

/// `POST /api/claim/exchange?token=claim-…`: no account token, only the server's `X-Plex-*`
/// headers. `200` with the account's user element whose token is the server's new one, also as an
/// `<authentication-token>` child on one line (the container's script reads it with `sed`).
pub async fn exchange(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
    Query(query): Query<ExchangeQuery>,
) -> Result<Response, PlexError> {
    let client = PlexClient { format: Format::Xml, ..client };
    let device = client.device()?;
    let (issued, user_id) = state
        .claims
        .exchange(query.token.trim(), device, client.provides.as_deref(), address)
        .await
        .map_err(|e| client.error(&e))?;
    account_v1::answer(&state, &client, &user_id, &issued.access_token, StatusCode::OK).await
}
