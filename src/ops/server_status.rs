//! The statuses of the `servers` table, which every domain reads (quota counts running
//! servers, the network plan wires their NICs, storage changes only a stopped server's disks,
//! the metrics and the nodes count them), and the one lock other domains take on a server's
//! row. Statuses are bound as parameters (`ServerStatus::code`), never written as numbers in
//! SQL. The rows themselves are written only by `ops::server`.

use sqlx::AnyConnection;

use crate::error::{ApiError, ApiResult};

/// Server status codes, as the Extility API numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum ServerStatus {
    Error = 1,
    Running = 2,
    Starting = 3,
    Stopping = 4,
    Stopped = 5,
}

impl ServerStatus {
    /// The statuses of a server whose VM holds its node's processors and memory (and the
    /// customer's running quotas), as codes to bind: `status IN ($a, $b, $c)`.
    pub const HOLDING_A_NODE: [i64; 3] = [
        ServerStatus::Starting as i64,
        ServerStatus::Running as i64,
        ServerStatus::Stopping as i64,
    ];

    pub fn code(self) -> i64 {
        self as i64
    }

    /// The name shown beside the number (`status_name`).
    pub fn name_of(code: i64) -> &'static str {
        match code {
            1 => "error",
            2 => "running",
            3 => "starting",
            4 => "stopping",
            5 => "stopped",
            _ => "unknown",
        }
    }

    pub fn describe(code: i64) -> &'static str {
        match code {
            1 => "in error",
            2 => "running",
            3 => "starting",
            4 => "stopping",
            5 => "stopped",
            _ => "in an unknown state",
        }
    }
}

/// Locks a server that must stay stopped (or in error: no VM) for what the caller is about to
/// do, and fails with CONFLICT if it is not. On PostgreSQL the conditional update waits for a
/// concurrent start to commit and then sees its status.
pub async fn lock_stopped_server(
    conn: &mut AnyConnection,
    server_id: i64,
    doing: &str,
) -> ApiResult<()> {
    let locked =
        sqlx::query("UPDATE servers SET status = status WHERE id = $1 AND status IN ($2, $3)")
            .bind(server_id)
            .bind(ServerStatus::Stopped.code())
            .bind(ServerStatus::Error.code())
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if locked == 1 {
        return Ok(());
    }
    let status: Option<i64> = sqlx::query_scalar("SELECT status FROM servers WHERE id = $1")
        .bind(server_id)
        .fetch_optional(conn)
        .await?;
    Err(ApiError::Conflict(format!(
        "server {server_id} is {}; stop it before {doing}",
        ServerStatus::describe(status.unwrap_or(0))
    )))
}
