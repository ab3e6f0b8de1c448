-- A collection's rules: the current version of each. Every change is also
-- kept in `collection_rule_versions`; deleting a rule removes it here and
-- keeps its history there.
CREATE TABLE collection_rules (
    id TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- The rule as a JSON object, as it was checked.
    definition TEXT NOT NULL,
    created_by TEXT,
    created_at TEXT NOT NULL,
    updated_by TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX collection_rules_name ON collection_rules (collection_id, name);

-- Every version of every collection rule: created, updated or deleted, by
-- whom and when, with the text as submitted.
CREATE TABLE collection_rule_versions (
    rule_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    collection_id TEXT NOT NULL,
    change TEXT NOT NULL,
    definition TEXT NOT NULL,
    source TEXT NOT NULL,
    author_user_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (rule_id, version)
);

-- One row; its revision grows with every rule change (in the change's
-- transaction), so engines know when their cached rules are stale.
CREATE TABLE rules_revision (
    id BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO rules_revision (id, revision) VALUES (1, 0);

-- What rules did for an event: one row per rule action (item changes of a
-- rule count as one), written once the action is done. A redelivered event
-- skips the actions it finds here; an event caused by an action finds its
-- chain depth and the rule that caused it (by entity and resulting version).
CREATE TABLE rule_firings (
    event_id TEXT NOT NULL,
    rule_key TEXT NOT NULL,
    action_index BIGINT NOT NULL,
    entity_id TEXT NOT NULL,
    result_version BIGINT,
    depth BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (event_id, rule_key, action_index)
);
CREATE INDEX rule_firings_created ON rule_firings (created_at);

-- Every webhook delivery attempt and how it ended: delivered, failed (a 4xx
-- or a refused address, not retried), retrying, or dead (attempts used up).
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    rule_key TEXT NOT NULL,
    rule_name TEXT NOT NULL,
    action_index BIGINT NOT NULL,
    collection_id TEXT,
    url TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    status_code BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_action ON webhook_deliveries (event_id, rule_key, action_index);
CREATE INDEX webhook_deliveries_collection ON webhook_deliveries (collection_id, id);
