//! The audit trail, and the only module that writes `audit_events`.
//!
//! One row for each call of an operation that changes something (`write` in `operations!`:
//! whatever the outcome; written by the transaction that makes the change, as it commits, and
//! completed once the operation has returned: [`CallRecord`]),
//! for each command-line command that changes something (`customer add`, `customer
//! set-quota`, `billing-entity add`), for each failed login and for each interactive console
//! opened (`ops::server::console`: `OpenScreenConsole`, `OpenSerialConsole`). A row says when, which customer
//! called (none for the command line) and with which authentication token (none for a
//! password), from which address and through which adapter, the operation, the ids it touched,
//! and its outcome: `OK` or the error code.
//!
//! The ids are the only values taken from a call: those of the arguments whose names end in
//! `_id` or `_ids`, and the id of what the result is (a `job_id`, or the first field of a
//! returned record when it is its id: `disk_id`, `server_id` and the `disk_id`s of its
//! disks). Names, URLs, credentials, passwords and tokens never reach the table.
//!
//! Failed logins come from anyone, as fast as they like, so nobody waits for them to be
//! written: they go through a bounded queue to one background writer, which writes them in
//! batches. When the queue is full they are dropped and counted, and the writer logs the count.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};
use sqlx::AnyConnection;
use tokio::sync::mpsc;

use super::wire::{StructType, Timestamp, WireType};
use super::{Ctx, args};
use crate::db::{Db, Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ops::state::AppState;
use crate::wire_struct;

/// Through what a call came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Soap,
    Json,
    Cli,
    /// The web control panel (`crate::api::panel`).
    Panel,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Soap => "soap",
            Via::Json => "json",
            Via::Cli => "cli",
            Via::Panel => "panel",
        }
    }
}

/// Where a call comes from: the adapter, and the client's address (the TCP peer's; none for
/// the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub address: Option<IpAddr>,
    pub via: Via,
}

wire_struct! {
    /// One audit event: a call that changed something or tried to, or a failed login.
    /// `operation` is the API operation (`CreateDisk`), the command-line command
    /// (`customer add`) or `Login` (a failed login); `via` is `soap`, `json`, `panel` (the web
    /// control panel) or `cli`; `address` is the client's IP address (nil for the command
    /// line). `customer_uuid` is the caller (nil for the command line, and for a failed login
    /// whose e-mail is no customer's); `email` is the e-mail a failed login gave (never the password);
    /// `token_id` is the authentication token the call was made with, or that a failed login
    /// sent when it was one (expired or revoked; nil for a password). `ids` are
    /// the ids the call named and made, as `name=value` pairs separated by spaces, several
    /// values of a name separated by commas (`vdc_id=1 server_id=7 disk_id=8,9`). `outcome`
    /// is `OK` or the error code (`NOT_FOUND`, `UNAUTHENTICATED`, ...).
    pub struct AuditEvent as "AuditEvent" {
        pub audit_id: i64,
        pub time: Timestamp,
        pub customer_uuid: Option<String>,
        pub email: Option<String>,
        pub operation: String,
        pub via: String,
        pub address: Option<String>,
        pub ids: String,
        pub outcome: String,
        pub token_id: Option<i64>,
    }
}

/// The most ids one row keeps; more are counted (`+3 more`).
const MAX_IDS: usize = 64;

/// The ids a call touched, by name, in the order they were met, each once.
#[derive(Debug, Default)]
struct Ids {
    named: Vec<(&'static str, Vec<i64>)>,
    count: usize,
    left_out: usize,
}

fn is_id_name(name: &str) -> bool {
    name.ends_with("_id") || name.ends_with("_ids")
}

impl Ids {
    fn push(&mut self, name: &'static str, id: i64) {
        // Ids start at 1: 0 and -1 say "none" (`image_id` 0 is a blank disk, `vlan_id` -1 no
        // VLAN).
        if id <= 0 {
            return;
        }
        let at = match self.named.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                self.named.push((name, Vec::new()));
                self.named.len() - 1
            }
        };
        let values = &mut self.named[at].1;
        if values.contains(&id) {
            return;
        }
        if self.count >= MAX_IDS {
            self.left_out += 1;
            return;
        }
        values.push(id);
        self.count += 1;
    }

    /// A number, or an array of numbers; anything else is no id.
    fn push_value(&mut self, name: &'static str, value: &Value) {
        match value {
            Value::Number(n) => {
                if let Some(id) = n.as_i64() {
                    self.push(name, id);
                }
            }
            Value::Array(items) => {
                for item in items {
                    if let Some(id) = item.as_i64() {
                        self.push(name, id);
                    }
                }
            }
            _ => {}
        }
    }

    /// The id of what a result is: a scalar named `..._id`, or the records' ids.
    fn push_result(&mut self, name: &'static str, ty: &WireType, value: &Value) {
        match ty {
            WireType::Long if is_id_name(name) => self.push_value(name, value),
            WireType::Array(WireType::Long) if is_id_name(name) => self.push_value(name, value),
            WireType::Struct(s) => self.push_record(s, value),
            WireType::Array(WireType::Struct(s)) => {
                if let Value::Array(items) = value {
                    for item in items {
                        self.push_record(s, item);
                    }
                }
            }
            _ => {}
        }
    }

    /// A record's id is its first field when that is a number named `..._id` (`disk_id` of a
    /// Disk); the records it holds (a server's disks) add theirs.
    fn push_record(&mut self, s: &'static StructType, value: &Value) {
        if let Some(first) = s.fields.first()
            && first.ty == WireType::Long
            && first.name.ends_with("_id")
            && let Some(id) = value.get(first.name)
        {
            self.push_value(first.name, id);
        }
        for field in s.fields {
            if matches!(field.ty, WireType::Struct(_) | WireType::Array(_))
                && let Some(inner) = value.get(field.name)
            {
                self.push_result(field.name, &field.ty, inner);
            }
        }
    }
}

impl fmt::Display for Ids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, values) in &self.named {
            if values.is_empty() {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let values: Vec<String> = values.iter().map(i64::to_string).collect();
            write!(f, "{name}={}", values.join(","))?;
        }
        if self.left_out > 0 {
            write!(f, "{}+{} more", if first { "" } else { " " }, self.left_out)?;
        }
        Ok(())
    }
}

fn outcome_code<T>(outcome: &ApiResult<T>) -> &'static str {
    match outcome {
        Ok(_) => "OK",
        Err(err) => err.code(),
    }
}

/// One row of `audit_events`, about to be written.
#[derive(Debug)]
struct NewEvent<'a> {
    customer_id: Option<i64>,
    token_id: Option<i64>,
    operation: &'a str,
    via: Via,
    address: Option<IpAddr>,
    ids: String,
    outcome: &'a str,
}

async fn insert(db: &Db, event: NewEvent<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events \
         (created, customer_id, operation, via, address, ids, outcome, token_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(now_ms())
    .bind(event.customer_id)
    .bind(event.operation)
    .bind(event.via.as_str())
    .bind(event.address.map(|a| a.to_string()))
    .bind(event.ids)
    .bind(event.outcome)
    .bind(event.token_id)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// [`insert`] in the transaction of `conn`; returns the row's id.
async fn insert_on(conn: &mut AnyConnection, event: &NewEvent<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO audit_events \
         (created, customer_id, operation, via, address, ids, outcome, token_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(now_ms())
    .bind(event.customer_id)
    .bind(event.operation)
    .bind(event.via.as_str())
    .bind(event.address.map(|a| a.to_string()))
    .bind(event.ids.clone())
    .bind(event.outcome)
    .bind(event.token_id)
    .fetch_one(conn)
    .await
}

/// Completes the row `id` a call's transaction wrote with the call's outcome and ids.
async fn complete(db: &Db, id: i64, event: &NewEvent<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE audit_events SET ids = $1, outcome = $2 WHERE id = $3")
        .bind(event.ids.clone())
        .bind(event.outcome)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// A call of an operation that changes something, between its start and its end: what the
/// entry points `operations!` generates for `write` operations make.
///
/// The row is written in the same transaction as the change: while the operation runs (in
/// [`CallRecord::run`]), every write transaction it begins through [`Ctx::begin_write`]
/// carries the row, and the first of them to commit writes it as its last statement (outcome
/// `OK`, the ids of the arguments). A crash after that commit therefore never loses the row of
/// a change made, and a row that cannot be written undoes the change (the call fails). When
/// the operation has returned, [`CallRecord::finish`] completes that row with the outcome and
/// the ids of the result, or, when no transaction of the call committed (it failed, or changed
/// nothing through one), writes the row then.
#[derive(Debug)]
pub struct CallRecord {
    operation: &'static str,
    ids: Ids,
}

/// The row of a call in progress, which its transactions write ([`attach`]).
struct PendingRow {
    event: NewEvent<'static>,
    written: std::sync::Mutex<Written>,
}

/// Which row a call's transactions wrote: `tentative` once written in a transaction not yet
/// committed, `committed` once that transaction committed.
#[derive(Default)]
struct Written {
    tentative: Option<i64>,
    committed: Option<i64>,
}

tokio::task_local! {
    /// The row of the `write` call this task is running, if any (none while a `read` runs).
    static CALL: Option<Arc<PendingRow>>;
}

impl PendingRow {
    fn committed(&self) -> Option<i64> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committed
    }

    /// Writes the row in the transaction about to commit, unless one of the call's
    /// transactions already committed it.
    async fn write_in(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        if self.committed().is_some() {
            return Ok(());
        }
        let id = insert_on(conn, &self.event).await?;
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tentative = Some(id);
        Ok(())
    }

    /// The transaction that wrote the row committed.
    fn commit(&self) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = written.tentative.take() {
            written.committed.get_or_insert(id);
        }
    }
}

/// Makes `tx` write the row of the `write` call being run, if one is, just before it commits
/// ([`CallRecord`]); what [`Ctx::begin_write`] does to every transaction it begins.
pub(crate) fn attach(tx: &mut Tx) {
    let Ok(Some(row)) = CALL.try_with(Clone::clone) else {
        return;
    };
    let writer = row.clone();
    tx.before_commit(move |conn| Box::pin(async move { writer.write_in(conn).await }));
    tx.after_commit(move || row.commit());
}

/// Runs `f` as a call that changes nothing: a transaction it begins writes no row, even
/// inside a `write` call.
pub async fn run_read<F: std::future::Future>(f: F) -> F::Output {
    CALL.scope(None, f).await
}

impl CallRecord {
    /// Takes the ids from the call's arguments (`params`, by wire name): only those of the
    /// operation's parameters named `..._id` or `..._ids`. Nothing else of the arguments is
    /// kept.
    pub fn begin(
        operation: &'static str,
        params: &[&'static str],
        args: &Map<String, Value>,
    ) -> CallRecord {
        let mut ids = Ids::default();
        for name in params.iter().copied().filter(|name| is_id_name(name)) {
            if let Some(value) = args.get(name) {
                ids.push_value(name, value);
            }
        }
        CallRecord { operation, ids }
    }

    /// The row as the call's caller and origin make it, with `ids` and `outcome`.
    fn event(&self, ctx: &Ctx, ids: String, outcome: &'static str) -> NewEvent<'static> {
        NewEvent {
            customer_id: Some(ctx.caller.customer_id),
            token_id: ctx.caller.token_id,
            operation: self.operation,
            via: ctx.origin.via,
            address: ctx.origin.address,
            ids,
            outcome,
        }
    }

    /// Runs the operation `f` with the call's row pending: the write transactions it begins
    /// through [`Ctx::begin_write`] write it. Returns what `f` returned and the row's id if
    /// one of them committed it.
    pub async fn run<F: std::future::Future>(&self, ctx: &Ctx, f: F) -> (F::Output, Option<i64>) {
        let row = Arc::new(PendingRow {
            event: self.event(ctx, self.ids.to_string(), "OK"),
            written: Default::default(),
        });
        let output = CALL.scope(Some(row.clone()), f).await;
        (output, row.committed())
    }

    /// Completes the call's row once the operation has returned: its outcome, and the ids of
    /// what it returned (`result_name` and `result_type` say what that is). `written` is the
    /// row the call's transaction committed ([`CallRecord::run`]), updated when the outcome
    /// or the ids differ; without one the row is written now. A failure to write is logged
    /// and does not change the call's answer: what the operation did is done.
    pub async fn finish<T: serde::Serialize>(
        mut self,
        ctx: &Ctx,
        result_name: &'static str,
        result_type: &WireType,
        outcome: &ApiResult<T>,
        written: Option<i64>,
    ) {
        let args_ids = self.ids.to_string();
        if let Ok(result) = outcome
            && let Ok(result) = serde_json::to_value(result)
        {
            self.ids.push_result(result_name, result_type, &result);
        }
        let event = self.event(ctx, self.ids.to_string(), outcome_code(outcome));
        let done = match written {
            Some(_) if event.ids == args_ids && event.outcome == "OK" => Ok(()),
            Some(id) => complete(&ctx.state.db, id, &event).await,
            None => insert(&ctx.state.db, event).await,
        };
        if let Err(err) = done {
            tracing::error!(
                operation = self.operation,
                customer = ctx.caller.customer_id,
                error = %err,
                "writing the audit event of a call failed"
            );
        }
    }
}

/// Begins a write transaction of a command-line command (or of code a command runs): inside
/// [`CommandRecord::run`] it writes the command's row as its last statement, as
/// [`Ctx::begin_write`] does for an API call; elsewhere it is a plain write transaction.
pub async fn begin_write(db: &Db) -> Result<Tx, sqlx::Error> {
    let mut tx = db.begin_write().await?;
    attach(&mut tx);
    Ok(tx)
}

/// A command-line command that changes something (`customer add`, ...), audited like a
/// `write` call ([`CallRecord`]): no customer, no address, `via` cli. The first transaction
/// the command begins through [`begin_write`] writes its row just before it commits, so the
/// change and its row commit together or not at all; [`CommandRecord::finish`] then completes
/// the row with the outcome and the ids the command named and made, or writes it when no
/// transaction of the command committed.
pub struct CommandRecord {
    command: &'static str,
}

impl CommandRecord {
    pub fn new(command: &'static str) -> CommandRecord {
        CommandRecord { command }
    }

    fn event(&self, ids: String, outcome: &'static str) -> NewEvent<'static> {
        NewEvent {
            customer_id: None,
            token_id: None,
            operation: self.command,
            via: Via::Cli,
            address: None,
            ids,
            outcome,
        }
    }

    /// Runs the command's work `f` with its row pending; returns what `f` returned and the
    /// row's id if a transaction of it committed the row.
    pub async fn run<F: std::future::Future>(&self, f: F) -> (F::Output, Option<i64>) {
        let row = Arc::new(PendingRow {
            event: self.event(String::new(), "OK"),
            written: Default::default(),
        });
        let output = CALL.scope(Some(row.clone()), f).await;
        (output, row.committed())
    }

    /// Completes the command's row: its outcome and `ids`, what it named and made. A failure
    /// to write is logged: what the command did is done.
    pub async fn finish<T>(
        self,
        db: &Db,
        ids: &[(&'static str, i64)],
        outcome: &ApiResult<T>,
        written: Option<i64>,
    ) {
        let mut named = Ids::default();
        for (name, id) in ids {
            named.push(name, *id);
        }
        let event = self.event(named.to_string(), outcome_code(outcome));
        let done = match written {
            Some(_) if event.ids.is_empty() && event.outcome == "OK" => Ok(()),
            Some(id) => complete(db, id, &event).await,
            None => insert(db, event).await,
        };
        if let Err(err) = done {
            tracing::error!(command = self.command, error = %err,
                "writing the audit event of a command failed");
        }
    }
}

/// Whose console of which server was opened, through which adapter its access was given.
pub struct OpenedConsole {
    pub customer_id: i64,
    pub server_id: i64,
    pub kind: crate::hypervisor::ConsoleKind,
    pub via: Via,
}

/// Records a console opened through the console WebSocket, or refused once its token was
/// taken: `OpenScreenConsole` or `OpenSerialConsole`, with the server's id, through the adapter
/// GetConsoleAccess was called through (`via`), from the WebSocket's address. A failure to
/// write is logged.
pub async fn record_console(
    state: &AppState,
    opened: OpenedConsole,
    address: Option<IpAddr>,
    refused: Option<&ApiError>,
) {
    let grant = opened;
    let mut ids = Ids::default();
    ids.push("server_id", grant.server_id);
    let operation = match grant.kind {
        crate::hypervisor::ConsoleKind::Screen => "OpenScreenConsole",
        crate::hypervisor::ConsoleKind::Serial => "OpenSerialConsole",
    };
    let event = NewEvent {
        customer_id: Some(grant.customer_id),
        token_id: None,
        operation,
        via: grant.via,
        address,
        ids: ids.to_string(),
        outcome: refused.map_or("OK", ApiError::code),
    };
    if let Err(err) = insert(&state.db, event).await {
        tracing::error!(operation, customer = grant.customer_id, error = %err,
            "writing the audit event of a console failed");
    }
}

/// Failed logins waiting for the writer: beyond this many they are dropped (and counted).
const FAILED_LOGIN_QUEUE: usize = 1024;
/// Failed logins written in one transaction.
const FAILED_LOGIN_BATCH: usize = 128;
/// The longest e-mail kept (the longest an address may be).
const MAX_EMAIL: usize = 254;

#[derive(Debug)]
struct FailedLogin {
    at: i64,
    /// The e-mail a password login gave; none for a token.
    email: Option<String>,
    /// The customer and the token, when a token that was one (expired or revoked) was sent.
    token: Option<(i64, i64)>,
    origin: Origin,
}

/// The queue of failed logins and its background writer.
pub struct AuditLog {
    failed_logins: mpsc::Sender<FailedLogin>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Starts the writer of failed logins on `db` (on the current Tokio runtime); it ends when
    /// the log is dropped.
    pub fn start(db: Db) -> AuditLog {
        let (log, queue) = AuditLog::with_capacity(FAILED_LOGIN_QUEUE);
        tokio::spawn(write_failed_logins(db, queue, log.dropped.clone()));
        log
    }

    fn with_capacity(capacity: usize) -> (AuditLog, mpsc::Receiver<FailedLogin>) {
        let (failed_logins, queue) = mpsc::channel(capacity);
        let log = AuditLog {
            failed_logins,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (log, queue)
    }

    /// Queues a failed login without waiting: when the queue is full it is dropped and counted.
    fn queue(&self, login: FailedLogin) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.failed_logins.try_send(login) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Records a failed login: the e-mail given (never the password) and where it came from.
/// Returns at once; the row is written in the background, and may be dropped under a flood.
pub fn failed_login(state: &AppState, email: &str, origin: Origin) {
    let mut email = email.trim().to_lowercase();
    if email.len() > MAX_EMAIL {
        let mut end = MAX_EMAIL;
        while !email.is_char_boundary(end) {
            end -= 1;
        }
        email.truncate(end);
    }
    state.audit.queue(FailedLogin {
        at: now_ms(),
        email: Some(email),
        token: None,
        origin,
    });
}

/// Records a failed login with an authentication token (never the token itself): when it was
/// a token, expired or revoked, its customer's event naming it (`customer_id`, `token_id`).
/// Returns at once, as [`failed_login`] does.
pub fn failed_token_login(state: &AppState, token: Option<(i64, i64)>, origin: Origin) {
    state.audit.queue(FailedLogin {
        at: now_ms(),
        email: None,
        token,
        origin,
    });
}

async fn write_failed_logins(
    db: Db,
    mut queue: mpsc::Receiver<FailedLogin>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(FAILED_LOGIN_BATCH);
    while queue.recv_many(&mut batch, FAILED_LOGIN_BATCH).await > 0 {
        if let Err(err) = insert_failed_logins(&db, &batch).await {
            tracing::warn!(
                rows = batch.len(),
                error = %err,
                "writing failed logins to the audit trail failed"
            );
        }
        batch.clear();
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                dropped = lost,
                "failed logins came faster than they could be written: {lost} are missing from \
                 the audit trail"
            );
        }
    }
}

/// Writes failed logins in one transaction. A failed login whose e-mail is a customer's is
/// that customer's event: the customer sees it in ListAuditEvents.
async fn insert_failed_logins(db: &Db, batch: &[FailedLogin]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    for login in batch {
        let query = match (&login.email, login.token) {
            (Some(email), _) => sqlx::query(
                "INSERT INTO audit_events \
                 (created, customer_id, email, operation, via, address, ids, outcome) \
                 VALUES ($1, (SELECT id FROM customers WHERE email = $2), $2, 'Login', $3, $4, \
                 '', $5)",
            )
            .bind(login.at)
            .bind(email.as_str()),
            (None, token) => sqlx::query(
                "INSERT INTO audit_events \
                 (created, customer_id, token_id, operation, via, address, ids, outcome) \
                 VALUES ($1, $2, $3, 'Login', $4, $5, '', $6)",
            )
            .bind(login.at)
            .bind(token.map(|(customer_id, _)| customer_id))
            .bind(token.map(|(_, token_id)| token_id)),
        };
        query
            .bind(login.origin.via.as_str())
            .bind(login.origin.address.map(|a| a.to_string()))
            .bind(ApiError::Unauthenticated.code())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The largest page of ListAuditEvents, and the page when none is asked for.
pub const MAX_PAGE: i64 = 1000;
pub const DEFAULT_PAGE: i64 = 100;

#[derive(sqlx::FromRow)]
struct EventRow {
    token_id: Option<i64>,
    id: i64,
    created: i64,
    customer_uuid: Option<String>,
    email: Option<String>,
    operation: String,
    via: String,
    address: Option<String>,
    ids: String,
    outcome: String,
}

/// The caller's audit events (everyone's for an administrator), newest first, a page at a
/// time: those with an id below `before_id`.
pub async fn list_audit_events(ctx: &Ctx, a: args::ListAuditEvents) -> ApiResult<Vec<AuditEvent>> {
    let page = a.page_size.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&page) {
        return Err(ApiError::invalid(
            "page_size",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let before = match a.before_id {
        None => i64::MAX,
        Some(id) if id > 0 => id,
        Some(_) => {
            return Err(ApiError::invalid(
                "before_id",
                "must be the audit_id of an event (or omitted)",
            ));
        }
    };
    let rows: Vec<EventRow> = if ctx.caller.is_admin {
        sqlx::query_as(
            "SELECT a.id, a.created, c.uuid AS customer_uuid, a.email, a.operation, a.via, \
             a.address, a.ids, a.outcome, a.token_id \
             FROM audit_events a LEFT JOIN customers c ON c.id = a.customer_id \
             WHERE a.id < $1 ORDER BY a.id DESC LIMIT $2",
        )
        .bind(before)
        .bind(page)
        .fetch_all(ctx.state.db.pool())
        .await?
    } else {
        sqlx::query_as(
            "SELECT a.id, a.created, c.uuid AS customer_uuid, a.email, a.operation, a.via, \
             a.address, a.ids, a.outcome, a.token_id \
             FROM audit_events a LEFT JOIN customers c ON c.id = a.customer_id \
             WHERE a.customer_id = $1 AND a.id < $2 ORDER BY a.id DESC LIMIT $3",
        )
        .bind(ctx.customer_id())
        .bind(before)
        .bind(page)
        .fetch_all(ctx.state.db.pool())
        .await?
    };
    Ok(rows
        .into_iter()
        .map(|r| AuditEvent {
            audit_id: r.id,
            time: Timestamp(r.created),
            customer_uuid: r.customer_uuid,
            email: r.email,
            operation: r.operation,
            via: r.via,
            address: r.address,
            ids: r.ids,
            outcome: r.outcome,
            token_id: r.token_id,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::wire::Wire;
    use serde_json::json;

    fn args(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn only_ids_are_taken_from_arguments() {
        let fetch = args(json!({
            "url": "http://fetcher:pa55@example.com/disk.img", "conn_user": "fetcher",
            "conn_pass": "pa55", "name": "disk", "disk_productoffer_id": 31, "vdc_id": 4,
            "make_image": false, "checksum": null,
        }));
        let params = [
            "url",
            "checksum",
            "conn_user",
            "conn_pass",
            "name",
            "disk_productoffer_id",
            "vdc_id",
            "make_image",
            "image_default_username",
        ];
        let record = CallRecord::begin("FetchDisk", &params, &fetch);
        assert_eq!(record.ids.to_string(), "disk_productoffer_id=31 vdc_id=4");
    }

    #[test]
    fn arguments_that_are_not_parameters_are_not_taken() {
        let call = args(json!({"disk_id": 3, "secret_id": 99, "vdc_ids": [1, 2]}));
        let record = CallRecord::begin("DeleteDisk", &["disk_id"], &call);
        assert_eq!(record.ids.to_string(), "disk_id=3");
    }

    #[test]
    fn lists_of_ids_and_none_values() {
        let call = args(json!({
            "vdc_id": 1, "vlan_id": -1, "image_id": 0, "server_name": "web",
            "disk_productoffer_ids": [31, 29, 31], "server_productoffer_id": "18",
        }));
        let params = [
            "vdc_id",
            "vlan_id",
            "server_name",
            "image_id",
            "server_productoffer_id",
            "disk_productoffer_ids",
        ];
        let record = CallRecord::begin("CreateServer", &params, &call);
        assert_eq!(
            record.ids.to_string(),
            "vdc_id=1 disk_productoffer_ids=31,29"
        );
    }

    #[test]
    fn results_add_the_ids_of_what_they_are() {
        let mut ids = Ids::default();
        ids.push_result("job_id", &i64::TYPE, &json!(42));
        ids.push_result("result", &i64::TYPE, &json!(1));
        assert_eq!(ids.to_string(), "job_id=42");

        let server = json!({
            "server_id": 7, "server_name": "web", "vdc_id": 1, "image_id": 66,
            "product_offer_id": 18, "initial_password": "s3cret",
            "disks": [{"disk_id": 8, "vdc_id": 1, "server_id": 7},
                      {"disk_id": 9, "vdc_id": 1, "server_id": 7}],
        });
        let mut ids = Ids::default();
        ids.push("vdc_id", 1);
        ids.push_result("server", &crate::ops::Server::TYPE, &server);
        assert_eq!(ids.to_string(), "vdc_id=1 server_id=7 disk_id=8,9");
    }

    #[test]
    fn a_row_keeps_a_bounded_number_of_ids() {
        let many: Vec<i64> = (1..=100).collect();
        let call = args(json!({ "disk_productoffer_ids": many }));
        let record = CallRecord::begin("CreateServer", &["disk_productoffer_ids"], &call);
        let text = record.ids.to_string();
        assert!(text.ends_with(",64 +36 more"), "{text}");
    }

    #[test]
    fn failed_logins_beyond_the_queue_are_dropped_and_counted() {
        let (log, mut queue) = AuditLog::with_capacity(2);
        let origin = Origin {
            address: None,
            via: Via::Json,
        };
        for n in 0..5 {
            log.queue(FailedLogin {
                at: n,
                email: Some("x@example.com".into()),
                token: None,
                origin,
            });
        }
        assert_eq!(log.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(queue.try_recv().unwrap().at, 0);
        assert_eq!(queue.try_recv().unwrap().at, 1);
        assert!(queue.try_recv().is_err());
    }
}
