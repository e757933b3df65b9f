//! `devices.xml`: the account's devices, and signing one out, as plex.tv lists them.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::xml::Element;
use super::{PlexClient, PlexError};
use crate::domain::devices::DeviceView;
use crate::domain::Error;
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
            .attr("provides", &d.provides)
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
    state.devices.sign_out_device(&who, id, address.as_deref()).await.map_err(|e| client.error(&e))?;
    Ok(client.format.answer(StatusCode::OK, &Element::new("MediaContainer").attr("size", 0)))
}

/// `PUT /devices/{clientIdentifier}?Connection[][uri]=…`: a media server publishes where it can be
/// reached; only a device may speak for itself.
pub async fn publish(
    State(state): State<AppState>,
    client: PlexClient,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    let id = id.strip_suffix(".xml").unwrap_or(&id);
    if client.client_identifier.as_deref() != Some(id) {
        return Err(client.error(&Error::DeviceNotFound));
    }
    let uris: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == "Connection[][uri]")
        .map(|(_, value)| value.into_owned())
        .collect();
    state.devices.publish_connections(&who, id, &uris).await.map_err(|e| client.error(&e))?;
    Ok(client.format.answer(StatusCode::OK, &Element::new("MediaContainer").attr("size", 0)))
}

/// `GET /api/v2/resources`: the account's own media servers (devices that provide `server`), with
/// the addresses they published. Their `accessToken` is the caller's own token: it is the account's.
pub async fn resources(State(state): State<AppState>, client: PlexClient) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    let token = client.token.clone().unwrap_or_default();
    let devices = state.devices.list(&who).await.map_err(|e| client.error(&e))?;
    let servers = devices.into_iter().filter(DeviceView::is_media_server).map(|view| view.device);
    let elements: Vec<Element> = servers
        .map(|d| {
            let uris: Vec<String> = serde_json::from_str(&d.connections).unwrap_or_default();
            let connections = uris.iter().filter_map(|uri| url::Url::parse(uri).ok()).map(|url| {
                let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
                let local = host.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
                    std::net::IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
                    std::net::IpAddr::V6(v6) => v6.is_loopback(),
                });
                Element::new("connection")
                    .attr("protocol", url.scheme())
                    .attr("address", &host)
                    .attr("port", url.port_or_known_default().unwrap_or(32400))
                    .attr("uri", url.as_str().trim_end_matches('/'))
                    .flag("local", local)
                    .flag("relay", false)
                    .flag("IPv6", host.contains(':'))
            });
            Element::new("resource")
                .attr("name", &d.name)
                .attr("product", &d.product)
                .attr("productVersion", "")
                .attr("platform", &d.platform)
                .attr("platformVersion", "")
                .attr("device", &d.platform)
                .attr("clientIdentifier", &d.client_identifier)
                .attr("createdAt", super::iso_time(d.first_seen_at))
                .attr("lastSeenAt", super::iso_time(d.last_seen_at))
                .attr("provides", &d.provides)
                .flag("owned", true)
                .attr("accessToken", &token)
                .attr("publicAddress", d.last_address.as_deref().unwrap_or(""))
                .flag("httpsRequired", false)
                .flag("synced", false)
                .flag("relay", false)
                .flag("dnsRebindingProtection", false)
                .flag("natLoopbackSupported", false)
                .flag("publicAddressMatches", false)
                .flag("presence", true)
                .flag("home", false)
                .child(Element::new("connections").children(connections.collect::<Vec<_>>()))
        })
        .collect();
    let container = Element::new("resources").attr("size", elements.len()).children(elements);
    Ok(client.format.answer(StatusCode::OK, &container))
}
