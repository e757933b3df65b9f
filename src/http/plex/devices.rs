//! The account's devices and media servers in every shape plex.tv lists them (`devices.xml`, v1 and
//! v2 resources, `pms/servers.xml`), signing a device out, and a server publishing its addresses.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use std::net::IpAddr;

use super::xml::{Element, Format};
use super::{PlexClient, PlexError};
use crate::domain::caller::Authenticated;
use crate::domain::devices::DeviceView;
use crate::domain::Error;
use crate::http::extract::ClientAddress;
use crate::http::AppState;

/// `GET /devices.xml`: every device with a live session, with the addresses media servers published.
pub async fn list(State(state): State<AppState>, client: PlexClient) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    let devices = state.devices.list(&who).await.map_err(|e| client.error(&e))?;
    let count = devices.len();
    let elements = devices.into_iter().map(|view| {
        let connections = published(&view).into_iter().map(|c| Element::new("Connection").attr("uri", c.uri));
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
            .list("Connection", connections)
    });
    let container = Element::new("MediaContainer").attr("size", count).list("Device", elements);
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

/// An address a media server published (`PUT /devices/{id}?Connection[][uri]=…`).
struct Connection {
    protocol: String,
    address: String,
    port: u16,
    uri: String,
    /// On a private, loopback or link-local network.
    local: bool,
}

impl Connection {
    fn parse(uri: &str) -> Option<Self> {
        let url = url::Url::parse(uri).ok()?;
        let address = url.host_str()?.trim_matches(['[', ']']).to_owned();
        let local = address.parse::<IpAddr>().is_ok_and(|ip| match ip {
            IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
        });
        Some(Self {
            protocol: url.scheme().to_owned(),
            port: url.port_or_known_default().unwrap_or(32400),
            uri: url.as_str().trim_end_matches('/').to_owned(),
            local,
            address,
        })
    }
}

fn published(view: &DeviceView) -> Vec<Connection> {
    let uris: Vec<String> = serde_json::from_str(&view.device.connections).unwrap_or_default();
    uris.iter().filter_map(|uri| Connection::parse(uri)).collect()
}

/// The caller's own media servers (devices that provide `server`) with a live session.
async fn media_servers(state: &AppState, client: &PlexClient) -> Result<(Authenticated, Vec<DeviceView>), PlexError> {
    let who = client.signed_in(state).await?;
    let devices = state.devices.list(&who).await.map_err(|e| client.error(&e))?;
    Ok((who, devices.into_iter().filter(DeviceView::is_media_server).collect()))
}

/// How a resource list writes times: v2 in ISO form, v1 in Unix seconds.
#[derive(Clone, Copy)]
enum Times {
    Iso,
    UnixSeconds,
}

impl Times {
    fn write(self, ms: i64) -> super::xml::Value {
        match self {
            Self::Iso => super::iso_time(ms).into(),
            Self::UnixSeconds => (ms / 1000).into(),
        }
    }
}

/// One media server as both resource lists describe it (`tag` is `resource` or `Device`); its
/// `accessToken` is the caller's own token: the servers are the account's.
fn server_element(tag: &'static str, view: &DeviceView, token: &str, caller: Option<&str>, times: Times) -> Element {
    let d = &view.device;
    Element::new(tag)
        .attr("name", &d.name)
        .attr("product", &d.product)
        .attr("productVersion", "")
        .attr("platform", &d.platform)
        .attr("platformVersion", "")
        .attr("device", &d.platform)
        .attr("clientIdentifier", &d.client_identifier)
        .attr("createdAt", times.write(d.first_seen_at))
        .attr("lastSeenAt", times.write(d.last_seen_at))
        .attr("provides", &d.provides)
        .flag("owned", true)
        .attr("accessToken", token)
        .attr("publicAddress", d.last_address.as_deref().unwrap_or(""))
        .flag("httpsRequired", false)
        .flag("synced", false)
        .flag("relay", false)
        .flag("dnsRebindingProtection", false)
        .flag("natLoopbackSupported", false)
        .flag("publicAddressMatches", same_network(view, caller))
        .flag("presence", true)
}

/// `GET /api/v2/resources`: the account's own media servers with the addresses they published. In
/// JSON a top-level array, as plex.tv answers (`plexapi` and Overseerr index into it), even with
/// one server.
pub async fn resources(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
) -> Result<Response, PlexError> {
    let (_, servers) = media_servers(&state, &client).await?;
    let token = client.token.clone().unwrap_or_default();
    let elements: Vec<Element> = servers
        .iter()
        .map(|view| {
            let connections = published(view).into_iter().map(|c| {
                Element::new("connection")
                    .attr("protocol", c.protocol)
                    .attr("address", &c.address)
                    .attr("port", c.port)
                    .attr("uri", c.uri)
                    .flag("local", c.local)
                    .flag("relay", false)
                    .flag("IPv6", c.address.contains(':'))
            });
            server_element("resource", view, &token, address.as_deref(), Times::Iso)
                .flag("home", false)
                .child(Element::array("connections", connections))
        })
        .collect();
    let container = Element::array("resources", elements).attr("size", servers.len());
    Ok(client.format.answer(StatusCode::OK, &container))
}

/// Whether the caller reaches us from the server's own public address (plex.tv's
/// `publicAddressMatches`: Tautulli then offers the server's local addresses, otherwise its remote ones).
fn same_network(view: &DeviceView, caller: Option<&str>) -> bool {
    caller.is_some() && view.device.last_address.as_deref() == caller
}

/// `GET /api/resources[?includeHttps=1]`: the v1 list of the account's media servers, always in XML
/// (Overseerr and Tautulli parse it as XML, whatever `Accept` they sent), times in Unix seconds and
/// each published address as a `<Connection>`.
pub async fn resources_v1(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
) -> Result<Response, PlexError> {
    let client = PlexClient { format: Format::Xml, ..client };
    let (_, servers) = media_servers(&state, &client).await?;
    let token = client.token.clone().unwrap_or_default();
    let devices = servers.iter().map(|view| {
        let connections = published(view).into_iter().map(|c| {
            Element::new("Connection")
                .attr("protocol", c.protocol)
                .attr("address", c.address)
                .attr("port", c.port)
                .attr("uri", c.uri)
                .flag("local", c.local)
        });
        server_element("Device", view, &token, address.as_deref(), Times::UnixSeconds).list("Connection", connections)
    });
    let container = Element::new("MediaContainer").attr("size", servers.len()).list("Device", devices);
    Ok(Format::Xml.answer(StatusCode::OK, &container))
}

/// `GET /pms/servers.xml`: the account's media servers in the oldest shape (Tautulli reads each
/// server's `createdAt`, `updatedAt` and `version`; Ombi its address and token).
pub async fn servers_xml(State(state): State<AppState>, client: PlexClient) -> Result<Response, PlexError> {
    let client = PlexClient { format: Format::Xml, ..client };
    let (_, servers) = media_servers(&state, &client).await?;
    let token = client.token.clone().unwrap_or_default();
    let elements = servers.iter().map(|view| {
        let d = &view.device;
        let connections = published(view);
        let remote = connections.iter().find(|c| !c.local).or(connections.first());
        let local: Vec<&str> = connections.iter().filter(|c| c.local).map(|c| c.address.as_str()).collect();
        Element::new("Server")
            .attr("accessToken", &token)
            .attr("name", &d.name)
            .attr("address", remote.map_or("", |c| c.address.as_str()))
            .attr("port", remote.map_or(32400, |c| c.port))
            .attr("version", "")
            .attr("scheme", remote.map_or("http", |c| c.protocol.as_str()))
            .attr("host", remote.map_or("", |c| c.address.as_str()))
            .attr("localAddresses", local.join(","))
            .attr("machineIdentifier", &d.client_identifier)
            .attr("createdAt", d.first_seen_at / 1000)
            .attr("updatedAt", d.last_seen_at / 1000)
            .flag("owned", true)
            .flag("synced", false)
    });
    let container = super::sharing::my_plex("").attr("size", servers.len()).list("Server", elements);
    Ok(Format::Xml.answer(StatusCode::OK, &container))
}
