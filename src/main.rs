use clap::Parser;
use tracing_subscriber::EnvFilter;

use extility::config::{BillingEntityCommand, Cli, Command, CustomerCommand};
use extility::ops::{billing, customer};
use extility::startup::{Application, open_database};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => Application::build(config).await?.run().await,
        Command::Migrate(db) => {
            open_database(&db.data_dir, &db.database_url()).await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Customer(CustomerCommand::Add {
            email,
            password,
            admin,
            billing_entity,
            db,
        }) => {
            let database = open_database(&db.data_dir, &db.database_url()).await?;
            let made =
                customer::create_customer(&database, &email, &password, admin, &billing_entity)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.public_message()))?;
            println!("customer_id={}", made.customer_id);
            println!("customer_uuid={}", made.customer_uuid);
            println!("billing_entity_uuid={}", made.billing_entity_uuid);
            println!("vdc_id={}", made.vdc_id);
            Ok(())
        }
        Command::BillingEntity(BillingEntityCommand::Add { name, db }) => {
            let database = open_database(&db.data_dir, &db.database_url()).await?;
            let made = billing::create_billing_entity(&database, &name)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.public_message()))?;
            println!("billing_entity_id={}", made.id);
            println!("billing_entity_uuid={}", made.uuid);
            Ok(())
        }
        Command::Wsdl { address } => {
            print!("{}", extility::api::wsdl::render(&address));
            Ok(())
        }
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(extility::api::openapi::document())?
            );
            Ok(())
        }
    }
}
