//! An account as its owner and the services see it: its profile and its role.

use crate::store::UserRecord;

/// An account's details as its owner sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: String,
    pub username: String,
    pub email: String,
    pub email_verified: bool,
    pub role: Role,
    /// A new address waiting for its confirmation link.
    pub pending_email: Option<String>,
    /// False for an account that signs in only through a provider or with a passkey.
    pub has_password: bool,
    /// When the account was created (Unix ms).
    pub created_at: i64,
}

/// What an account may administer. Roles are granted with `keywarden admin users set-role`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    User,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Self::User),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }

    /// The role stored on an account; an unknown value grants nothing.
    pub fn of(user: &UserRecord) -> Self {
        Self::parse(&user.role).unwrap_or_default()
    }
}
