-- The outbox relay (nats broker) publishes while it holds this lease; another
-- process takes over once `expires_at` has passed.
CREATE TABLE relay_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
