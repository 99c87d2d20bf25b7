-- A FetchDisk job is billed its fetched bytes once: each attempt looks for the job's line
-- before it adds one (ops::storage::usage::record_bytes_fetched).
CREATE INDEX usage_by_job ON usage_records(job_id);
