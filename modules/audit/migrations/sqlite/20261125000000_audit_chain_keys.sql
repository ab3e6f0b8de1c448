-- The chain's fork guard is `sequence`, the primary key: each row's
-- predecessor is the row one below it, so two rows claiming the same
-- predecessor would need the same sequence. The unique index on `prev_hash`
-- repeated that guard at the price of one random-key index entry (64 hex
-- characters) per row; it goes. `atlas audit verify` still checks every link.
--
-- SQLite cannot drop a column's UNIQUE constraint, so the table is built
-- again, rows copied as they are. `sequence` becomes INTEGER PRIMARY KEY:
-- the rowid itself, so rows are stored in chain order and the separate
-- primary key index goes too. Dropping the old table drops its triggers
-- (they do not fire); they are created again on the new one.
CREATE TABLE audit_events_rebuilt (
    sequence INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    actor_user_id TEXT,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    collection_id TEXT,
    data TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_events_rebuilt (sequence, event_id, type, occurred_at, recorded_at, actor_user_id,
        entity_type, entity_id, collection_id, data, trace_id, request_id, prev_hash, hash)
    SELECT sequence, event_id, type, occurred_at, recorded_at, actor_user_id,
        entity_type, entity_id, collection_id, data, trace_id, request_id, prev_hash, hash
    FROM audit_events ORDER BY sequence;
DROP TABLE audit_events;
ALTER TABLE audit_events_rebuilt RENAME TO audit_events;

CREATE INDEX audit_events_by_entity ON audit_events (entity_type, entity_id, occurred_at, sequence);
CREATE INDEX audit_events_by_actor ON audit_events (actor_user_id, occurred_at, sequence);
CREATE INDEX audit_events_by_collection ON audit_events (collection_id, occurred_at, sequence);
CREATE INDEX audit_events_by_time ON audit_events (occurred_at, sequence);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE on audit_events refused'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE on audit_events refused'); END;
