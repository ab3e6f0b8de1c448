-- The audit trail: one row per domain event, in one hash chain.
-- `sequence` is the row's position in the chain (1, 2, 3, … with no gaps);
-- `hash` = SHA-256(canonical JSON of the row's content ‖ prev_hash), see
-- modules/audit/src/chain.rs. `prev_hash` is unique: two rows can never
-- claim the same predecessor, so the chain cannot fork even by mistake.
CREATE TABLE audit_events (
    sequence BIGINT PRIMARY KEY,
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
    prev_hash TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL
);
-- One index per query of GET /api/v1/audit, each in the order the query
-- reads (newest first: occurred_at, then sequence), so every page is one
-- index range scan.
CREATE INDEX audit_events_by_entity ON audit_events (entity_type, entity_id, occurred_at, sequence);
CREATE INDEX audit_events_by_actor ON audit_events (actor_user_id, occurred_at, sequence);
CREATE INDEX audit_events_by_collection ON audit_events (collection_id, occurred_at, sequence);
CREATE INDEX audit_events_by_time ON audit_events (occurred_at, sequence);

-- Signed tree heads: the node's Ed25519 signature over (sequence, hash).
CREATE TABLE audit_checkpoints (
    sequence BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Both tables are append-only: the database itself refuses changes.
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
