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
    modifiers(&BearerAuth),
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
