-- The transactional outbox: every domain write inserts its event here in the
-- same transaction. `sequence` orders the log.
CREATE TABLE outbox (
    sequence BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    collection_id TEXT,
    actor_user_id TEXT,
    envelope TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    published_at TEXT
);
CREATE INDEX outbox_unpublished ON outbox (sequence) WHERE published_at IS NULL;
