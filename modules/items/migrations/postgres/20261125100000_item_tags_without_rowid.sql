-- SQLite only: there item_tags becomes a WITHOUT ROWID table (see the
-- SQLite migration of the same name). A PostgreSQL table has no rowid; its
-- item_tags stays as it is.
SELECT 1;
