//! Hygiene reports: what the last check of an image or disk found, as the `hygiene_reports`
//! table keeps it (this module is the only one that writes it) and as GetImageReport,
//! GetDiskReport, ListImages and PublishImage show it.
//!
//! One row per image and per disk at most, replaced by each new check; none means "not
//! checked". An image's row goes when the image is deleted ([`forget_image`], called in
//! DeleteImage's transaction), a disk's with the disk ([`forget_disk`]).

use sqlx::AnyConnection;

use crate::error::{ApiError, ApiResult};
use crate::hygiene::{Report, Severity};
use crate::ops::wire::Timestamp;
use crate::wire_struct;

/// `status` of an image or disk nobody has checked.
pub const NOT_CHECKED: &str = "not_checked";
pub const CLEAN: &str = "clean";
pub const FINDINGS: &str = "findings";
pub const UNREADABLE: &str = "unreadable";

wire_struct! {
    /// One thing a check found: `code` (stable: `PASSWORD_HASH`, `EMPTY_PASSWORD`,
    /// `AUTHORIZED_KEYS`, `SSH_HOST_KEYS`, `LOGS`, `SHELL_HISTORY`, `MACHINE_ID`,
    /// `CLOUD_INIT_STATE`, `DHCP_LEASES`, `PERSISTENT_NET_RULES`, `TMP_FILES`,
    /// `NO_FIRST_BOOT_AGENT`), `severity` (`high`: one server made from the image could log in
    /// to or impersonate another; `medium`; `low`), the `paths` inside the image, and what to do
    /// about it (`detail`).
    pub struct HygieneFinding as "HygieneFinding" {
        pub code: String,
        pub severity: String,
        pub paths: Vec<String>,
        pub detail: String,
    }
}

wire_struct! {
    /// The last check of an image (or disk): `status` is `not_checked`, `clean`, `findings` or
    /// `unreadable` (`reason` then says why); `highest_severity` the highest severity among
    /// the findings (`high`, `medium`, `low`; nil when there are none); `filesystems` what
    /// was read (`/dev/sda1 ext4 /`); `findings` highest severity first; `checked` when, and
    /// by which job (`job_id`).
    pub struct HygieneReport as "HygieneReport" {
        pub image_id: Option<i64>,
        pub disk_id: Option<i64>,
        pub status: String,
        pub highest_severity: Option<String>,
        pub filesystems: Vec<String>,
        pub findings: Vec<HygieneFinding>,
        pub reason: Option<String>,
        pub checked: Option<Timestamp>,
        pub job_id: Option<i64>,
    }
}

/// What was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Image(i64),
    Disk(i64),
}

impl Subject {
    fn column(self) -> (&'static str, i64) {
        match self {
            Subject::Image(id) => ("image_id", id),
            Subject::Disk(id) => ("disk_id", id),
        }
    }
}

/// How a check ended, as it is stored.
pub enum Outcome<'a> {
    Read(&'a Report),
    /// The engine could not read it; the reason.
    Unreadable(&'a str),
}

pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
    }
}

/// The wire name of a finding's code (the engine's serde name).
fn code_name(code: crate::hygiene::FindingCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Records a check's outcome for `subject`, replacing the one before, in the caller's
/// transaction (a job's fenced one).
pub async fn store(
    conn: &mut AnyConnection,
    subject: Subject,
    outcome: Outcome<'_>,
    job_id: i64,
) -> ApiResult<()> {
    let (status, highest, report) = match outcome {
        Outcome::Read(report) => {
            let highest = report.findings.iter().map(|f| f.severity).max();
            let status = if highest.is_some() { FINDINGS } else { CLEAN };
            let json = serde_json::to_string(report).map_err(ApiError::internal)?;
            (status, highest.map(severity_name), json)
        }
        Outcome::Unreadable(reason) => (
            UNREADABLE,
            None,
            serde_json::json!({ "reason": reason }).to_string(),
        ),
    };
    let (column, id) = subject.column();
    forget(&mut *conn, subject).await?;
    let sql = format!(
        "INSERT INTO hygiene_reports ({column}, status, highest, report, job_id, checked) \
         VALUES ($1, $2, $3, $4, $5, $6)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(status)
        .bind(highest)
        .bind(report)
        .bind(job_id)
        .bind(crate::db::now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn forget(conn: &mut AnyConnection, subject: Subject) -> ApiResult<()> {
    let (column, id) = subject.column();
    let sql = format!("DELETE FROM hygiene_reports WHERE {column} = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes an image's report (the image is being deleted).
pub async fn forget_image(conn: &mut AnyConnection, image_id: i64) -> ApiResult<()> {
    forget(conn, Subject::Image(image_id)).await
}

/// Removes a disk's report (the disk is being deleted).
pub async fn forget_disk(conn: &mut AnyConnection, disk_id: i64) -> ApiResult<()> {
    forget(conn, Subject::Disk(disk_id)).await
}

/// `(status, highest, report, job_id, checked)`
type ReportRow = (String, Option<String>, String, Option<i64>, i64);

/// The stored report of `subject` (one the caller may read: the caller checks), or "not
/// checked".
pub async fn load(conn: &mut AnyConnection, subject: Subject) -> ApiResult<HygieneReport> {
    let (column, id) = subject.column();
    let sql = format!(
        "SELECT status, highest, report, job_id, checked FROM hygiene_reports WHERE {column} = $1"
    );
    let row: Option<ReportRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    let (image_id, disk_id) = match subject {
        Subject::Image(id) => (Some(id), None),
        Subject::Disk(id) => (None, Some(id)),
    };
    let mut shown = HygieneReport {
        image_id,
        disk_id,
        status: NOT_CHECKED.to_string(),
        highest_severity: None,
        filesystems: Vec::new(),
        findings: Vec::new(),
        reason: None,
        checked: None,
        job_id: None,
    };
    let Some((status, highest, report, job_id, checked)) = row else {
        return Ok(shown);
    };
    shown.highest_severity = highest;
    shown.checked = Some(Timestamp(checked));
    shown.job_id = job_id;
    if status == UNREADABLE {
        let value: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
        shown.reason = value["reason"].as_str().map(str::to_string);
    } else {
        let report: Report = serde_json::from_str(&report).map_err(ApiError::internal)?;
        shown.filesystems = report.filesystems;
        shown.findings = report
            .findings
            .into_iter()
            .map(|f| HygieneFinding {
                code: code_name(f.code),
                severity: severity_name(f.severity).to_string(),
                paths: f.paths,
                detail: f.detail,
            })
            .collect();
    }
    shown.status = status;
    Ok(shown)
}

/// Fails with IMAGE_NOT_CLEAN unless the image's last check (`report`, as [`load`] gives it)
/// read it and found nothing of high severity: what PublishImage asks under
/// `--publish-requires-clean`.
pub fn ensure_clean_enough(image_id: i64, report: &HygieneReport) -> ApiResult<()> {
    let findings = match report.status.as_str() {
        NOT_CHECKED => "it was never checked: run CheckImage (or CleanImage) first".to_string(),
        UNREADABLE => format!(
            "its check could not read it ({})",
            report.reason.as_deref().unwrap_or("no reason given")
        ),
        _ => {
            let high: Vec<String> = report
                .findings
                .iter()
                .filter(|f| f.severity == "high")
                .map(|f| format!("{}: {}", f.code, f.paths.join(", ")))
                .collect();
            if high.is_empty() {
                return Ok(());
            }
            format!(
                "high-severity findings {}; CleanImage makes a clean copy",
                high.join("; ")
            )
        }
    };
    Err(ApiError::ImageNotClean { image_id, findings })
}
