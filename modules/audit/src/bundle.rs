//! Export bundles: a segment of the chain with the checkpoints that vouch
//! for it, checkable with nothing but the node's public key.
//!
//! A bundle is NDJSON, one object per line, each with a `kind`:
//!
//! 1. `{"kind": "header", "format": "atlas-audit-bundle/1", "from", "to",
//!    "collection_id", "first_sequence", "last_sequence", "exported_at"}`;
//! 2. `{"kind": "checkpoint", "sequence", "hash", "signature", "key_id",
//!    "created_at"}` for every checkpoint in the segment, in order;
//! 3. one line per row from `first_sequence` to `last_sequence`, in order:
//!    `{"kind": "row", …}` (the row as the API shows it) for rows the export
//!    selected, `{"kind": "elided", …}` for the others in between (the row
//!    with `data` replaced by `data_sha256`, so it still hashes without
//!    disclosing its data).
//!
//! The segment runs from the first selected row to the first checkpoint at
//! or after the last selected one, so the last row is signed. Checking a
//! bundle recomputes every row's hash, follows every link and checks every
//! checkpoint's signature; the signature on the last row vouches, through
//! the links, for every row before it. The header's `from`, `to` and
//! `collection_id` describe the selection and are not signed.

use std::io::{BufRead, Write};

use atlas_db::sqlx::{self, Row};
use serde::{Deserialize, Serialize};

use crate::chain::{AuditRecord, SealedRecord};
use crate::signing::{Checkpoint, NodeKey, PublicKey, TrustedKeys};
use crate::store::{AuditStore, StoredRow, RECORD_COLUMNS};
use crate::verify::{ChainWalker, Finding, Problem, VerifyReport};
use crate::AuditError;

/// The `format` of bundles this version writes and reads.
pub const BUNDLE_FORMAT: &str = "atlas-audit-bundle/1";

/// One line of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BundleLine {
    Header(BundleHeader),
    Checkpoint(Checkpoint),
    Row(AuditRecord),
    Elided(SealedRecord),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    pub format: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub collection_id: Option<String>,
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub exported_at: String,
}

/// Which rows to export: `from <= occurred_at < to`, in one collection.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    pub collection_id: Option<String>,
}

impl ExportFilter {
    fn selects(&self, record: &AuditRecord, from: &Option<String>, to: &Option<String>) -> bool {
        from.as_ref().is_none_or(|f| record.occurred_at >= *f)
            && to.as_ref().is_none_or(|t| record.occurred_at < *t)
            && self
                .collection_id
                .as_ref()
                .is_none_or(|c| record.entity.collection_id.as_ref() == Some(c))
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub rows: i64,
    pub elided: i64,
    pub checkpoints: usize,
}

/// Write the bundle for `filter` to `out`. When no checkpoint covers the
/// last selected row yet, one is signed with `signer` (without a signer,
/// that is an error).
pub async fn export(
    store: &AuditStore,
    filter: &ExportFilter,
    signer: Option<&NodeKey>,
    out: &mut dyn Write,
) -> Result<ExportSummary, AuditError> {
    let from = filter.from.map(atlas_db::format_timestamp);
    let to = filter.to.map(atlas_db::format_timestamp);
    let (first, last) = selected_range(store, &from, &to, &filter.collection_id)
        .await?
        .ok_or_else(|| AuditError::Export("no audit rows match the selection".into()))?;
    let end = match covering_checkpoint(store, last).await? {
        Some(seq) => seq,
        None => {
            let signer = signer.ok_or_else(|| {
                AuditError::Export(format!(
                    "no checkpoint covers sequence {last} yet, and no signing key is available to sign one"
                ))
            })?;
            store.checkpoint_now(signer).await?;
            covering_checkpoint(store, last)
                .await?
                .ok_or_else(|| AuditError::Export(format!("no checkpoint covers sequence {last}")))?
        }
    };
    let checkpoints = store.checkpoints_between(first, end).await?;
    let header = BundleLine::Header(BundleHeader {
        format: BUNDLE_FORMAT.into(),
        from: from.clone(),
        to: to.clone(),
        collection_id: filter.collection_id.clone(),
        first_sequence: first,
        last_sequence: end,
        exported_at: atlas_db::now(),
    });
    write_line(out, &header)?;
    for checkpoint in &checkpoints {
        write_line(out, &BundleLine::Checkpoint(checkpoint.clone()))?;
    }
    let mut summary = ExportSummary {
        first_sequence: first,
        last_sequence: end,
        rows: 0,
        elided: 0,
        checkpoints: checkpoints.len(),
    };
    let mut after = first - 1;
    while after < end {
        let page = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM audit_events WHERE sequence > $1 AND sequence <= $2 ORDER BY sequence LIMIT 1000"
        ))
        .bind(after)
        .bind(end)
        .fetch_all(store.db().reader())
        .await?;
        let Some(last_row) = page.last() else { break };
        after = last_row.try_get(0)?;
        for row in &page {
            let stored = StoredRow::from_row(row)?;
            let line = if filter.selects(&stored.record, &from, &to) && stored.unreadable_data.is_none() {
                summary.rows += 1;
                BundleLine::Row(stored.record)
            } else {
                summary.elided += 1;
                BundleLine::Elided(stored.record.seal())
            };
            write_line(out, &line)?;
        }
    }
    out.flush()?;
    Ok(summary)
}

async fn selected_range(
    store: &AuditStore,
    from: &Option<String>,
    to: &Option<String>,
    collection_id: &Option<String>,
) -> Result<Option<(i64, i64)>, AuditError> {
    let mut sql = String::from("SELECT MIN(sequence), MAX(sequence) FROM audit_events WHERE 1 = 1");
    let mut binds = Vec::new();
    for (column, op, value) in [
        ("occurred_at", ">=", from),
        ("occurred_at", "<", to),
        ("collection_id", "=", collection_id),
    ] {
        if let Some(v) = value {
            binds.push(v.clone());
            sql.push_str(&format!(" AND {column} {op} ${}", binds.len()));
        }
    }
    let mut query = sqlx::query(&sql);
    for b in binds {
        query = query.bind(b);
    }
    let row = query.fetch_one(store.db().reader()).await?;
    let first: Option<i64> = row.try_get(0)?;
    let last: Option<i64> = row.try_get(1)?;
    Ok(first.zip(last))
}

async fn covering_checkpoint(store: &AuditStore, sequence: i64) -> Result<Option<i64>, AuditError> {
    let row = sqlx::query("SELECT MIN(sequence) FROM audit_checkpoints WHERE sequence >= $1")
        .bind(sequence)
        .fetch_one(store.db().reader())
        .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?)
}

fn write_line(out: &mut dyn Write, line: &BundleLine) -> Result<(), AuditError> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// The outcome of checking a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    #[serde(flatten)]
    pub report: VerifyReport,
    /// Rows with their data.
    pub rows: i64,
    /// Rows carried without their data.
    pub elided: i64,
    /// The line (from 1) of the first problem, when one is known.
    pub line: Option<usize>,
}

/// Check a bundle against `key`, with no database.
pub fn verify_bundle(input: impl BufRead, key: &PublicKey) -> Result<BundleReport, std::io::Error> {
    let keys = TrustedKeys::new([key.clone()]);
    let mut checkpoints = Vec::new();
    let mut walker: Option<ChainWalker<'_>> = None;
    let mut header: Option<BundleHeader> = None;
    let (mut rows, mut elided) = (0i64, 0i64);
    let mut last_row = None;
    let malformed = |line: usize, reason: String| {
        Finding {
            sequence: None,
            problem: Problem::Unverifiable,
            reason,
        }
        .with_line(line)
    };
    let mut outcome: Option<(Finding, Option<usize>)> = None;
    for (index, text) in input.lines().enumerate() {
        let number = index + 1;
        let text = text?;
        if text.trim().is_empty() {
            continue;
        }
        let line: BundleLine = match serde_json::from_str(&text) {
            Ok(l) => l,
            Err(e) => {
                outcome = Some(malformed(number, format!("line {number} is not a bundle line: {e}")));
                break;
            }
        };
        let sealed = match line {
            BundleLine::Header(h) if number == 1 => {
                if h.format != BUNDLE_FORMAT {
                    outcome = Some(malformed(number, format!("unknown bundle format `{}`", h.format)));
                    break;
                }
                header = Some(h);
                continue;
            }
            _ if header.is_none() => {
                outcome = Some(malformed(number, "the first line is not a bundle header".into()));
                break;
            }
            BundleLine::Header(_) => {
                outcome = Some(malformed(number, format!("line {number}: a second header")));
                break;
            }
            BundleLine::Checkpoint(c) if walker.is_none() => {
                checkpoints.push(c);
                continue;
            }
            BundleLine::Checkpoint(_) => {
                outcome = Some(malformed(number, format!("line {number}: a checkpoint after the rows")));
                break;
            }
            BundleLine::Row(r) => {
                rows += 1;
                r.seal()
            }
            BundleLine::Elided(s) => {
                elided += 1;
                s
            }
        };
        let walk =
            walker.get_or_insert_with(|| ChainWalker::anchored_at_first_row(&keys, std::mem::take(&mut checkpoints)));
        if let Err(finding) = walk.push(&sealed) {
            outcome = Some((finding, Some(number)));
            break;
        }
        last_row = Some(sealed.sequence);
    }
    let empty = ChainWalker::anchored_at_first_row(&keys, Vec::new());
    let walk = walker.as_ref().unwrap_or(&empty);
    if outcome.is_none() {
        outcome = match (&header, last_row) {
            (None, _) => Some(malformed(1, "the bundle is empty".into())),
            (Some(_), None) => Some(malformed(1, "the bundle holds no rows".into())),
            (Some(h), Some(last)) => {
                let finding = walk.finish().err().or_else(|| {
                    let covered = walk.last_checkpoint().map(|c| c.sequence);
                    if covered != Some(last) {
                        Some(Finding {
                            sequence: Some(last),
                            problem: Problem::Unverifiable,
                            reason: format!("no valid checkpoint covers the last row (sequence {last})"),
                        })
                    } else if h.first_sequence != last - walk.checked() + 1 || h.last_sequence != last {
                        Some(Finding {
                            sequence: Some(last),
                            problem: Problem::Unverifiable,
                            reason: format!(
                                "the header announces sequences {}..={}, the bundle holds {}..={last}",
                                h.first_sequence,
                                h.last_sequence,
                                last - walk.checked() + 1
                            ),
                        })
                    } else {
                        None
                    }
                });
                finding.map(|f| (f, None))
            }
        };
    }
    let (finding, line) = match outcome {
        Some((f, line)) => (Some(f), line),
        None => (None, None),
    };
    Ok(BundleReport {
        report: walk.report(finding),
        rows,
        elided,
        line,
    })
}

/// The report in words, for the command line.
pub fn describe(report: &BundleReport) -> String {
    let r = &report.report;
    if r.ok {
        let signed = r
            .last_checkpoint
            .as_ref()
            .map(|c| {
                format!(
                    "signed at sequence {} by key {} ({})",
                    c.sequence, c.key_id, c.created_at
                )
            })
            .unwrap_or_default();
        format!(
            "bundle OK: {} rows ({} with data, {} elided) verified; {signed}",
            r.checked, report.rows, report.elided
        )
    } else {
        let at = match (r.first_bad_sequence, report.line) {
            (Some(s), Some(l)) => format!(" at sequence {s} (line {l})"),
            (Some(s), None) => format!(" at sequence {s}"),
            (None, Some(l)) => format!(" at line {l}"),
            (None, None) => String::new(),
        };
        format!(
            "bundle does NOT verify{at}: {}",
            r.reason.as_deref().unwrap_or("unknown problem")
        )
    }
}

impl Finding {
    fn with_line(self, line: usize) -> (Finding, Option<usize>) {
        (self, Some(line))
    }
}
