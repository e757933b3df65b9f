//! Friends and sharing as far as the account service owns them (issue 21 §5): `GET /api/users` and
//! `GET /api/servers/{machineIdentifier}/shared_servers`. keywarden has no friends or shares yet, so
//! both answer plex.tv's well-formed empty containers, always in XML (Tautulli and `plexapi` parse
//! them as XML whatever they sent in `Accept`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::xml::{Element, Format};
use super::{PlexClient, PlexError};
use crate::domain::Error;
use crate::http::AppState;

/// plex.tv names the service that answers these lists.
pub(super) fn my_plex(machine_identifier: &str) -> Element {
    Element::new("MediaContainer")
        .attr("friendlyName", "myPlex")
        .attr("identifier", "com.plexapp.plugins.myplex")
        .attr("machineIdentifier", machine_identifier)
}

/// `GET /api/users` (and `/api/users/`): the account's friends and Plex Home users — none yet.
pub async fn friends(State(state): State<AppState>, client: PlexClient) -> Result<Response, PlexError> {
    let client = PlexClient { format: Format::Xml, ..client };
    client.signed_in(&state).await?;
    Ok(Format::Xml.answer(StatusCode::OK, &my_plex("").attr("totalSize", 0).attr("size", 0)))
}

/// `GET /api/servers/{machineIdentifier}/shared_servers`: whom the caller's media server is shared
/// with — nobody yet. A server the caller does not own is not found.
pub async fn shared_servers(
    State(state): State<AppState>,
    client: PlexClient,
    Path(machine_identifier): Path<String>,
) -> Result<Response, PlexError> {
    let client = PlexClient { format: Format::Xml, ..client };
    let who = client.signed_in(&state).await?;
    let devices = state.devices.list(&who).await.map_err(|e| client.error(&e))?;
    let owned =
        devices.iter().any(|view| view.device.client_identifier == machine_identifier && view.is_media_server());
    if !owned {
        return Err(client.error(&Error::DeviceNotFound));
    }
    Ok(Format::Xml.answer(StatusCode::OK, &my_plex(&machine_identifier).attr("size", 0)))
}
