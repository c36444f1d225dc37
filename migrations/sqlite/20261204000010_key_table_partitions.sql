-- PostgreSQL splits its key table into partitions in this version, so that
-- its scheduled rewrite locks one partition at a time. SQLite needs no
-- rewrite (it zeroes deleted content as it goes: `secure_delete`), so its
-- schema is unchanged; the version keeps both dialects' numbering in step.
SELECT 1;
