use std::process::ExitCode;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use extility::config::{
    BillingEntityCommand, Cli, Command, CustomerCommand, LogFormat, StorageBackend,
};
use extility::ops::accounts::quota::{self, QuotaChange, QuotaName};
use extility::ops::{
    accounts::billing, accounts::customer, audit, platform::backup, platform::node,
    platform::prune, platform::rbd_backup,
};
use extility::startup::{
    Application, open_database, open_existing_database, open_storage, parse_quota,
};

/// Runs the command; an error is printed as one message with its causes (`error: ...: ...`)
/// and exit status 1, never with a backtrace: these are the user's mistakes or the machine's
/// state, and the message says which. Internal errors are logged with their details.
fn main() -> ExitCode {
    match run_command() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command() -> anyhow::Result<()> {
    let cli = extility::cli::parse();
    if let Command::MetadataProxy {
        service,
        path,
        token_file,
    } = &cli.command
    {
        // A process per guest connection: no runtime, no logging (stderr is the connection).
        std::process::exit(extility::hypervisor::qemu::metadata_proxy::run(
            service,
            path,
            token_file.as_deref(),
        ));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // One JSON object per line, for journald, Loki, Elasticsearch and the like.
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        // Colours only for a terminal.
        logs.with_ansi(terminal).init();
    }
    match cli.command {
        Command::Serve(config) => Application::build(*config).await?.run().await,
        Command::Nodes {
            db,
            job_lease_seconds,
            json,
        } => {
            let database = open_existing_database(&db.database_url()).await?;
            let nodes = node::list_nodes(&database, job_lease_seconds as i64 * 1000).await?;
            if json {
                for n in &nodes {
                    println!(
                        "{}",
                        serde_json::json!({
                            "node": n.id, "alive": n.alive, "address": n.address,
                            "tunnel_address": n.tunnel_address,
                            "can_run_vms": n.can_run_vms, "vcpus": n.vcpus,
                            "memory_mb": n.memory_mb, "servers": n.servers,
                            "used_vcpus": n.used_vcpus, "used_memory_mb": n.used_memory_mb,
                            "last_seen_ago_ms": n.last_seen_ago_ms, "version": n.version,
                        })
                    );
                }
            } else {
                print!("{}", node::render_table(&nodes));
            }
            Ok(())
        }
        Command::Backup {
            dest,
            db,
            storage,
            prune_keep,
            prune_older_than,
        } => {
            // The rule is checked before anything is copied.
            let keep = prune::Keep {
                newest: prune_keep.map(|n| n as usize),
                younger_than: prune_older_than
                    .as_deref()
                    .map(prune::parse_age)
                    .transpose()
                    .context("--prune-older-than")?,
            };
            let database = open_existing_database(&db.database_url()).await?;
            let rbd = if storage.backend == StorageBackend::Rbd {
                let storage = open_storage(&storage, &db.data_dir)?;
                let copied = rbd_backup::backup(
                    &database,
                    &db.database_url(),
                    storage.clone(),
                    &db.data_dir,
                    &dest,
                )
                .await?;
                println!(
                    "backed up the database and {} volumes (RBD snapshots) into {}",
                    copied.volumes,
                    dest.display()
                );
                report_missing(&copied.missing);
                Some(storage)
            } else {
                let copied =
                    backup::backup(&database, &db.database_url(), &db.data_dir, &dest).await?;
                println!(
                    "backed up the database and {} volumes ({} bytes of data) into {}",
                    copied.volumes,
                    copied.bytes,
                    dest.display()
                );
                report_missing(&copied.missing);
                None
            };
            if keep.prunes() {
                let pruned =
                    tokio::task::spawn_blocking(move || prune::prune(&dest, keep, rbd.as_deref()))
                        .await??;
                for removed in &pruned.removed {
                    println!("pruned the backup {}", removed.display());
                }
                println!(
                    "pruning removed {} backups and kept {} besides this one",
                    pruned.removed.len(),
                    pruned.kept
                );
            }
            Ok(())
        }
        Command::Restore {
            src,
            data_dir,
            storage,
            database_url,
        } => {
            // A PostgreSQL backup's database goes into an empty database, checked first.
            let postgres = if src.join(rbd_backup::PG_DUMP).exists() {
                let url = database_url.context(
                    "this backup holds a PostgreSQL database: give --database-url of a new, \
                     empty database to restore it into",
                )?;
                let database = open_existing_database(&url).await?;
                backup::postgres_restorable(&src, &database).await?;
                Some((database, url))
            } else {
                anyhow::ensure!(
                    database_url.is_none(),
                    "this backup holds a SQLite database, which restores into the data \
                     directory: leave --database-url out"
                );
                None
            };
            let source = src.clone();
            let copied = if storage.backend == StorageBackend::Rbd {
                let storage = open_storage(&storage, &data_dir)?;
                tokio::task::spawn_blocking(move || {
                    rbd_backup::restore(&src, &data_dir, storage.as_ref())
                })
                .await??
            } else {
                tokio::task::spawn_blocking(move || backup::restore(&src, &data_dir)).await??
            };
            if let Some((database, url)) = postgres {
                backup::restore_postgres(&source, &database, &url).await?;
                println!("restored the PostgreSQL database");
            }
            println!(
                "restored the database and {} volumes ({} bytes of data)",
                copied.volumes, copied.bytes
            );
            report_missing(&copied.missing);
            Ok(())
        }
        Command::Verify { db, storage } => {
            let database = open_existing_database(&db.database_url()).await?;
            let storage = open_storage(&storage, &db.data_dir)?;
            let findings = backup::verify(&database, storage.as_ref()).await?;
            for finding in &findings {
                println!("{}", finding.0);
            }
            anyhow::ensure!(
                findings.is_empty(),
                "{} disagreements between the database and the volume store",
                findings.len()
            );
            println!("the database and the volume store agree");
            Ok(())
        }
        Command::Migrate(db) => {
            open_database(&db.data_dir, &db.database_url()).await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Customer(CustomerCommand::Add {
            email,
            password,
            password_stdin,
            admin,
            billing_entity,
            db,
        }) => {
            let password = new_password(password, password_stdin)?;
            let database = open_database(&db.data_dir, &db.database_url()).await?;
            let record = audit::CommandRecord::new("customer add");
            let (made, written) = record
                .run(customer::create_customer(
                    &database,
                    &email,
                    &password,
                    admin,
                    &billing_entity,
                ))
                .await;
            let ids = match &made {
                Ok(made) => vec![("customer_id", made.customer_id), ("vdc_id", made.vdc_id)],
                Err(_) => Vec::new(),
            };
            record.finish(&database, &ids, &made, written).await;
            let made = made.map_err(|e| anyhow::anyhow!("{}", e.public_message()))?;
            println!("customer_id={}", made.customer_id);
            println!("customer_uuid={}", made.customer_uuid);
            println!("billing_entity_uuid={}", made.billing_entity_uuid);
            println!("vdc_id={}", made.vdc_id);
            Ok(())
        }
        Command::Customer(CustomerCommand::SetQuota {
            email,
            storage_bytes,
            servers,
            running_vcpus,
            running_memory,
            concurrent_jobs,
            vlans,
            port_forwards,
            firewall_templates,
            firewall_rules,
            unset,
            db,
        }) => {
            let mut changes = Vec::new();
            for (quota, flag, value) in [
                (QuotaName::StorageBytes, "--storage-bytes", storage_bytes),
                (QuotaName::Servers, "--servers", servers),
                (QuotaName::RunningVcpus, "--running-vcpus", running_vcpus),
                (
                    QuotaName::RunningMemoryMb,
                    "--running-memory",
                    running_memory,
                ),
                (
                    QuotaName::ConcurrentJobs,
                    "--concurrent-jobs",
                    concurrent_jobs,
                ),
                (QuotaName::Vlans, "--vlans", vlans),
                (QuotaName::PortForwards, "--port-forwards", port_forwards),
                (
                    QuotaName::FirewallTemplates,
                    "--firewall-templates",
                    firewall_templates,
                ),
                (QuotaName::FirewallRules, "--firewall-rules", firewall_rules),
            ] {
                if let Some(text) = value {
                    let limit =
                        parse_quota(quota, &text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
                    changes.push(QuotaChange::Set(quota, limit));
                }
            }
            for name in unset {
                let quota = QuotaName::parse(&name).ok_or_else(|| {
                    let names: Vec<_> = QuotaName::ALL.iter().map(|q| q.as_str()).collect();
                    anyhow::anyhow!("--unset: no quota is named '{name}' ({})", names.join(", "))
                })?;
                if changes
                    .iter()
                    .any(|c| matches!(c, QuotaChange::Set(q, _) if *q == quota))
                {
                    anyhow::bail!("--unset {}: the quota is also set", quota.as_str());
                }
                changes.push(QuotaChange::Unset(quota));
            }
            let database = open_database(&db.data_dir, &db.database_url()).await?;
            let record = audit::CommandRecord::new("customer set-quota");
            let (own, written) = record
                .run(quota::set_customer_quotas(&database, &email, &changes))
                .await;
            let mut conn = database.pool().acquire().await?;
            let ids: Vec<_> = customer::id_by_email(&mut conn, &email)
                .await
                .ok()
                .flatten()
                .map(|id| ("customer_id", id))
                .into_iter()
                .collect();
            drop(conn);
            record.finish(&database, &ids, &own, written).await;
            let own = own.map_err(|e| anyhow::anyhow!("{}", e.public_message()))?;
            // The customer's own limits; the others are the server's defaults (`--quota-*`).
            for quota in QuotaName::ALL {
                let shown = match own.iter().find(|(q, _)| *q == quota) {
                    None => "default".to_string(),
                    Some((_, None)) => "unlimited".to_string(),
                    Some((_, Some(limit))) => limit.to_string(),
                };
                println!("{}={shown}", quota.as_str());
            }
            Ok(())
        }
        Command::BillingEntity(BillingEntityCommand::Add { name, db }) => {
            let database = open_database(&db.data_dir, &db.database_url()).await?;
            let record = audit::CommandRecord::new("billing-entity add");
            let (made, written) = record
                .run(billing::create_billing_entity(&database, &name))
                .await;
            let ids: Vec<_> = made
                .as_ref()
                .map(|made| ("billing_entity_id", made.id))
                .into_iter()
                .collect();
            record.finish(&database, &ids, &made, written).await;
            let made = made.map_err(|e| anyhow::anyhow!("{}", e.public_message()))?;
            println!("billing_entity_id={}", made.id);
            println!("billing_entity_uuid={}", made.uuid);
            Ok(())
        }
        Command::Wsdl { version, address } => {
            use extility::api::wsdl;
            use extility::ops::registry::{self, CURRENT};
            let version = version.unwrap_or(CURRENT);
            if !registry::versions().any(|known| known == version) {
                anyhow::bail!("there is no API version {version}: versions are 1 to {CURRENT}");
            }
            let address = address.unwrap_or_else(|| {
                format!("http://localhost:8080{}", wsdl::endpoint_path(version))
            });
            print!("{}", wsdl::render(version, &address));
            Ok(())
        }
        Command::MetadataProxy { .. } => unreachable!("handled before logging starts"),
        Command::NetworkRules {
            nics,
            forwards,
            add_forward,
            metadata_port,
        } => {
            use extility::network::{nft, ruleset, sample};
            let config = nft::FirewallConfig {
                metadata_port,
                egress: false,
                pool: "10.64.0.0/10".parse()?,
                deny: Vec::new(),
                underlay: None,
            };
            let plan = sample::plan(nics, forwards);
            if add_forward {
                // The node keeps the rules it applied last: what a change costs is the new
                // rules and the difference.
                let before = nft::model(&plan, &config);
                let started = std::time::Instant::now();
                let after = nft::model(&sample::plan(nics, forwards + 1), &config);
                let script = ruleset::changes(&before, &after).unwrap_or_default();
                eprintln!("computed in {} us", started.elapsed().as_micros());
                print!("{script}");
            } else {
                print!("{}", nft::ruleset(&plan, &config));
            }
            Ok(())
        }
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(extility::api::openapi::document())?
            );
            Ok(())
        }
        Command::ApiReference => {
            print!("{}", extility::api::reference::render());
            Ok(())
        }
    }
}

/// The new customer's password: the first line of standard input (`--password-stdin`), the
/// flag or its variable, or typed twice at a prompt when standard input is a terminal.
fn new_password(given: Option<String>, from_stdin: bool) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        anyhow::ensure!(
            !password.is_empty(),
            "--password-stdin: standard input held no password"
        );
        return Ok(password);
    }
    if let Some(password) = given {
        return Ok(password);
    }
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "no password given: pipe it to --password-stdin, set EXTILITY_CUSTOMER_PASSWORD, or \
         run the command on a terminal to be asked for it"
    );
    let password = rpassword::prompt_password("Password for the new customer: ")?;
    let again = rpassword::prompt_password("The same password again: ")?;
    anyhow::ensure!(
        password == again,
        "the two passwords differ; nothing was made"
    );
    Ok(password)
}

/// Volumes a backup or restore could not keep: deleted (with their backup snapshots) meanwhile.
fn report_missing(missing: &[String]) {
    for volume in missing {
        println!("volume {volume} was deleted since: its row remains, and verify reports it");
    }
}
