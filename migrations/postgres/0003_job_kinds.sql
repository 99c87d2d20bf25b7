-- The class of concurrency slot a job takes ('transfer' for fetches: --max-fetches and
-- --max-fetches-per-customer), from its kind; NULL for jobs held to no such limit.
ALTER TABLE jobs ADD COLUMN slot TEXT;
UPDATE jobs SET slot = 'transfer' WHERE job_type = 'FetchDisk';
-- Set, with item_type/item_id, in the transaction that commits a job's result: an attempt
-- resumed after its node died reports that result instead of doing the work again.
ALTER TABLE jobs ADD COLUMN result_committed BIGINT NOT NULL DEFAULT 0;
UPDATE jobs SET result_committed = 1
    WHERE status = 2 AND job_type = 'FetchDisk' AND item_id IS NOT NULL;
UPDATE jobs SET result_committed = 1, item_type = 'image',
    item_id = (SELECT MIN(i.id) FROM images i WHERE i.source_job_id = jobs.id)
    WHERE status = 2 AND job_type = 'CreateImage'
      AND EXISTS (SELECT 1 FROM images i WHERE i.source_job_id = jobs.id);
-- Which worker pool runs a job ('quick': server power; 'long': fetches, image copies), from
-- its kind: long work never takes the workers quick jobs need.
ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT 'long';
UPDATE jobs SET lane = 'quick' WHERE job_type IN ('StartServer', 'StopServer', 'DestroyServer');
-- What the claim orders customers by: their running jobs, and when they last started one.
CREATE INDEX jobs_by_customer_status ON jobs(customer_id, status, lease_expires);
CREATE INDEX jobs_by_customer_started ON jobs(customer_id, started);
