-- The format an image file was fetched in (raw, iso, qcow2, vmdk, vhd, vhdx), shown by GetDisk
-- and ListImages as `source_format`; the volume itself is always raw. Carried to the disks,
-- clones and images made from those bits; NULL when they never came from FetchDisk.
ALTER TABLE disks ADD COLUMN source_format TEXT;
ALTER TABLE images ADD COLUMN source_format TEXT;
