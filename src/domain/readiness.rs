//! Whether this node can serve: its database answers in time, and its revocation rules are current.

use std::time::Duration;

use super::outages;
use super::revocation::Revocations;
use crate::store::DynStore;

/// A readiness probe answers within a second (load balancers time out soon after), whatever the
/// database does.
const DEADLINE: Duration = Duration::from_millis(900);

/// Why this node should not be sent requests yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The database did not answer a ping within the deadline, or failed it.
    DatabaseSilent,
    /// The database answers, but this node has not read the revocation rules recently enough to
    /// vouch for any token.
    RulesNotCurrent,
}

#[derive(Clone)]
pub struct Readiness {
    store: DynStore,
    revocations: Revocations,
}

impl Readiness {
    pub fn new(store: DynStore, revocations: Revocations) -> Self {
        Self { store, revocations }
    }

    /// The database engine's name when the node is ready.
    pub async fn check(&self) -> Result<&'static str, NotReady> {
        match tokio::time::timeout(DEADLINE, self.store.ping()).await {
            Ok(Ok(())) if self.revocations.is_current() => Ok(self.store.engine()),
            Ok(Ok(())) => Err(NotReady::RulesNotCurrent),
            Ok(Err(err)) => {
                outages::database_unavailable(&err);
                Err(NotReady::DatabaseSilent)
            }
            Err(_) => {
                outages::database_unavailable(&"no answer to a readiness ping within 900 ms");
                Err(NotReady::DatabaseSilent)
            }
        }
    }
}
