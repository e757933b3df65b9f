//! A fresh proof of the person on a form: the passkey answer, app code, recovery code or password
//! that sensitive actions on the pages carry, and stepping the session up with it.

use crate::domain::caller::Authenticated;
use crate::domain::passkeys::Assertion;
use crate::domain::second_factors::{Factor, StepUp};
use crate::domain::Error;
use crate::http::AppState;

/// Steps the session up with the proof a form carries; a form without one leaves the session as
/// it is (the action then checks that it is still fresh enough).
pub(super) async fn stepped_up(
    state: &AppState,
    who: &Authenticated,
    code: &str,
    password: &str,
    ceremony_id: &str,
    webauthn_response: &str,
    address: Option<&str>,
) -> Result<Authenticated, Error> {
    match step_up_proof(code, password, ceremony_id, webauthn_response)? {
        Some(proof) => state.factors.step_up(who, proof, address).await,
        None => Ok(who.clone()),
    }
}

/// The step-up proof a form carries, if any: a passkey's answer (put there by the page script), a
/// code from the app or a recovery code, or else the password.
pub(super) fn step_up_proof(
    code: &str,
    password: &str,
    ceremony_id: &str,
    webauthn_response: &str,
) -> Result<Option<StepUp>, Error> {
    if !webauthn_response.is_empty() {
        let credential = serde_json::from_str(webauthn_response).map_err(|_| Error::PasskeyRejected)?;
        let assertion = Assertion { ceremony_id: Some(ceremony_id.to_owned()), credential: Box::new(credential) };
        return Ok(Some(StepUp::Factor(Factor::Passkey(assertion))));
    }
    if !code.trim().is_empty() {
        return Factor::guess(code).map(|factor| Some(StepUp::Factor(factor)));
    }
    if !password.is_empty() {
        return Ok(Some(StepUp::Password(zeroize::Zeroizing::new(password.to_owned()))));
    }
    Ok(None)
}
