//! `GET /api/v2/user/webhooks` and `POST` to replace the list (`urls[]=…` form fields, as
//! `plexapi`'s `addWebhook()` and `deleteWebhook()` send the whole list).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::xml::Element;
use super::{PlexClient, PlexError};
use crate::http::extract::ClientAddress;
use crate::http::AppState;

fn answer(client: &PlexClient, status: StatusCode, urls: Vec<String>) -> Response {
    let hooks = urls.into_iter().map(|url| Element::new("webhook").attr("url", url));
    client.format.answer(status, &Element::array("webhooks", hooks))
}

pub async fn list(State(state): State<AppState>, client: PlexClient) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    let urls = state.webhooks.list(&who).await.map_err(|e| client.error(&e))?;
    Ok(answer(&client, StatusCode::OK, urls))
}

/// The new list: every `urls[]` field (an empty `urls[]` or none at all clears it).
pub async fn replace(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
    body: Bytes,
) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    let urls: Vec<String> = url::form_urlencoded::parse(&body)
        .filter(|(name, _)| name == "urls[]" || name == "urls")
        .map(|(_, value)| value.into_owned())
        .collect();
    let urls = state.webhooks.replace(&who, urls, address.as_deref()).await.map_err(|e| client.error(&e))?;
    Ok(answer(&client, StatusCode::CREATED, urls))
}
