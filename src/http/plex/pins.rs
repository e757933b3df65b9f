//! PIN linking: a device asks for a PIN and shows its code, the person approves it here (or on
//! `/link`), the device polls for its token.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use super::xml::{Element, Value};
use super::{PlexClient, PlexError};
use crate::domain::Error;
use crate::http::extract::ClientAddress;
use crate::http::AppState;

#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    #[serde(default)]
    strong: Option<String>,
}

fn pin_element(
    id: i64,
    code: Option<&str>,
    client: &str,
    created_at: i64,
    expires_at: i64,
    token: Option<&str>,
) -> Element {
    let now = crate::clock::now_ms();
    Element::new("pin")
        .attr("id", id)
        .opt("code", code)
        .attr("product", "0")
        .flag("trusted", false)
        .attr("clientIdentifier", client)
        .attr("expiresIn", ((expires_at - now) / 1000).max(0))
        .attr("createdAt", super::iso_time(created_at))
        .attr("expiresAt", super::iso_time(expires_at))
        .attr("authToken", token.map_or(Value::Null, Value::from))
        .child(Element::new("location").attr("code", "").attr("country", ""))
}

/// `POST /api/v2/pins[?strong=true]`: a PIN for the device in the `X-Plex-*` headers (`201`).
pub async fn create(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
    Query(query): Query<CreateQuery>,
) -> Result<Response, PlexError> {
    let device = client.device()?;
    // plexapi sends `strong=True` (Python's spelling), browsers `strong=true`, some tools `1`.
    let strong = query.strong.as_deref().is_some_and(|s| s == "1" || s.eq_ignore_ascii_case("true"));
    let pin = state.pins.create(&device, strong, address.as_deref()).await.map_err(|e| client.error(&e))?;
    let element = pin_element(pin.id, Some(&pin.code), &pin.client_identifier, pin.created_at, pin.expires_at, None);
    Ok(client.format.answer(StatusCode::CREATED, &element))
}

/// `GET /api/v2/pins/{id}`: polled by the device that asked; `authToken` is set once, after approval.
pub async fn poll(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
) -> Result<Response, PlexError> {
    let Some(identifier) = client.client_identifier.clone() else {
        return Err(client.error(&Error::PinNotFound));
    };
    let id: i64 = id.parse().map_err(|_| client.error(&Error::PinNotFound))?;
    let pin = state.pins.poll(id, &identifier, address).await.map_err(|e| client.error(&e))?;
    let token = pin.auth_token.as_ref().map(|t| t.as_str());
    let element = pin_element(pin.id, None, &pin.client_identifier, pin.created_at, pin.expires_at, token);
    Ok(client.format.answer(StatusCode::OK, &element))
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    code: String,
}

/// `PUT /api/v2/pins/link` (form field `code`): the signed-in user approves a PIN.
pub async fn link(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
    Form(form): Form<LinkForm>,
) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    state.pins.approve(&who, &form.code, address.as_deref()).await.map_err(|e| client.error(&e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
