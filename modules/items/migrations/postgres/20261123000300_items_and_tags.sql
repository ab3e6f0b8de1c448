CREATE TABLE items (
    id TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    body TEXT,
    source_url TEXT,
    -- The item's tag names as a JSON array, kept in step with item_tags so
    -- reads need no join; item_tags is what filters and counts use.
    tags TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}',
    version BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- Keyset pagination: one index per sort key, ending in id for ties.
CREATE INDEX items_by_created ON items (collection_id, created_at, id);
CREATE INDEX items_by_updated ON items (collection_id, updated_at, id);
CREATE INDEX items_by_title ON items (collection_id, title, id);

CREATE TABLE tags (
    id TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    UNIQUE (collection_id, name)
);

CREATE TABLE item_tags (
    item_id TEXT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    tag_id TEXT NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    PRIMARY KEY (item_id, tag_id)
);
CREATE INDEX item_tags_by_tag ON item_tags (tag_id, item_id);
