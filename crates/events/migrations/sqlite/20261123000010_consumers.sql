-- Embedded event log: each durable consumer's committed position.
CREATE TABLE consumer_offsets (
    consumer TEXT PRIMARY KEY,
    last_sequence BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Events each consumer has handled, so a redelivery is a no-op.
CREATE TABLE consumer_processed (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX consumer_processed_age ON consumer_processed (processed_at);

-- Events a consumer gave up on after `events.max_deliver` attempts.
CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    envelope TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    created_at TEXT NOT NULL,
    replay_requested_at TEXT,
    replayed_at TEXT
);
CREATE INDEX dead_letters_by_consumer ON dead_letters (consumer, id);
