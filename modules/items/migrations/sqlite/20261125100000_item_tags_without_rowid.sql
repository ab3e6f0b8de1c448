-- item_tags as a WITHOUT ROWID table: its primary key (item_id, tag_id) is
-- the table's own b-tree, so a link is stored once plus its by-tag index
-- entry. As a rowid table every link also went into a hidden rowid b-tree
-- and the primary key was a separate index: three b-tree inserts per tag
-- of every item written, now two. Rows are copied as they are.
CREATE TABLE item_tags_rebuilt (
    item_id TEXT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    tag_id TEXT NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    PRIMARY KEY (item_id, tag_id)
) WITHOUT ROWID;
INSERT INTO item_tags_rebuilt (item_id, tag_id) SELECT item_id, tag_id FROM item_tags;
DROP TABLE item_tags;
ALTER TABLE item_tags_rebuilt RENAME TO item_tags;
CREATE INDEX item_tags_by_tag ON item_tags (tag_id, item_id);
