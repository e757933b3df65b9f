//! `devices.xml`: the account's devices, and signing one out, as plex.tv lists them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::xml::Element;
use super::{PlexClient, PlexError};
use crate::http::extract::ClientAddress;
use crate::http::AppState;

/// `GET /devices.xml`: every device with a live session.
pub async fn list(State(state): State<AppState>, client: PlexClient) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    let devices = state.devices.list(&who).await.map_err(|e| client.error(&e))?;
    let count = devices.len();
    let elements = devices.into_iter().map(|view| {
        let d = view.device;
        // plex.tv also lists each device's token; keywarden keeps only digests, so it has none to show.
        Element::new("Device")
            .attr("name", &d.name)
            .attr("publicAddress", d.last_address.as_deref().unwrap_or(""))
            .attr("product", &d.product)
            .attr("productVersion", "")
            .attr("platform", &d.platform)
            .attr("platformVersion", "")
            .attr("device", &d.platform)
            .attr("model", "")
            .attr("vendor", "")
            .attr("provides", "")
            .attr("clientIdentifier", &d.client_identifier)
            .attr("version", "")
            .attr("id", &d.id)
            .attr("createdAt", d.first_seen_at / 1000)
            .attr("lastSeenAt", d.last_seen_at / 1000)
            .attr("screenResolution", "")
            .attr("screenDensity", "")
    });
    let container = Element::new("MediaContainer").attr("size", count).children(elements.collect::<Vec<_>>());
    Ok(client.format.answer(StatusCode::OK, &container))
}

/// `DELETE /devices/{id}.xml`: signs that device out (its tokens die at once).
pub async fn remove(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    let id = id.strip_suffix(".xml").unwrap_or(&id);
    let address = address.map(|a| a.to_string());
    state.devices.sign_out_device(&who, id, address.as_deref()).await.map_err(|e| client.error(&e))?;
    Ok(client.format.answer(StatusCode::OK, &Element::new("MediaContainer").attr("size", 0)))
}
