//! Walking a chain and its checkpoints, and naming the first bad row.
//!
//! The same [`ChainWalker`] checks the database (`atlas audit verify`,
//! `GET /api/v1/audit/verify`) and exported bundles (`atlas audit
//! verify-bundle`). Rows must come in sequence order; for each it checks, in
//! this order: that it is the next sequence (else a *gap*: rows removed),
//! that its `prev_hash` is the previous row's hash (else a *broken link*:
//! rows removed, inserted or reordered), and that its `hash` is the hash of
//! its content (else a *hash mismatch*: the row was changed). A checkpoint
//! at a sequence must name that row's hash and carry a valid signature by a
//! trusted key. A checkpoint past the last row means rows were removed from
//! the end.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::chain::{SealedRecord, GENESIS_HASH};
use crate::signing::{Checkpoint, TrustedKeys};
use crate::store::AuditStore;
use crate::AuditError;

/// What is wrong at the first bad sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// A sequence is missing.
    Gap,
    /// A row does not follow its predecessor (`prev_hash` differs).
    BrokenLink,
    /// A row's content does not hash to its `hash`.
    HashMismatch,
    /// A checkpoint names another hash than the row at its sequence.
    CheckpointMismatch,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// A checkpoint is signed by a key that is not trusted.
    UnknownKey,
    /// A checkpoint covers a sequence the chain does not reach.
    MissingRows,
    /// A bundle whose last row no checkpoint covers, or that is malformed.
    Unverifiable,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `None` when the problem is not about one row (a malformed bundle).
    pub sequence: Option<i64>,
    pub problem: Problem,
    pub reason: String,
}

impl Finding {
    fn new(sequence: i64, problem: Problem, reason: impl Into<String>) -> Self {
        Finding {
            sequence: Some(sequence),
            problem,
            reason: reason.into(),
        }
    }
}

/// The outcome of a verification (`GET /api/v1/audit/verify`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerifyReport {
    /// Whether the whole chain and every checkpoint verified.
    pub ok: bool,
    /// Rows that verified before the first problem (all rows when `ok`).
    pub checked: i64,
    pub first_bad_sequence: Option<i64>,
    /// Why that sequence is bad, in words.
    pub reason: Option<String>,
    pub problem: Option<Problem>,
    /// The last checkpoint that verified.
    pub last_checkpoint: Option<Checkpoint>,
}

/// Checks rows one by one, in sequence order.
pub struct ChainWalker<'k> {
    keys: &'k TrustedKeys,
    /// Sequence and `prev_hash` the next row must have; `None` until the
    /// first row when the walk starts mid-chain (a bundle).
    expected: Option<(i64, String)>,
    checkpoints: BTreeMap<i64, Checkpoint>,
    last_checkpoint: Option<Checkpoint>,
    last_sequence: Option<i64>,
    checked: i64,
}

impl<'k> ChainWalker<'k> {
    /// A walk from the start of the chain (sequence 1, genesis hash).
    pub fn from_genesis(keys: &'k TrustedKeys, checkpoints: Vec<Checkpoint>) -> Self {
        let mut walker = ChainWalker::anchored_at_first_row(keys, checkpoints);
        walker.expected = Some((1, GENESIS_HASH.to_string()));
        walker
    }

    /// A walk over a segment: the first row is taken as it is (its
    /// `prev_hash` cannot be checked; a checkpoint after it vouches for it).
    pub fn anchored_at_first_row(keys: &'k TrustedKeys, checkpoints: Vec<Checkpoint>) -> Self {
        ChainWalker {
            keys,
            expected: None,
            checkpoints: checkpoints.into_iter().map(|c| (c.sequence, c)).collect(),
            last_checkpoint: None,
            last_sequence: None,
            checked: 0,
        }
    }

    pub fn checked(&self) -> i64 {
        self.checked
    }

    pub fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.last_checkpoint.as_ref()
    }

    /// Check the next row.
    pub fn push(&mut self, row: &SealedRecord) -> Result<(), Finding> {
        if self.expected.is_none() {
            // A segment's first row: checkpoints before it are outside the walk.
            self.checkpoints = self.checkpoints.split_off(&row.sequence);
        }
        if let Some((sequence, prev_hash)) = &self.expected {
            if row.sequence > *sequence {
                return Err(Finding::new(
                    *sequence,
                    Problem::Gap,
                    format!(
                        "gap: sequence {sequence} is missing (the next row present is {})",
                        row.sequence
                    ),
                ));
            }
            if row.sequence < *sequence {
                return Err(Finding::new(
                    *sequence,
                    Problem::Gap,
                    format!("sequence {} appears again where {sequence} should be", row.sequence),
                ));
            }
            if row.prev_hash != *prev_hash {
                return Err(Finding::new(
                    row.sequence,
                    Problem::BrokenLink,
                    format!(
                        "broken link: prev_hash is not the hash of sequence {} (rows were removed, inserted or reordered)",
                        row.sequence - 1
                    ),
                ));
            }
        }
        if row.compute_hash() != row.hash {
            return Err(Finding::new(
                row.sequence,
                Problem::HashMismatch,
                "hash mismatch: the row's content does not hash to its stored hash (the row was changed)",
            ));
        }
        if let Some(checkpoint) = self.checkpoints.remove(&row.sequence) {
            self.check_checkpoint(&checkpoint, row)?;
            self.last_checkpoint = Some(checkpoint);
        }
        self.checked += 1;
        self.last_sequence = Some(row.sequence);
        self.expected = Some((row.sequence + 1, row.hash.clone()));
        Ok(())
    }

    fn check_checkpoint(&self, checkpoint: &Checkpoint, row: &SealedRecord) -> Result<(), Finding> {
        let seq = checkpoint.sequence;
        if checkpoint.hash != row.hash {
            return Err(Finding::new(
                seq,
                Problem::CheckpointMismatch,
                format!("the checkpoint at sequence {seq} names another hash than the row"),
            ));
        }
        let Some(key) = self.keys.get(&checkpoint.key_id) else {
            return Err(Finding::new(
                seq,
                Problem::UnknownKey,
                format!(
                    "the checkpoint at sequence {seq} is signed by key {}, which is not trusted",
                    checkpoint.key_id
                ),
            ));
        };
        if !key.verifies(checkpoint) {
            return Err(Finding::new(
                seq,
                Problem::BadSignature,
                format!("bad signature on the checkpoint at sequence {seq}"),
            ));
        }
        Ok(())
    }

    /// After the last row: checkpoints beyond it mean rows were removed.
    pub fn finish(&self) -> Result<(), Finding> {
        let after = self.last_sequence.map_or(i64::MIN, |s| s + 1);
        match self.checkpoints.range(after..).next() {
            Some((&seq, _)) => Err(Finding::new(
                seq,
                Problem::MissingRows,
                format!(
                    "a checkpoint covers sequence {seq}, but the chain ends before it (rows were removed from the end)"
                ),
            )),
            None => Ok(()),
        }
    }

    /// The report of this walk, with `finding` as its outcome.
    pub fn report(&self, finding: Option<Finding>) -> VerifyReport {
        VerifyReport {
            ok: finding.is_none(),
            checked: self.checked,
            first_bad_sequence: finding.as_ref().and_then(|f| f.sequence),
            problem: finding.as_ref().map(|f| f.problem),
            reason: finding.map(|f| f.reason),
            last_checkpoint: self.last_checkpoint.clone(),
        }
    }
}

/// The report in words, for the command line.
pub fn describe(report: &VerifyReport) -> String {
    let checkpoint = match &report.last_checkpoint {
        Some(c) => format!(
            "last valid checkpoint at sequence {} (key {}, {})",
            c.sequence, c.key_id, c.created_at
        ),
        None => "no valid checkpoint".to_string(),
    };
    if report.ok {
        format!("audit chain OK: {} rows verified; {checkpoint}", report.checked)
    } else {
        let at = report
            .first_bad_sequence
            .map(|s| format!(" at sequence {s}"))
            .unwrap_or_default();
        format!(
            "audit chain BROKEN{at}: {}\n{} rows verified before it; {checkpoint}",
            report.reason.as_deref().unwrap_or("unknown problem"),
            report.checked
        )
    }
}

/// Rows read per query while walking the database.
const PAGE: i64 = 1000;

/// Walk the whole chain in the database and its checkpoints.
pub async fn verify_database(store: &AuditStore, keys: &TrustedKeys) -> Result<VerifyReport, AuditError> {
    let checkpoints = store.checkpoints().await?;
    let mut walker = ChainWalker::from_genesis(keys, checkpoints);
    let mut after = 0;
    loop {
        let page = store.rows_after(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.record.sequence;
        for row in &page {
            if row.unreadable_data.is_some() {
                return Ok(walker.report(Some(Finding::new(
                    row.record.sequence,
                    Problem::HashMismatch,
                    "hash mismatch: the row's data is not valid JSON (the row was changed)",
                ))));
            }
            if let Err(finding) = walker.push(&row.record.seal()) {
                return Ok(walker.report(Some(finding)));
            }
        }
    }
    Ok(walker.report(walker.finish().err()))
}
