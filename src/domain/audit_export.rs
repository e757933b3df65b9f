//! The audit log leaving the building: an export that keeps each event's chain values (NDJSON, one
//! event a line), its offline check with the key file alone, and the chain head to publish where
//! someone holding the database cannot rewrite it (the anchor that reveals a truncated tail).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::audit::{check_link, AuditLog, Verification};
use super::error::{Error, Result};
use crate::keys::Keyring;
use crate::store::AuditRecord;

/// One event as exported: every field its MAC covers, exactly as sealed, and its chain values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedEvent {
    pub seq: i64,
    /// When, in Unix milliseconds (what the MAC covers); `time` says the same for people.
    pub at: i64,
    pub time: String,
    pub kind: String,
    pub actor: String,
    pub user_id: Option<String>,
    pub address: Option<String>,
    /// The event's details as the JSON text that was sealed.
    pub details: String,
    /// The audit key the MAC was made with.
    pub key_id: String,
    /// The previous event's MAC and this one's, in hex.
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditRecord> for ExportedEvent {
    fn from(r: AuditRecord) -> Self {
        Self {
            seq: r.seq,
            at: r.at,
            time: crate::clock::rfc3339(r.at),
            kind: r.kind,
            actor: r.actor,
            user_id: r.user_id,
            address: r.address,
            details: r.details,
            key_id: r.key_id,
            prev_hash: hex::encode(r.prev_hash),
            hash: hex::encode(r.hash),
        }
    }
}

impl ExportedEvent {
    fn record(&self) -> std::result::Result<AuditRecord, String> {
        let bytes = |text: &str| hex::decode(text).map_err(|_| format!("event {}: a hash is not hex", self.seq));
        Ok(AuditRecord {
            seq: self.seq,
            at: self.at,
            kind: self.kind.clone(),
            actor: self.actor.clone(),
            user_id: self.user_id.clone(),
            address: self.address.clone(),
            details: self.details.clone(),
            key_id: self.key_id.clone(),
            prev_hash: bytes(&self.prev_hash)?,
            hash: bytes(&self.hash)?,
        })
    }
}

/// Where the chain ends: the newest event's sequence number and MAC, written `SEQ:HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: Vec<u8>,
}

impl fmt::Display for ChainHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, hex::encode(&self.hash))
    }
}

impl FromStr for ChainHead {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let shape = || format!("{text:?} is not a chain head such as 1234:9f86d081…");
        let (seq, hash) = text.trim().split_once(':').ok_or_else(shape)?;
        let seq: i64 = seq.parse().map_err(|_| shape())?;
        let hash = hex::decode(hash).map_err(|_| shape())?;
        if seq < 1 || hash.is_empty() {
            return Err(shape());
        }
        Ok(Self { seq, hash })
    }
}

impl AuditLog {
    /// The chain head now.
    pub async fn head(&self) -> Result<ChainHead> {
        let (seq, hash) = self.store().audit_head().await?;
        Ok(ChainHead { seq, hash })
    }

    /// Whether the log still holds a published head: event `head.seq` with that MAC. A log cut
    /// back before it, or rewritten from it on, no longer does.
    pub async fn holds(&self, head: &ChainHead) -> Result<bool> {
        let found = self.store().audit_events_after(head.seq - 1, 1).await?;
        Ok(found.first().is_some_and(|event| event.seq == head.seq && event.hash == head.hash))
    }

    /// Hands every event from `since` to before `until` (Unix ms) to `write`, oldest first, up to
    /// the head as it was when the export began; returns how many.
    pub async fn export(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        mut write: impl FnMut(&ExportedEvent) -> std::io::Result<()>,
    ) -> Result<u64> {
        const PAGE: i64 = 1000;
        let head = self.head().await?;
        let (mut after, mut written) = (0_i64, 0_u64);
        loop {
            let page = self.store().audit_events_after(after, PAGE).await?;
            let done = page.len() < usize::try_from(PAGE).unwrap_or(usize::MAX);
            for record in page {
                if record.seq > head.seq {
                    return Ok(written);
                }
                after = record.seq;
                let wanted = since.is_none_or(|s| record.at >= s) && until.is_none_or(|u| record.at < u);
                if wanted {
                    write(&ExportedEvent::from(record))
                        .map_err(|e| Error::Internal(format!("writing the export: {e}")))?;
                    written += 1;
                }
            }
            if done {
                return Ok(written);
            }
        }
    }
}

/// Checks an export offline, with the keyring alone: every event's MAC, that each follows the one
/// before it without a gap, and — given a published `head` — that the export reaches it and holds
/// it unchanged. The first event's predecessor is outside a partial export and taken as given.
pub fn verify_export(
    keyring: &Keyring,
    lines: impl IntoIterator<Item = std::result::Result<ExportedEvent, String>>,
    head: Option<&ChainHead>,
) -> Verification {
    let mut report = Verification::default();
    let mut last: Option<(i64, Vec<u8>)> = None;
    let mut head_seen = false;
    for line in lines {
        let record = match line.and_then(|event| event.record()) {
            Ok(record) => record,
            Err(problem) => {
                report.problems.push(problem);
                continue;
            }
        };
        let (last_seq, last_hash) = last.take().unwrap_or_else(|| match record.seq {
            1 => (0, Vec::new()),
            seq => (seq - 1, record.prev_hash.clone()),
        });
        check_link(keyring, &record, last_seq, &last_hash, &mut report);
        report.events_checked += 1;
        if let Some(head) = head.filter(|h| h.seq == record.seq) {
            head_seen = true;
            if head.hash != record.hash {
                report.problems.push(format!("event {} is not the published head: the log was rewritten", head.seq));
            }
        }
        last = Some((record.seq, record.hash));
    }
    if let (Some(head), false) = (head, head_seen) {
        let end = last.map_or(0, |(seq, _)| seq);
        report.problems.push(format!(
            "the export ends at event {end} and does not hold the published head {}: events were deleted or the export stops early",
            head.seq
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_reads_back_as_written_and_nonsense_is_refused() {
        let head = ChainHead { seq: 42, hash: vec![0x9f, 0x86, 0x01] };
        assert_eq!(head.to_string(), "42:9f8601");
        assert_eq!("42:9f8601".parse::<ChainHead>(), Ok(head));
        for bad in ["", "42", "x:9f", "42:zz", "0:9f", "42:"] {
            assert!(bad.parse::<ChainHead>().is_err(), "{bad:?}");
        }
    }
}
