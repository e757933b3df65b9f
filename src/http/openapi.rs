//! The OpenAPI document of the JSON API, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::{api, devices, email, mfa, passkeys, passwords};

#[derive(OpenApi)]
#[openapi(
    info(title = "keywarden", description = "Accounts, sign-in and sessions. Every error is `{\"error\": code, \"message\": text}`."),
    paths(
        api::create_account,
        api::create_session,
        api::refresh_token,
        api::delete_current_session,
        api::me,
        api::export_account,
        api::delete_account,
        devices::list_devices,
        devices::delete_device,
        devices::revoke_all_sessions,
        devices::security_events,
        passwords::change_password,
        passwords::request_reset,
        passwords::reset_password,
        email::verify_email,
        email::change_email,
        email::resend_verification,
        mfa::factors,
        mfa::begin_totp,
        mfa::confirm_totp,
        mfa::disable_totp,
        mfa::regenerate_recovery_codes,
        mfa::finish_sign_in,
        mfa::step_up,
        passkeys::list,
        passkeys::registration_options,
        passkeys::add,
        passkeys::rename,
        passkeys::remove,
        passkeys::sign_in_options,
        passkeys::sign_in,
        passkeys::step_up_options
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth, &CommonResponses),
    tags((name = "accounts"), (name = "sessions"), (name = "devices"), (name = "passwords"), (name = "mfa"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("kw_at_…").build(),
                ),
            );
        }
    }
}

/// The answers every operation can get whatever its handler does: refusals of the HTTP layer,
/// token checks, and an unavailable database. Each handler's annotation lists its own; these are
/// added where missing, so the document names every status the server returns.
struct CommonResponses;

/// Status, the codes it carries, and when.
type Common = (&'static str, &'static str);

const EVERY_OPERATION: &[Common] = &[
    ("414", "`uri_too_long`: path and query longer than `http.max_uri_bytes`"),
    ("431", "`headers_too_large`: headers larger than `http.max_header_bytes`"),
    ("500", "`internal_error`: a fault of keywarden's, logged, never detailed here"),
    (
        "503",
        "`database_unavailable`: the database did not answer in time, or this node is cut off from it (see \
         `Retry-After`); `overloaded` where a password is hashed",
    ),
];

const WITH_BODY: &[Common] = &[
    ("400", "`malformed_json`: the body is not JSON; `invalid_request`: it could not be read"),
    ("408", "`request_timeout`: the body stopped arriving"),
    ("413", "`payload_too_large`: larger than `max_body_bytes`"),
    ("415", "`unsupported_media_type`: not sent as `application/json`"),
    ("422", "`invalid_request`: a field is missing or of the wrong type, or the body is not a JSON object"),
];

const WITH_PARAMETERS: &[Common] = &[("400", "`invalid_request`: a path segment or query parameter does not parse")];

const WITH_TOKEN: &[Common] = &[
    (
        "401",
        "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`, `dpop_proof_required`, \
         `invalid_dpop_proof`, `use_dpop_nonce`: the access token is absent or not accepted",
    ),
    (
        "403",
        "`mfa_enrolment_required`: this session may only enrol a second factor; `insufficient_scope`: an OAuth \
         client's token",
    ),
];

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let mut common: Vec<Common> = EVERY_OPERATION.to_vec();
                if operation.request_body.is_some() {
                    common.extend_from_slice(WITH_BODY);
                }
                if operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    common.extend_from_slice(WITH_PARAMETERS);
                }
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    common.extend_from_slice(WITH_TOKEN);
                }
                for (status, codes) in common {
                    let responses = &mut operation.responses.responses;
                    match responses.get_mut(status) {
                        Some(RefOr::T(response)) if !response.description.contains(codes) => {
                            response.description = format!("{} Also {codes}.", response.description);
                        }
                        Some(_) => {}
                        None => {
                            let content =
                                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
                            let response = ResponseBuilder::new()
                                .description(format!("{codes}."))
                                .content("application/json", content)
                                .build();
                            responses.insert(status.to_owned(), RefOr::T(response));
                        }
                    }
                }
            }
        }
    }
}
