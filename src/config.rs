//! Command line and environment configuration: plain values, depending on nothing else of
//! the crate (startup hands each part what it needs).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::db::Db;

/// The billing entity customers belong to unless they are given another.
pub const DEFAULT_BILLING_ENTITY: &str = "Default";

#[derive(Debug, Parser)]
#[command(
    name = "extility",
    version,
    about = "The Extility cloud control API server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written (to stderr): `text` for people, `json` (one object per line:
    /// timestamp, level, target, message and fields) for log collectors; `auto` is text on a
    /// terminal and JSON otherwise.
    #[arg(long, env = "EXTILITY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the SOAP and JSON APIs and the control panel, and run jobs.
    // Boxed: its flags outweigh the other commands.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// List the cluster's nodes: state (up, up without a hypervisor, down), address,
    /// processors and memory used by running servers of what each has, servers, seconds since
    /// the last heartbeat, version.
    Nodes {
        #[command(flatten)]
        db: DbArgs,
        /// A node is down when its last heartbeat is older than this (the nodes' job lease).
        #[arg(long, env = "EXTILITY_JOB_LEASE_SECONDS", default_value_t = 30)]
        job_lease_seconds: u64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Copy the database and volumes into DEST (a new or empty folder) while the node serves:
    /// a consistent online copy of the database and its volumes, as sparse copies or, on RBD,
    /// snapshots (docs/src/operators/backups.md).
    Backup {
        /// Where the backup goes.
        dest: PathBuf,
        #[command(flatten)]
        db: DbArgs,
        /// With `--storage rbd`, the volumes are kept as snapshots in their pool.
        #[command(flatten)]
        storage: StorageArgs,
        /// Once the backup is made, remove the other backups in DEST's folder beyond the newest
        /// N (this one counts). Only folders `extility backup` made are touched; with
        /// `--storage rbd`, a removed backup's snapshots go too.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        prune_keep: Option<u32>,
        /// Once the backup is made, remove the other backups in DEST's folder older than AGE
        /// (`30d`, `12h`, `2w`). With `--prune-keep`, a backup goes when either says so.
        #[arg(long, value_name = "AGE")]
        prune_older_than: Option<String>,
    },
    /// Restore a backup made by `extility backup` into a data directory with no database and
    /// no node serving from it.
    Restore {
        /// The backup's folder.
        src: PathBuf,
        /// The data directory to restore into.
        #[arg(long, env = "EXTILITY_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// With `--storage rbd`, the volumes are rolled back to the backup's snapshots.
        #[command(flatten)]
        storage: StorageArgs,
        /// For a backup of a PostgreSQL database: the new, empty database to restore it into
        /// (`pg_restore`). A SQLite backup restores into the data directory.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Check that the database and the volume store agree: every volume row has its file (or
    /// RBD image), every disk, image and snapshot its volume, every stored volume a row.
    /// Reports, never deletes; exits 1 when something disagrees.
    Verify {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Manage customers.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Manage billing entities (the accounts customers belong to).
    #[command(subcommand)]
    BillingEntity(BillingEntityCommand),
    /// Print the WSDL of an API version (the current one for `wsdl/extility.wsdl`, a released
    /// one for `wsdl/extility-v{N}.wsdl`).
    Wsdl {
        /// The API version (default: the current one).
        #[arg(long)]
        version: Option<u32>,
        /// The SOAP endpoint written into `soap:address` (default: the version's endpoint on
        /// `http://localhost:8080`).
        #[arg(long)]
        address: Option<String>,
    },
    /// Print the OpenAPI document of the JSON mirror (for `openapi/openapi.json`).
    Openapi,
    /// Print the book's per-operation API reference as Markdown (for
    /// `docs/src/api/reference.md`).
    ApiReference,
    /// What QEMU runs for each connection a guest opens to its metadata address: passes one
    /// `GET PATH` (or of the NoCloud files beside it) from stdin to SERVICE (`host:port`),
    /// authenticated with the VM's secret read from TOKEN_FILE, and the answer back to stdout.
    /// The nftables script of a sample node (`network::sample`) with NICS NICs and FORWARDS
    /// port forwards, for `benches/network.sh`; with `--add-forward`, only the change that
    /// adds one more forward (and the time computing it took, on stderr).
    #[command(hide = true)]
    NetworkRules {
        #[arg(long, default_value_t = 1)]
        nics: u32,
        #[arg(long, default_value_t = 0)]
        forwards: u16,
        #[arg(long)]
        add_forward: bool,
        /// The port metadata connections are redirected to.
        #[arg(long, default_value_t = 8775)]
        metadata_port: u16,
    },
    #[command(hide = true)]
    MetadataProxy {
        service: String,
        path: String,
        token_file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Create a customer with one VDC named "Default VDC". The password comes from
    /// --password-stdin, EXTILITY_CUSTOMER_PASSWORD, --password, or a prompt on a terminal.
    Add {
        /// The e-mail address the customer signs in with (the panel, SOAP and JSON).
        #[arg(long)]
        email: String,
        /// The customer's password, at least 8 characters and not a common one. On the
        /// command line it shows in `ps` and shell history: prefer --password-stdin or the
        /// variable.
        #[arg(
            long,
            env = "EXTILITY_CUSTOMER_PASSWORD",
            hide_env_values = true,
            conflicts_with = "password_stdin"
        )]
        password: Option<String>,
        /// Read the password from the first line of standard input (`printf '%s\n' "$PW" |
        /// extility customer add --email ... --password-stdin`).
        #[arg(long)]
        password_stdin: bool,
        /// Make the customer an administrator.
        #[arg(long)]
        admin: bool,
        /// The billing entity the customer belongs to (created if there is none of that name).
        #[arg(long, default_value = DEFAULT_BILLING_ENTITY)]
        billing_entity: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Give a customer limits of its own, in place of the platform's defaults (the `serve
    /// --quota-*` flags); prints the customer's own limits. Values as for those flags, or
    /// `unlimited`.
    SetQuota {
        /// The customer's e-mail address.
        #[arg(long)]
        email: String,
        /// Bytes of disks and images, by the size promised (`500G`, `2T`).
        #[arg(long, value_name = "SIZE")]
        storage_bytes: Option<String>,
        /// Servers, running or not.
        #[arg(long, value_name = "N")]
        servers: Option<String>,
        /// vCPUs of servers starting, running or stopping.
        #[arg(long, value_name = "N")]
        running_vcpus: Option<String>,
        /// Memory of servers starting, running or stopping (`64G`; a bare number is MiB).
        #[arg(long, value_name = "SIZE")]
        running_memory: Option<String>,
        /// Jobs queued or running.
        #[arg(long, value_name = "N")]
        concurrent_jobs: Option<String>,
        /// VLANs (each a subnet of the shared pool).
        #[arg(long, value_name = "N")]
        vlans: Option<String>,
        /// Port forwards (each a host port of the shared range).
        #[arg(long, value_name = "N")]
        port_forwards: Option<String>,
        /// Firewall templates.
        #[arg(long, value_name = "N")]
        firewall_templates: Option<String>,
        /// Rules in one firewall template.
        #[arg(long, value_name = "N")]
        firewall_rules: Option<String>,
        /// Drop the customer's own limit of a quota (storage_bytes, servers, running_vcpus,
        /// running_memory_mb, concurrent_jobs, vlans, port_forwards, firewall_templates,
        /// firewall_rules): the platform default
        /// applies again.
        /// Repeatable.
        #[arg(long, value_name = "QUOTA")]
        unset: Vec<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BillingEntityCommand {
    /// Create a billing entity; prints its id and uuid.
    Add {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Where the server keeps its files (SQLite database, volumes, VM state).
    #[arg(long, env = "EXTILITY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The database (sqlite://... or postgres://...). Default: SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl DbArgs {
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| Db::default_sqlite_url(&self.data_dir))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HypervisorKind {
    /// QEMU when `qemu-system-x86_64` is installed, otherwise `none`.
    Auto,
    /// Boot real virtual machines with QEMU.
    Qemu,
    /// Only record server state.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QemuAccel {
    /// KVM when /dev/kvm is usable, otherwise TCG.
    Auto,
    Kvm,
    /// QEMU's CPU emulator.
    Tcg,
}

// The headings `serve --help` groups its flags under.
const BASICS: &str = "Basics";
const CLUSTER: &str = "Cluster";
const VMS: &str = "Virtual machines";
const FETCHING: &str = "Fetching";
const QUOTAS: &str = "Quotas and policy";
const LOGINS: &str = "Logins and tokens";
const NETWORK: &str = "Network";
const STORAGE: &str = "Storage";
const OBSERVABILITY: &str = "Observability";

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(next_help_heading = BASICS)]
    #[command(flatten)]
    pub db: DbArgs,
    /// Address and port to listen on, as HOST:PORT (`0.0.0.0:8080` for every interface; port
    /// 0 picks a free port; the address is printed on start).
    #[arg(
        long,
        env = "EXTILITY_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "HOST:PORT",
        value_parser = listen_address
    )]
    #[arg(help_heading = BASICS)]
    pub listen: String,
    /// The URL clients reach this server at, for the WSDL's soap:address. Default: from the
    /// request's Host header.
    #[arg(long, env = "EXTILITY_PUBLIC_URL")]
    #[arg(help_heading = BASICS)]
    pub public_url: Option<String>,
    /// Long jobs (fetches, image copies) run at once on this node.
    #[arg(long, env = "EXTILITY_WORKERS", default_value_t = 4)]
    #[arg(help_heading = CLUSTER)]
    pub workers: usize,
    /// Quick jobs (starting, stopping and destroying servers) run at once on this node, on
    /// workers of their own that long jobs never take.
    #[arg(long, env = "EXTILITY_QUICK_WORKERS", default_value_t = 4)]
    #[arg(help_heading = CLUSTER)]
    pub quick_workers: usize,
    /// The URL the other nodes reach this node's API at (they read the consoles of the VMs it
    /// runs there). Default: the address it listens on.
    #[arg(long, env = "EXTILITY_NODE_URL", value_name = "URL")]
    #[arg(help_heading = CLUSTER)]
    pub node_url: Option<String>,
    /// This node's name in the job queue. Default: kept in `<data-dir>/node-id`.
    #[arg(long, env = "EXTILITY_NODE_ID")]
    #[arg(help_heading = CLUSTER)]
    pub node_id: Option<String>,
    /// Seconds a node's claim on a job lasts without a heartbeat (every half second): how long
    /// the jobs of a node that died wait before another node takes them.
    #[arg(long, env = "EXTILITY_JOB_LEASE_SECONDS", default_value_t = 30)]
    #[arg(help_heading = CLUSTER)]
    pub job_lease_seconds: u64,
    #[arg(long, env = "EXTILITY_HYPERVISOR", value_enum, default_value = "auto")]
    #[arg(help_heading = VMS)]
    pub hypervisor: HypervisorKind,
    /// How QEMU runs guest CPUs: KVM when /dev/kvm is usable (auto), or always the TCG
    /// emulator.
    #[arg(long, env = "EXTILITY_QEMU_ACCEL", value_enum, default_value = "auto")]
    #[arg(help_heading = VMS)]
    pub qemu_accel: QemuAccel,
    /// Seconds StopServer method 1 waits for the guest to shut down (ACPI power button)
    /// before powering it off.
    #[arg(long, env = "EXTILITY_VM_SHUTDOWN_TIMEOUT", default_value_t = 60)]
    #[arg(help_heading = VMS)]
    pub vm_shutdown_timeout: u64,
    /// The uids VMs run as when the server runs as root, `FIRST-LAST`: each running VM gets
    /// one of its own (used by number: no account is needed, and none may have one of them).
    #[arg(long, env = "EXTILITY_VM_UIDS", value_name = "FIRST-LAST", default_value = "1950000000-1950009999", value_parser = parse_uid_range)]
    #[arg(help_heading = VMS)]
    pub vm_uids: (u32, u32),
    /// Where confined VMs' runtime directories (QMP sockets, pid file) are: every directory
    /// above it must be searchable by other users.
    #[arg(long, env = "EXTILITY_VM_RUN_DIR", default_value = "/run/extility/vms")]
    #[arg(help_heading = VMS)]
    pub vm_run_dir: std::path::PathBuf,
    /// Let FetchDisk reach addresses in this range even though it is private, loopback or
    /// otherwise internal. Repeatable; the variable takes a comma-separated list.
    #[arg(
        long = "allow-fetch-from",
        env = "EXTILITY_ALLOW_FETCH_FROM",
        value_delimiter = ','
    )]
    #[arg(help_heading = FETCHING)]
    pub allow_fetch_from: Vec<IpNet>,
    /// Clients that may read `/metrics` (Prometheus): addresses in these ranges. Repeatable;
    /// the variable takes a comma-separated list. Others get 403: the counts are the whole
    /// platform's, not a customer's.
    #[arg(
        long = "metrics-allow",
        env = "EXTILITY_METRICS_ALLOW",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    #[arg(help_heading = OBSERVABILITY)]
    pub metrics_allow: Vec<IpNet>,
    /// A PEM file of CA certificates FetchDisk trusts for https and ftps sources, in addition
    /// to the system's (a private image registry's CA, say). Repeatable; the variable takes a
    /// comma-separated list. The server does not start if a file cannot be read or holds no
    /// valid certificate.
    #[arg(
        long = "fetch-ca-file",
        env = "EXTILITY_FETCH_CA_FILE",
        value_name = "PATH",
        value_delimiter = ','
    )]
    #[arg(help_heading = FETCHING)]
    pub fetch_ca_files: Vec<PathBuf>,
    /// Fetches running at once across all nodes.
    #[arg(long, env = "EXTILITY_MAX_FETCHES", default_value_t = 8)]
    #[arg(help_heading = FETCHING)]
    pub max_fetches: i64,
    /// Fetches running at once for one customer.
    #[arg(long, env = "EXTILITY_MAX_FETCHES_PER_CUSTOMER", default_value_t = 2)]
    #[arg(help_heading = FETCHING)]
    pub max_fetches_per_customer: i64,
    /// Memory one fetch's xz or zstd decoder may use: an image whose dictionary (xz) or window
    /// (zstd) needs more fails with DECOMPRESSION_LIMIT before any of it is decoded. A size
    /// such as 256M, 1G or a number of bytes; at least 1M.
    #[arg(
        long,
        env = "EXTILITY_MAX_DECOMPRESSION_MEMORY",
        value_name = "SIZE",
        default_value = "256M",
        value_parser = memory_size
    )]
    #[arg(help_heading = FETCHING)]
    pub max_decompression_memory: u64,
    /// How long one fetch may take in all, connecting, retrying and downloading, before it
    /// fails with FETCH_TIMEOUT: seconds, or with a unit (`90s`, `30m`, `6h`); 0: no deadline.
    #[arg(
        long,
        env = "EXTILITY_FETCH_DEADLINE",
        value_name = "SECONDS",
        default_value = "6h",
        value_parser = seconds
    )]
    #[arg(help_heading = FETCHING)]
    pub fetch_deadline: u64,
    /// Bytes per second a fetch's source must send on average since the fetch started, checked
    /// from `--fetch-grace` on (FETCH_TIMEOUT below it): a size such as 64K or 1M; 0: no
    /// minimum.
    #[arg(
        long,
        env = "EXTILITY_FETCH_MIN_THROUGHPUT",
        value_name = "SIZE",
        default_value = "64K",
        value_parser = crate::size::parse_size
    )]
    #[arg(help_heading = FETCHING)]
    pub fetch_min_throughput: u64,
    /// How long a fetch runs before its average throughput is checked: seconds, or with a unit
    /// (`5m`).
    #[arg(
        long,
        env = "EXTILITY_FETCH_GRACE",
        value_name = "SECONDS",
        default_value = "5m",
        value_parser = seconds
    )]
    #[arg(help_heading = FETCHING)]
    pub fetch_grace: u64,
    /// Retries one fetch may make in all after transient failures (broken connections,
    /// timeouts, 5xx answers), even when each made progress; one more fails it with
    /// FETCH_TIMEOUT. (Three in a row without progress fail it with FETCH_FAILED whatever
    /// this says.)
    #[arg(long, env = "EXTILITY_FETCH_MAX_RETRIES", default_value_t = 10)]
    #[arg(help_heading = FETCHING)]
    pub fetch_max_retries: u32,
    /// Bytes of a fetched image's compressed data that may decode to nothing (zstd skippable
    /// frames, xz stream padding, empty gzip members) since the last byte of image: past it the
    /// fetch fails with FETCH_TIMEOUT. A size of at least 1M; 0: no bound.
    #[arg(
        long,
        env = "EXTILITY_FETCH_MAX_PADDING",
        value_name = "SIZE",
        default_value = "64M",
        value_parser = padding_size
    )]
    #[arg(help_heading = FETCHING)]
    pub fetch_max_padding: u64,
    /// Let customers (not only administrators) publish their images to the whole platform.
    #[arg(long, env = "EXTILITY_CUSTOMERS_MAY_PUBLISH_TO_PLATFORM")]
    #[arg(help_heading = QUOTAS)]
    pub customers_may_publish_to_platform: bool,
    /// Refuse PublishImage (IMAGE_NOT_CLEAN, with the list) for an image that was never
    /// checked (CheckImage), could not be read, or has high-severity findings: a password
    /// hash, authorized keys, SSH host keys. CleanImage makes a clean copy to publish.
    #[arg(long, env = "EXTILITY_PUBLISH_REQUIRES_CLEAN")]
    #[arg(help_heading = QUOTAS)]
    pub publish_requires_clean: bool,
    /// Memory of the appliance VM that reads an image's file systems for CheckImage,
    /// CheckDisk and CleanImage (libguestfs): a size such as 768M or 1G; at least 256M.
    #[arg(
        long,
        env = "EXTILITY_HYGIENE_MEMORY",
        value_name = "SIZE",
        default_value = "768M",
        value_parser = hygiene_memory
    )]
    #[arg(help_heading = STORAGE)]
    pub hygiene_memory: u64,
    /// How long one image check or cleaning may take in all, the appliance's start included,
    /// before it fails with IMAGE_UNREADABLE: seconds, or with a unit (`90s`, `15m`).
    #[arg(
        long,
        env = "EXTILITY_HYGIENE_TIMEOUT",
        value_name = "SECONDS",
        default_value = "15m",
        value_parser = positive_seconds
    )]
    #[arg(help_heading = STORAGE)]
    pub hygiene_timeout: u64,
    /// Default quota of every customer: bytes of disks and images, by the size promised, not
    /// by the blocks written (`2T`, `500G`), or `unlimited`. `extility customer set-quota`
    /// overrides the defaults for one customer.
    #[arg(
        long,
        env = "EXTILITY_QUOTA_STORAGE_BYTES",
        value_name = "SIZE",
        default_value = "unlimited"
    )]
    #[arg(help_heading = QUOTAS)]
    pub quota_storage_bytes: String,
    /// Default quota of every customer: servers, running or not, or `unlimited`.
    #[arg(
        long,
        env = "EXTILITY_QUOTA_SERVERS",
        value_name = "N",
        default_value = "unlimited"
    )]
    #[arg(help_heading = QUOTAS)]
    pub quota_servers: String,
    /// Default quota of every customer: vCPUs of servers starting, running or stopping, or
    /// `unlimited`.
    #[arg(
        long,
        env = "EXTILITY_QUOTA_RUNNING_VCPUS",
        value_name = "N",
        default_value = "unlimited"
    )]
    #[arg(help_heading = QUOTAS)]
    pub quota_running_vcpus: String,
    /// Default quota of every customer: memory of servers starting, running or stopping (`64G`;
    /// a bare number is MiB), or `unlimited`.
    #[arg(
        long,
        env = "EXTILITY_QUOTA_RUNNING_MEMORY",
        value_name = "SIZE",
        default_value = "unlimited"
    )]
    #[arg(help_heading = QUOTAS)]
    pub quota_running_memory: String,
    /// Default quota of every customer: jobs queued or running at once, or `unlimited`.
    #[arg(
        long,
        env = "EXTILITY_QUOTA_CONCURRENT_JOBS",
        value_name = "N",
        default_value = "100"
    )]
    #[arg(help_heading = QUOTAS)]
    pub quota_concurrent_jobs: String,
    /// Default quota of every customer: VLANs, each a subnet of the pool all customers share
    /// (`--vlan-subnets`), or `unlimited`.
    #[arg(
        long,
        env = "EXTILITY_QUOTA_VLANS",
        value_name = "N",
        default_value = "16"
    )]
    #[arg(help_heading = QUOTAS)]
    pub quota_vlans: String,
    /// Default quota of every customer: port forwards, each a host port of the range all
    /// customers share (`--port-forward-ports`), or `unlimited`.
    #[arg(
        long,
        env = "EXTILITY_QUOTA_PORT_FORWARDS",
        value_name = "N",
        default_value = "64"
    )]
    #[arg(help_heading = QUOTAS)]
    pub quota_port_forwards: String,
    /// Default quota of every customer: firewall templates, or `unlimited`.
    #[arg(
        long,
        env = "EXTILITY_QUOTA_FIREWALL_TEMPLATES",
        value_name = "N",
        default_value = "32"
    )]
    #[arg(help_heading = QUOTAS)]
    pub quota_firewall_templates: String,
    /// Default quota of every customer: rules in one firewall template (each a rule every
    /// packet of the servers using it may be matched against), or `unlimited`.
    #[arg(
        long,
        env = "EXTILITY_QUOTA_FIREWALL_RULES",
        value_name = "N",
        default_value = "64"
    )]
    #[arg(help_heading = QUOTAS)]
    pub quota_firewall_rules: String,
    /// Snapshots one disk may have; CreateDiskSnapshot beyond it fails with LIMIT_EXCEEDED.
    /// Each is a layer every read of the disk may go through.
    #[arg(long, env = "EXTILITY_MAX_SNAPSHOTS_PER_DISK", default_value_t = 16)]
    #[arg(help_heading = QUOTAS)]
    pub max_snapshots_per_disk: i64,
    /// API calls one customer may have in flight on this node (SOAP, JSON and the panel
    /// together); one more waits up to a second for a place, then fails with
    /// TOO_MANY_REQUESTS (HTTP 429). 0: no bound.
    #[arg(long, env = "EXTILITY_MAX_CALLS_IN_FLIGHT", default_value_t = 8)]
    #[arg(help_heading = QUOTAS)]
    pub max_calls_in_flight: usize,
    /// Interactive consoles (GetConsoleAccess) one customer may have open at once on the
    /// node that takes their WebSockets; one more is LIMIT_EXCEEDED.
    #[arg(long, env = "EXTILITY_MAX_CONSOLES_PER_CUSTOMER", default_value_t = 4)]
    #[arg(help_heading = QUOTAS)]
    pub max_consoles_per_customer: usize,
    /// Interactive consoles open at once on one server (its serial port has one user at a
    /// time whatever this says).
    #[arg(long, env = "EXTILITY_MAX_CONSOLES_PER_SERVER", default_value_t = 4)]
    #[arg(help_heading = QUOTAS)]
    pub max_consoles_per_server: usize,
    /// Seconds an interactive console may pass without a person's input before it is closed:
    /// any byte on a serial console; keys, pointer moves and clicks, and cut text on a screen
    /// (not the screen updates a viewer asks for).
    #[arg(long, env = "EXTILITY_CONSOLE_IDLE_TIMEOUT", default_value_t = 900)]
    #[arg(help_heading = QUOTAS)]
    pub console_idle_timeout: u64,
    /// Fetches and image copies refuse to start on this node while its volume file system has
    /// less free space than this (`1G`, `50G`; 0: no reserve).
    #[arg(
        long,
        env = "EXTILITY_MIN_FREE_SPACE",
        value_name = "SIZE",
        default_value = "1G"
    )]
    #[arg(help_heading = STORAGE)]
    pub min_free_space: String,
    /// Do not create the demo catalogue on an empty database.
    #[arg(long, env = "EXTILITY_NO_DEMO")]
    #[arg(help_heading = BASICS)]
    pub no_demo: bool,
    /// Failed logins one client address may make in the login window before its logins are
    /// refused (HTTP 429) without checking the password; 0: no limit.
    #[arg(
        long,
        env = "EXTILITY_LOGIN_FAILURES_PER_ADDRESS",
        default_value_t = 50
    )]
    #[arg(help_heading = LOGINS)]
    pub login_failures_per_address: u32,
    /// Failed logins for one account from one client address in the login window before that
    /// account's logins from that address are refused; 0: no limit. The same account from
    /// other addresses is not refused.
    #[arg(
        long,
        env = "EXTILITY_LOGIN_FAILURES_PER_ACCOUNT",
        default_value_t = 10
    )]
    #[arg(help_heading = LOGINS)]
    pub login_failures_per_account: u32,
    /// The login window: failures are forgotten at the limit's pace over this many seconds.
    #[arg(long, env = "EXTILITY_LOGIN_WINDOW_SECONDS", default_value_t = 300)]
    #[arg(help_heading = LOGINS)]
    pub login_window_seconds: u64,
    /// Password checks that may wait for a core in each line (callers without recent
    /// failures, and the others); more are refused at once (HTTP 429).
    #[arg(long, env = "EXTILITY_LOGIN_QUEUE", default_value_t = 64)]
    #[arg(help_heading = LOGINS)]
    pub login_queue: usize,
    /// How long an authentication token lives when GetAuthenticationToken is not told
    /// (`expiry_seconds`): seconds, or with a unit (`30m`, `1h`, `7d`); at most
    /// `--max-token-lifetime`.
    #[arg(
        long,
        env = "EXTILITY_DEFAULT_TOKEN_LIFETIME",
        value_name = "SECONDS",
        default_value = "1h",
        value_parser = positive_seconds
    )]
    #[arg(help_heading = LOGINS)]
    pub default_token_lifetime: u64,
    /// The longest an authentication token may live: GetAuthenticationToken refuses a longer
    /// `expiry_seconds` (INVALID_ARGUMENT), and a token made with a token never outlives it.
    /// Seconds, or with a unit (`30m`, `24h`, `30d`).
    #[arg(
        long,
        env = "EXTILITY_MAX_TOKEN_LIFETIME",
        value_name = "SECONDS",
        default_value = "24h",
        value_parser = positive_seconds
    )]
    #[arg(help_heading = LOGINS)]
    pub max_token_lifetime: u64,
    /// Authentication tokens one customer may hold at once (neither expired nor revoked);
    /// GetAuthenticationToken beyond it fails with LIMIT_EXCEEDED.
    #[arg(long, env = "EXTILITY_MAX_TOKENS_PER_CUSTOMER", default_value_t = 100)]
    #[arg(help_heading = LOGINS)]
    pub max_tokens_per_customer: i64,
    /// A reverse proxy's address range: requests from it are counted under the client
    /// address its `X-Forwarded-For` names. Repeatable; the variable takes a comma-separated
    /// list.
    #[arg(
        long = "trusted-proxy",
        env = "EXTILITY_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    #[arg(help_heading = LOGINS)]
    pub trusted_proxies: Vec<IpNet>,
    /// Seconds between sweeps for volume files no volume refers to
    /// (docs/src/operators/configuration.md).
    #[arg(
        long,
        env = "EXTILITY_ORPHAN_SWEEP_SECONDS",
        default_value_t = 300,
        hide = true
    )]
    pub orphan_sweep_seconds: u64,
    /// Seconds since its last change before such a file is deleted.
    #[arg(
        long,
        env = "EXTILITY_ORPHAN_MIN_AGE_SECONDS",
        default_value_t = 3600,
        hide = true
    )]
    pub orphan_min_age_seconds: u64,
    #[command(next_help_heading = NETWORK)]
    #[command(flatten)]
    pub network: NetworkArgs,
    #[command(next_help_heading = STORAGE)]
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Where volumes live (docs/src/operators/storage.md).
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// `files`: raw sparse files in the data directory (thin clones are qcow2 overlays);
    /// `rbd`: images of a Ceph RBD pool, shared by every node (thin clones are RBD clones).
    #[arg(
        long = "storage",
        env = "EXTILITY_STORAGE",
        value_enum,
        default_value = "files"
    )]
    pub backend: StorageBackend,
    /// The RBD pool volumes are made in (with `--storage rbd`; `rbd pool init` done).
    #[arg(
        long,
        env = "EXTILITY_RBD_POOL",
        required_if_eq("backend", "rbd"),
        value_name = "POOL"
    )]
    pub rbd_pool: Option<String>,
    /// The Ceph configuration file (Ceph's default, `/etc/ceph/ceph.conf`, when not given); its
    /// keyring is found as Ceph finds it.
    #[arg(long, env = "EXTILITY_CEPH_CONF", value_name = "FILE")]
    pub ceph_conf: Option<PathBuf>,
    /// The Ceph user, without `client.` (Ceph's default, `admin`, when not given).
    #[arg(long, env = "EXTILITY_CEPH_USER", value_name = "NAME")]
    pub ceph_user: Option<String>,
    /// The Ceph user confined VMs open their RBD images as, without `client.`: one whose caps
    /// reach only the pool's images (`ceph auth get-or-create client.extility-vm mon 'profile
    /// rbd' osd 'profile rbd pool=POOL'`). Each VM gets a copy of its keyring
    /// (`--ceph-vm-keyring`); without both, VMs open images as `--ceph-user` with no keyring
    /// of their own, which works only on a cluster without cephx.
    #[arg(
        long,
        env = "EXTILITY_CEPH_VM_USER",
        value_name = "NAME",
        requires = "ceph_vm_keyring"
    )]
    pub ceph_vm_user: Option<String>,
    /// The keyring of `--ceph-vm-user` (readable by root).
    #[arg(
        long,
        env = "EXTILITY_CEPH_VM_KEYRING",
        value_name = "FILE",
        requires = "ceph_vm_user"
    )]
    pub ceph_vm_keyring: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageBackend {
    Files,
    Rbd,
}

/// How guests are networked (docs/src/operators/networking.md).
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// `bridge`: a bridge per VLAN, a tap per NIC, DHCP, the metadata service, port forwards
    /// and firewall rules (needs root or CAP_NET_ADMIN, `ip`, `nft` and `dnsmasq`); `user`:
    /// QEMU's user-mode network, confined to DHCP and the metadata service; `auto`: bridge
    /// when this process can, else user.
    #[arg(
        long = "network",
        env = "EXTILITY_NETWORK",
        value_enum,
        default_value = "auto"
    )]
    pub mode: NetworkMode,
    /// Whether guests reach the world outside the host, through NAT (never the host itself,
    /// its networks, other VLANs, loopback or link-local addresses).
    #[arg(long, env = "EXTILITY_GUEST_EGRESS", value_enum, default_value = "on")]
    pub guest_egress: OnOff,
    /// The addresses VLAN subnets are cut from.
    #[arg(long, env = "EXTILITY_VLAN_SUBNETS", default_value = "10.64.0.0/10")]
    pub vlan_subnets: ipnet::Ipv4Net,
    /// The prefix length of each VLAN's subnet.
    #[arg(long, env = "EXTILITY_VLAN_PREFIX", default_value_t = 24,
          value_parser = clap::value_parser!(u8).range(16..=29))]
    pub vlan_prefix: u8,
    /// This node's address on the network between nodes: with it, each VLAN's bridge is
    /// joined to the other nodes' (those that set theirs) by VXLAN (UDP 4789, accepted from
    /// those nodes only), so that a VLAN spans the cluster.
    #[arg(long, env = "EXTILITY_TUNNEL_ADDRESS", value_name = "IP")]
    pub tunnel_address: Option<std::net::Ipv4Addr>,
    /// Where the tenant networks' dnsmasq files are (configuration, DHCP hosts, names,
    /// leases), in a directory per data directory and node: dnsmasq drops its privileges
    /// (to `nobody`) and must still read them, so every directory above must be searchable
    /// by other users; the server refuses to start otherwise. Not in the data directory,
    /// which may be private.
    #[arg(
        long,
        env = "EXTILITY_NETWORK_RUN_DIR",
        default_value = "/run/extility/network"
    )]
    pub network_run_dir: std::path::PathBuf,
    /// The port of this node's metadata listener, where guests' connections to
    /// 169.254.169.254:80 are redirected (only guests reach it).
    #[arg(long, env = "EXTILITY_METADATA_PORT", default_value_t = 8775)]
    pub metadata_port: u16,
    /// The host ports port forwards are given from (`FIRST-LAST`).
    #[arg(long, env = "EXTILITY_PORT_FORWARD_PORTS", default_value = "20000-29999",
          value_parser = port_range)]
    pub port_forward_ports: (u16, u16),
    /// A network guests never reach even with egress on (the platform's management networks
    /// beyond the host's own, which are always out of reach). Repeatable; the variable takes a
    /// comma-separated list.
    #[arg(
        long = "guest-deny",
        env = "EXTILITY_GUEST_DENY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub guest_deny: Vec<ipnet::Ipv4Net>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkMode {
    Auto,
    Bridge,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// `--listen`: HOST:PORT, where HOST is an address or a name (`localhost:8080`).
fn listen_address(text: &str) -> Result<String, String> {
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        return Ok(text.to_string());
    }
    if text.parse::<u16>().is_ok() {
        return Err(format!(
            "expects HOST:PORT, not a port alone: --listen 127.0.0.1:{text} (this machine only) \
             or --listen 0.0.0.0:{text} (every interface)"
        ));
    }
    Err(format!(
        "'{text}' is not HOST:PORT (like 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080)"
    ))
}

fn port_range(text: &str) -> Result<(u16, u16), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("'{text}' is not FIRST-LAST"))?;
    let parse = |p: &str| p.trim().parse::<u16>().map_err(|e| format!("'{p}': {e}"));
    let (first, last) = (parse(first)?, parse(last)?);
    if first == 0 || first > last {
        return Err(format!("'{text}': need 1 <= FIRST <= LAST"));
    }
    Ok((first, last))
}

/// The resolved configuration of a serving node.
pub type Config = ServeArgs;

/// A memory size ([`crate::size::parse_size`]: bytes, or a number with a binary suffix, `256M`,
/// `1G`), of at least 1 MiB.
fn memory_size(text: &str) -> Result<u64, String> {
    let bytes = crate::size::parse_size(text)?;
    if bytes < 1 << 20 {
        return Err(format!("'{}' is less than 1M", text.trim()));
    }
    Ok(bytes)
}

/// The image checker's appliance memory: libguestfs's appliance does not boot in less than
/// 256 MiB, and more than 16 GiB is a typo.
fn hygiene_memory(text: &str) -> Result<u64, String> {
    let bytes = crate::size::parse_size(text)?;
    if bytes < 256 << 20 {
        return Err(format!("'{}' is less than 256M", text.trim()));
    }
    if bytes > 16 << 30 {
        return Err(format!("'{}' is more than 16G", text.trim()));
    }
    Ok(bytes)
}

/// Seconds: a number, or a number with `s`, `m` (`min`) or `h`.
fn seconds(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("'{text}' is not a duration (examples: 300, 90s, 30m, 6h, 7d)");
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("'{text}' is too long"))
}

/// A duration ([`seconds`]) of at least one second, at most 100 years.
fn positive_seconds(text: &str) -> Result<u64, String> {
    match seconds(text)? {
        0 => Err(format!("'{}' must be at least 1 s", text.trim())),
        s if s > 100 * 365 * 86400 => Err(format!("'{}' is too long", text.trim())),
        s => Ok(s),
    }
}

/// A size of at least 1 MiB, or 0 (no bound): a decoder legitimately reads up to a few hundred
/// KiB before it produces anything.
fn padding_size(text: &str) -> Result<u64, String> {
    match crate::size::parse_size(text)? {
        0 => Ok(0),
        _ => memory_size(text),
    }
}

/// `FIRST-LAST`, a range of uids.
fn parse_uid_range(text: &str) -> Result<(u32, u32), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("'{text}' is not FIRST-LAST"))?;
    let number = |n: &str| {
        n.trim()
            .parse::<u32>()
            .map_err(|_| format!("'{n}' is not a uid"))
    };
    let (first, last) = (number(first)?, number(last)?);
    if first == 0 || first > last {
        return Err(format!(
            "{first}-{last} is not a range of unprivileged uids"
        ));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_uids_are_a_range_of_unprivileged_uids() {
        assert_eq!(parse_uid_range("1000-1009"), Ok((1000, 1009)));
        assert_eq!(parse_uid_range("7-7"), Ok((7, 7)));
        for bad in ["0-10", "10-9", "x-10", "10", "-1-5", "1-99999999999"] {
            assert!(parse_uid_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_sizes_take_binary_suffixes_or_bytes() {
        assert_eq!(memory_size("256M"), Ok(256 << 20));
        assert_eq!(memory_size("256MiB"), Ok(256 << 20));
        assert_eq!(memory_size("1g"), Ok(1 << 30));
        assert_eq!(memory_size("268435456"), Ok(256 << 20));
        assert_eq!(memory_size("1024K"), Ok(1 << 20));
        assert_eq!(memory_size("1.5G"), Ok(3 << 29));
        for bad in ["", "M", "-1M", "256X", "two"] {
            let err = memory_size(bad).unwrap_err();
            assert!(err.contains("not a size"), "{bad}: {err}");
        }
        assert!(memory_size("1000K").unwrap_err().contains("less than 1M"));
        assert!(memory_size("99999999T").unwrap_err().contains("too large"));
    }

    fn serve(args: &[&str]) -> ServeArgs {
        let cli = Cli::parse_from(["extility", "serve"].iter().chain(args));
        let Command::Serve(serve) = cli.command else {
            panic!("not serve");
        };
        *serve
    }

    #[test]
    fn hygiene_bounds_have_defaults() {
        let d = serve(&[]);
        assert_eq!((d.hygiene_memory, d.hygiene_timeout), (768 << 20, 900));
        assert!(!d.publish_requires_clean);
        let set = serve(&[
            "--hygiene-memory",
            "1G",
            "--hygiene-timeout",
            "90s",
            "--publish-requires-clean",
        ]);
        assert_eq!((set.hygiene_memory, set.hygiene_timeout), (1 << 30, 90));
        assert!(set.publish_requires_clean);
        assert!(
            hygiene_memory("128M")
                .unwrap_err()
                .contains("less than 256M")
        );
    }

    #[test]
    fn fetch_budgets_have_defaults_and_take_units() {
        let d = serve(&[]);
        assert_eq!(d.fetch_deadline, 6 * 3600);
        assert_eq!((d.fetch_min_throughput, d.fetch_grace), (64 << 10, 300));
        assert_eq!((d.fetch_max_retries, d.fetch_max_padding), (10, 64 << 20));
        let set = serve(&[
            "--fetch-deadline",
            "3",
            "--fetch-min-throughput",
            "1M",
            "--fetch-grace",
            "90s",
            "--fetch-max-retries",
            "0",
            "--fetch-max-padding",
            "0",
        ]);
        assert_eq!(set.fetch_deadline, 3);
        assert_eq!((set.fetch_min_throughput, set.fetch_grace), (1 << 20, 90));
        assert_eq!((set.fetch_max_retries, set.fetch_max_padding), (0, 0));
        assert_eq!(seconds("30m"), Ok(1800));
        assert_eq!(seconds("2 min"), Ok(120));
        assert_eq!(seconds("6H"), Ok(21600));
        assert_eq!(seconds("7d"), Ok(7 * 86400));
        for bad in ["", "h", "-1", "1.5h", "3w"] {
            assert!(
                seconds(bad).unwrap_err().contains("not a duration"),
                "{bad}"
            );
        }
        assert!(padding_size("64K").unwrap_err().contains("less than 1M"));
        assert_eq!(padding_size("1M"), Ok(1 << 20));
    }

    #[test]
    fn token_lifetimes_have_defaults_and_take_units() {
        let d = serve(&[]);
        assert_eq!(
            (d.default_token_lifetime, d.max_token_lifetime),
            (3600, 86400)
        );
        assert_eq!(d.max_tokens_per_customer, 100);
        let set = serve(&[
            "--max-token-lifetime",
            "30d",
            "--default-token-lifetime",
            "10m",
        ]);
        assert_eq!(
            (set.default_token_lifetime, set.max_token_lifetime),
            (600, 30 * 86400)
        );
        assert!(positive_seconds("0").unwrap_err().contains("at least 1 s"));
        assert!(
            positive_seconds("99999999d")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn the_decompression_limit_defaults_to_256_mib() {
        let cli = Cli::parse_from(["extility", "serve"]);
        let Command::Serve(serve) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(serve.max_decompression_memory, 256 << 20);
        let cli = Cli::parse_from(["extility", "serve", "--max-decompression-memory", "1G"]);
        let Command::Serve(serve) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(serve.max_decompression_memory, 1 << 30);
    }
}
