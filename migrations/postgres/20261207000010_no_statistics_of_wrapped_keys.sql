-- The planner's statistics must hold no wrapped key. ANALYZE (run by
-- autovacuum as the key table grows) copies up to a hundred values of each
-- column of each partition into pg_statistic as a histogram, and every
-- wrapped key is unique, so a sample of real keys would sit in the catalog,
-- readable by plain SQL, after their media were shredded and the key table
-- rewritten. No query filters or sorts by a wrapped key, so the planner
-- loses nothing by having none.
--
-- A statistics target of 0 stops ANALYZE from sampling the column again
-- (on the partitioned table, so on every partition), but leaves the
-- statistics it already made; changing the column to its own type removes
-- them (there is nothing to rewrite: the type is the same).
ALTER TABLE media_keys ALTER COLUMN wrapped_dek SET STATISTICS 0;
ALTER TABLE media_keys ALTER COLUMN wrapped_dek TYPE BYTEA;
