-- What an unfinished job will make, written when it is queued, so that the quota and
-- DeleteVDC count it without decoding the parameters of kinds they do not own:
-- `reserved_bytes`, the storage it will make (a fetched disk or image, an image copied from a
-- disk), and `vdc_id`, the VDC it will make a disk in.
ALTER TABLE jobs ADD COLUMN reserved_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN vdc_id BIGINT;
UPDATE jobs SET
    reserved_bytes = COALESCE((params::jsonb ->> 'disk_size')::BIGINT, 0),
    vdc_id = CASE WHEN COALESCE((params::jsonb ->> 'make_image')::BOOLEAN, FALSE) THEN NULL
                  ELSE (params::jsonb ->> 'vdc_id')::BIGINT END
    WHERE job_type = 'FetchDisk';
UPDATE jobs SET
    reserved_bytes = COALESCE((SELECT capacity FROM disks WHERE disks.id = jobs.item_id), 0)
    WHERE job_type = 'CreateImage' AND item_type = 'disk';
