-- PostgreSQL stops keeping planner statistics of wrapped keys in this
-- version. SQLite keeps none: the service never runs ANALYZE there, so no
-- sqlite_stat table holds a sample of any column. The version keeps both
-- dialects' numbering in step.
SELECT 1;
