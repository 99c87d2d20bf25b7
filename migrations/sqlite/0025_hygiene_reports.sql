-- Image hygiene (issue 26): the last check of an image (CheckImage, or CleanImage for the image
-- it made) or of a disk (CheckDisk). Written only by ops::storage::hygiene; one row per image
-- and per disk at most (a new check replaces it). No row: never checked. `status` is `clean`,
-- `findings` or `unreadable`; `highest` the highest severity found (`low`, `medium`, `high`;
-- NULL when clean or unreadable); `report` the engine's report as JSON (file systems and
-- findings), or for `unreadable` the reason. An image's row goes when the image is deleted, a
-- disk's when the disk is.
CREATE TABLE hygiene_reports (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id  INTEGER REFERENCES images(id),
    disk_id   INTEGER,
    status    TEXT NOT NULL,
    highest   TEXT,
    report    TEXT NOT NULL,
    job_id    INTEGER,
    checked   INTEGER NOT NULL
);
CREATE UNIQUE INDEX hygiene_reports_by_image ON hygiene_reports(image_id);
CREATE UNIQUE INDEX hygiene_reports_by_disk ON hygiene_reports(disk_id);
