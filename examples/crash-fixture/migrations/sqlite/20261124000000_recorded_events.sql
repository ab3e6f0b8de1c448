-- Every event the crash recorder handled, with how many times its handler ran.
CREATE TABLE recorded_events (
    event_id TEXT PRIMARY KEY,
    deliveries BIGINT NOT NULL
);
