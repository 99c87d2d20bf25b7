-- Image provenance (issue 11): where an image's bits came from, kept even after it is deleted.
-- `source_image_id`: the image whose bits a CreateImage copy carries, through its disk
-- (`disks.image_id`, kept by clones and reverts); NULL for an image made from a blank disk or
-- fetched. Following it leads to an image's root, whose product offer and publications still
-- govern its derivatives (ops::provenance).
ALTER TABLE images ADD COLUMN source_image_id BIGINT;
-- DeleteImage keeps the row as a tombstone (no volume, no shares, `deleted` set): derivatives
-- still find who owned their bits and what they are billed under. Nothing lists a tombstone.
ALTER TABLE images ADD COLUMN deleted BIGINT;
-- Whether the recipients of a publication may publish the images they derive from it.
ALTER TABLE image_shares ADD COLUMN allow_republish BIGINT NOT NULL DEFAULT 0;
-- Images made before this migration: the disk their CreateImage job copied, if it still exists.
UPDATE images SET source_image_id = (
    SELECT d.image_id FROM jobs j JOIN disks d
      ON d.id = (CASE WHEN j.job_type = 'CreateImage'
                      THEN (j.params::json ->> 'disk_id')::bigint END)
    WHERE j.id = images.source_job_id AND j.job_type = 'CreateImage'
      AND d.image_id IS NOT NULL AND d.image_id < images.id
      AND EXISTS (SELECT 1 FROM images s WHERE s.id = d.image_id))
WHERE source_job_id IS NOT NULL;
