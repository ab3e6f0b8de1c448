-- Every event the recorder handled: how many times its handler ran and when
-- it first ran (for end-to-end lag measurements).
CREATE TABLE recorded_events (
    event_id TEXT PRIMARY KEY,
    deliveries BIGINT NOT NULL,
    handled_at TEXT NOT NULL
);
