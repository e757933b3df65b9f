//! The alert hook that mails every alert to every admin.

use async_trait::async_trait;

use super::accounts::Accounts;
use super::alerts::{Alert, AlertHook};
use crate::mail::Notice;
use crate::store::DynStore;

/// Mails each alert to every account with the `admin` role.
pub struct MailAdmins {
    store: DynStore,
    accounts: Accounts,
}

impl MailAdmins {
    pub fn new(store: DynStore, accounts: Accounts) -> Self {
        Self { store, accounts }
    }
}

#[async_trait]
impl AlertHook for MailAdmins {
    async fn alerted(&self, alert: &Alert) {
        let admins = match self.store.users_with_role("admin").await {
            Ok(admins) => admins,
            Err(err) => return tracing::warn!(error = %err, "cannot list admins to mail an alert"),
        };
        for admin in admins {
            let notice = Notice::SecurityAlert {
                alert: alert.kind.to_owned(),
                severity: alert.severity.as_str().to_owned(),
                summary: alert.summary.clone(),
            };
            if let Err(err) = self.accounts.notify(&admin.id, notice).await {
                tracing::warn!(error = %err, admin = %admin.id, "cannot mail an alert to an admin");
            }
        }
    }
}
