//! The database: SQLite (embedded default) or PostgreSQL (several nodes sharing one queue).
//!
//! Queries are written once, in the SQL both engines accept (`$1` placeholders, `RETURNING`,
//! BIGINT ids and epoch-millisecond timestamps, 0/1 integers for flags), and run through
//! sqlx's `Any` driver. The few places where the engines differ (claiming jobs with
//! `SKIP LOCKED`, starting write transactions, locking a VDC to delete it, reading a page of
//! jobs as one row on SQLite) ask [`Db::backend`]. Each engine has its own migrations folder
//! because DDL is where they differ most.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// The job system's own few connections: see [`Db::lease_pool`].
    lease_pool: AnyPool,
    backend: Backend,
    /// The last [`Db::check`]'s outcome and when it was made, for [`Db::recent_check`].
    last_check: std::sync::Arc<tokio::sync::Mutex<Option<(std::time::Instant, CheckOutcome)>>>,
}

/// Whether the database answered a check, or what was wrong.
pub type CheckOutcome = Result<(), String>;

/// Connections of the pool API calls and job work share.
const SQLITE_POOL: u32 = 8;
const POSTGRES_POOL: u32 = 16;
/// Connections of the job system's lease pool: a heartbeat or a claim holds one for one short
/// statement, so a few serve every worker of a node.
const LEASE_POOL: u32 = 4;

/// A write transaction. It reads and writes like the connection it holds (`&mut tx` is a
/// `&mut AnyConnection`), writes what was registered with [`Tx::before_commit`] as its last
/// statements, and runs what was registered with [`Tx::after_commit`] once it has committed:
/// a job queued in it wakes the workers exactly when it exists for them.
pub struct Tx {
    inner: Transaction<'static, Any>,
    before_commit: Vec<BeforeCommit>,
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
}

/// Statements a transaction runs last, inside itself, when it commits.
pub type BeforeCommit =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<(), sqlx::Error>> + Send>;

impl Tx {
    /// Runs `f` on the transaction's connection when [`Tx::commit`] is called, before the
    /// commit: what it writes commits with the rest or not at all, and its error is the
    /// commit's (the transaction then rolls back). Never run if the transaction is dropped.
    pub fn before_commit(
        &mut self,
        f: impl for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<(), sqlx::Error>>
        + Send
        + 'static,
    ) {
        self.before_commit.push(Box::new(f));
    }

    /// Runs `f` after this transaction commits; never if it rolls back.
    pub fn after_commit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(f));
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        for f in std::mem::take(&mut self.before_commit) {
            f(&mut self.inner).await?;
        }
        self.inner.commit().await?;
        for f in self.after_commit {
            f();
        }
        Ok(())
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

impl Db {
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL (use sqlite:// or postgres://)");
        };
        let options = AnyConnectOptions::from_str(url).context("parsing the database URL")?;
        if backend == Backend::Postgres {
            probe(&options, url).await?;
        }
        let size = match backend {
            // One writer at a time anyway; a few readers in WAL mode.
            Backend::Sqlite => SQLITE_POOL,
            Backend::Postgres => POSTGRES_POOL,
        };
        // A read-only opening (`mode=ro`: `extility nodes`, `backup`) cannot set the journal
        // mode, and has nothing to make durable.
        let read_only = url.contains("mode=ro") && !url.contains("mode=rw");
        let pool = pool_options(backend, size, read_only)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("connecting to the {backend:?} database"))?;
        // Connected when first used; an in-memory SQLite database (a connection's own) can
        // only be shared through the one pool.
        let lease_pool = if url.contains(":memory:") || url.contains("mode=memory") {
            pool.clone()
        } else {
            pool_options(backend, LEASE_POOL, read_only).connect_lazy_with(options)
        };
        Ok(Db {
            pool,
            lease_pool,
            backend,
            last_check: Default::default(),
        })
    }
}

/// How long a caller waits for a PostgreSQL connection, connecting included, before its call
/// fails with `SERVICE_UNAVAILABLE`: an unreachable or restarting database answers within
/// seconds, never after a client's own timeout. (sqlx retries a refused connection until then.)
pub const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long one PostgreSQL statement may run (`statement_timeout`): a database too slow to
/// answer is unavailable, not a hang. No statement of the server's runs near this long.
const POSTGRES_STATEMENT_TIMEOUT: &str = "SET statement_timeout = '30s'";
/// How long a caller waits for a SQLite connection: a file that is always there, whose
/// connections are all busy only under load (writers queue on its lock with `busy_timeout`).
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The options of a pool of `size` connections: how long a caller waits for one, and what each
/// connection is set to.
fn pool_options(backend: Backend, size: u32, read_only: bool) -> AnyPoolOptions {
    let acquire_timeout = match backend {
        Backend::Sqlite => SQLITE_ACQUIRE_TIMEOUT,
        Backend::Postgres => POSTGRES_ACQUIRE_TIMEOUT,
    };
    let pool_options = AnyPoolOptions::new()
        .acquire_timeout(acquire_timeout)
        .max_connections(size);
    match backend {
        Backend::Sqlite if read_only => pool_options.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 30000;").await?;
                Ok(())
            })
        }),
        // `synchronous = FULL`: a commit is on disk when it returns, even in WAL mode. The
        // rows committed name files just made (a volume moved into place, a new disk), and
        // a power cut must never leave a row naming a missing file.
        Backend::Sqlite => pool_options.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000;",
                )
                .await?;
                Ok(())
            })
        }),
        Backend::Postgres => pool_options.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(POSTGRES_STATEMENT_TIMEOUT).await?;
                Ok(())
            })
        }),
    }
}

impl Db {
    /// The SQLite URL of the default database file inside a data directory.
    pub fn default_sqlite_url(data_dir: &std::path::Path) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("extility.db").display()
        )
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Brings the schema up to this build's newest migration. A database a newer release
    /// migrated (a migration this build has not got) is refused, naming both versions: this
    /// build would misread what the newer one writes, and never migrates down.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let known = self.known_schema_version();
        if let Some(applied) = self.schema_version().await?
            && applied > known
        {
            anyhow::bail!(
                "the database's schema is at version {applied}, newer than this extility knows \
                 (up to version {known}): a newer release migrated it. Run that release or a \
                 newer one against this database; extility never migrates a schema down"
            );
        }
        self.migrator()
            .run(&self.pool)
            .await
            .context("applying database migrations")
    }

    /// The newest migration this build has: the schema version it makes and understands.
    pub fn known_schema_version(&self) -> i64 {
        self.migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest migration applied to the database, or `None` for a database no node has
    /// migrated yet.
    pub async fn schema_version(&self) -> anyhow::Result<Option<i64>> {
        let mut conn = self.pool.acquire().await?;
        let exists: i64 = match self.backend {
            Backend::Sqlite => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master \
                     WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(&mut *conn)
                .await?
            }
            Backend::Postgres => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
                )
                .fetch_one(&mut *conn)
                .await?
            }
        };
        if exists == 0 {
            return Ok(None);
        }
        let version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut *conn)
                .await?;
        Ok(version)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The job system's own pool, for what must never wait behind API calls: job heartbeats
    /// and lease renewals, claims, a job's end, and this node's sign of life. Customers' calls
    /// (bounded per customer by `ops::inflight`) and the work jobs do use [`Db::pool`]; however
    /// long they hold it, leases are renewed. (On SQLite, whose writes take turns on one
    /// lock, a heartbeat still waits for the write being made, never for a connection.)
    pub fn lease_pool(&self) -> &AnyPool {
        &self.lease_pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes cannot fail with
    /// SQLITE_BUSY when another writer got in between; it waits on `busy_timeout` instead.
    pub async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        self.begin_write_on(&self.pool).await
    }

    /// [`Db::begin_write`] on the job system's own pool ([`Db::lease_pool`]): a job's end.
    pub async fn begin_lease_write(&self) -> Result<Tx, sqlx::Error> {
        self.begin_write_on(&self.lease_pool).await
    }

    async fn begin_write_on(&self, pool: &AnyPool) -> Result<Tx, sqlx::Error> {
        let inner = match self.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        Ok(Tx {
            inner,
            before_commit: Vec::new(),
            after_commit: Vec::new(),
        })
    }

    /// Whether the database answers a trivial statement within `within`, and if not what is
    /// wrong (never the URL's credentials): `/ready` and `/health`. The outcome is kept for
    /// `max_age`, so that probes polled by many clients cost the database one statement per
    /// `max_age`; checks made meanwhile wait for the one running.
    pub async fn check(&self, max_age: Duration, within: Duration) -> CheckOutcome {
        let mut last = self.last_check.lock().await;
        if let Some((at, outcome)) = last.as_ref()
            && at.elapsed() < max_age
        {
            return outcome.clone();
        }
        let select = sqlx::query("SELECT 1").execute(&self.pool);
        let outcome = match tokio::time::timeout(within, select).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {} s", within.as_secs())),
        };
        *last = Some((std::time::Instant::now(), outcome.clone()));
        outcome
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.lease_pool.close().await;
    }
}

/// How long a first connection to PostgreSQL may take before startup gives up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection to PostgreSQL before the pool is made, so that a database out of reach is
/// said at once and plainly (the OS's error, the host and port) rather than as the pool's
/// "timed out" after its whole acquire timeout.
async fn probe(options: &AnyConnectOptions, url: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let place = host_and_port(url);
    match tokio::time::timeout(PROBE_TIMEOUT, AnyConnection::connect_with(options)).await {
        Err(_) => anyhow::bail!(
            "PostgreSQL at {place} did not answer within {} s: is the host right, and its port \
             open to this machine?",
            PROBE_TIMEOUT.as_secs()
        ),
        Ok(Err(err)) => Err(anyhow::Error::new(err).context(format!(
            "cannot connect to PostgreSQL at {place} (check --database-url / DATABASE_URL, and \
             that the server runs)"
        ))),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
    }
}

/// `host:port` of a database URL, never its user or password.
fn host_and_port(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!(
            "{}:{}",
            parsed.host_str().unwrap_or("localhost"),
            parsed.port().unwrap_or(5432)
        ),
        Err(_) => "the URL given".to_string(),
    }
}

/// The file of a SQLite URL (`sqlite://PATH?...`), if it names one.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// Milliseconds since the Unix epoch: the one time format stored in the database.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// After rows were inserted into `table` with explicit ids (a catalogue's fixed ids): on
/// PostgreSQL, whose identity columns do not see explicit ids, moves the table's identity past
/// them. (`table` is one of the crate's own table names, never input.)
pub async fn ids_after_explicit_ones(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &'static str,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(conn).await?;
    }
    Ok(())
}

/// Flags are stored as 0/1 integers on both engines.
pub fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// Whether a statement failed on a unique constraint (a name or an address taken by a
/// concurrent call), on either engine.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_and_files_of_urls_show_no_credentials() {
        assert_eq!(
            host_and_port("postgres://u:secret@db.example.com:6543/x"),
            "db.example.com:6543"
        );
        assert_eq!(host_and_port("postgres://u@10.0.0.5/x"), "10.0.0.5:5432");
        assert_eq!(
            sqlite_file("sqlite:///tmp/d/extility.db?mode=rwc").unwrap(),
            std::path::Path::new("/tmp/d/extility.db")
        );
        assert_eq!(
            sqlite_file("sqlite://./data/extility.db").unwrap(),
            std::path::Path::new("./data/extility.db")
        );
    }

    #[tokio::test]
    async fn a_closed_postgres_port_is_said_at_once_with_its_address() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The probe's own words (the OS's "refused", the place), not the pool's "timed out".
        let err = Db::connect(&format!("postgres://u:pw@127.0.0.1:{port}/x"))
            .await
            .err()
            .expect("nothing listens there");
        let text = format!("{err:#}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("refused"), "{text}");
        assert!(!text.contains("pw@"), "{text}");
    }

    #[tokio::test]
    async fn sqlite_commits_are_durable_when_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&Db::default_sqlite_url(dir.path()))
            .await
            .unwrap();
        let mut conn = db.pool().acquire().await.unwrap();
        let mode: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, 2, "synchronous = FULL");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
    }
}
