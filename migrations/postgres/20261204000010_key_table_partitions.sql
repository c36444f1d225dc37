-- The key table, split into 64 partitions by a hash of the media id. Its
-- scheduled rewrite (`VACUUM FULL media_keys`, which is what removes
-- shredded keys from its pages) then takes one partition at a time, each in
-- its own transaction, so a request waits at most for the rewrite of one
-- partition, 1/64 of the table, instead of for the whole table (23 s at 10
-- million media). A key is still found by its media id alone: the hash
-- names its partition.
--
-- The copy takes about a minute per 10 million media and holds off uploads,
-- downloads and deletes meanwhile. Dropping the old table removes its file,
-- shredded keys' old tuples with it, as a rewrite would.
ALTER TABLE media_keys RENAME TO media_keys_unpartitioned;
ALTER INDEX media_keys_pkey RENAME TO media_keys_unpartitioned_pkey;
ALTER INDEX media_keys_kek_id RENAME TO media_keys_unpartitioned_kek_id;

CREATE TABLE media_keys (
    media_id    TEXT PRIMARY KEY REFERENCES media (id) ON DELETE CASCADE,
    kek_id      TEXT NOT NULL,
    wrapped_dek BYTEA NOT NULL
) PARTITION BY HASH (media_id);
DO $$
BEGIN
    FOR remainder IN 0..63 LOOP
        EXECUTE format(
            'CREATE TABLE media_keys_%s PARTITION OF media_keys FOR VALUES WITH (MODULUS 64, REMAINDER %s)',
            lpad(remainder::text, 2, '0'), remainder);
    END LOOP;
END $$;
-- Which keys live media still need: read at start-up and by key rotation.
CREATE INDEX media_keys_kek_id ON media_keys (kek_id);

INSERT INTO media_keys (media_id, kek_id, wrapped_dek)
    SELECT media_id, kek_id, wrapped_dek FROM media_keys_unpartitioned;
DROP TABLE media_keys_unpartitioned;
