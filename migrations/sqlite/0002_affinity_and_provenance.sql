-- Jobs that must run where a server's VM runs (stop, destroy) name that node.
ALTER TABLE jobs ADD COLUMN target_node TEXT;
-- The job that made an image, so a job resumed after a crash finds what it already made.
ALTER TABLE images ADD COLUMN source_job_id INTEGER;
CREATE INDEX images_by_source_job ON images(source_job_id);
-- Usage lines for disks made from billed images.
ALTER TABLE usage_records ADD COLUMN disk_id INTEGER;
-- Nodes serving this database, and when each last showed it was alive (every 2 s). A job
-- aimed at a node that stopped showing it may be run by any node.
CREATE TABLE nodes (
    id        TEXT PRIMARY KEY,
    last_seen INTEGER NOT NULL
);
