//! `cutover serve`: the control plane on one address, configured by the seed's
//! `deployment-config.yaml` (environments, security, database, server.listen).

use super::GlobalArgs;
use anyhow::Context;
use clap::{Args, Subcommand};
use cutover_core::config::{DeploymentConfig, Vars};
use cutover_server::fleet::broker::BrokerTls;
use cutover_server::fleet::{FleetPlane, FleetSettings};
use cutover_server::settings::{ServerSettings, from_config};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Run the control plane: REST API, web UI, metrics.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The deployment configuration (the seed's deployment-config.yaml); defaults without it.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL; overrides database.connection_string (default sqlite://cutover.db).
    #[arg(long, env = "CUTOVER_DATABASE_URL")]
    pub database: Option<String>,
    /// Address to listen on; overrides server.listen (default 127.0.0.1:5001).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The file with the secret API keys are hashed with (default: beside a SQLite database).
    #[arg(long, env = "CUTOVER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Ed25519 public key (hex or base64 of 32 bytes) accepted for EdDSA bearer tokens;
    /// may be given several times.
    #[arg(
        long = "jwt-public-key",
        env = "CUTOVER_JWT_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    pub jwt_public_keys: Vec<String>,
    /// Required `iss` of bearer tokens.
    #[arg(long, env = "CUTOVER_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of bearer tokens.
    #[arg(long, env = "CUTOVER_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Address of the embedded MQTT broker; overrides mqtt.listen (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub mqtt_listen: Option<SocketAddr>,
    /// Serve the API only, without the MQTT broker and the orchestrator (another replica
    /// runs them); executions then wait in the store until one claims them.
    #[arg(long)]
    pub api_only: bool,
    /// Where artifact blobs are kept; overrides artifacts.dir.
    #[arg(long, value_name = "DIR")]
    pub artifact_dir: Option<PathBuf>,
}

/// The fleet plane's settings from the configuration and flags.
fn fleet_settings(
    args: &ServeArgs,
    config: &DeploymentConfig,
    server: &ServerSettings,
) -> anyhow::Result<FleetSettings> {
    let mqtt = &config.mqtt;
    let tls = mqtt.tls.clone().unwrap_or_default();
    let read = |key: &str, file: &Option<String>| -> anyhow::Result<Option<Vec<u8>>> {
        match file {
            Some(file) => {
                Ok(Some(std::fs::read(file).with_context(|| {
                    format!("cannot read mqtt.tls.{key} {file}")
                })?))
            }
            None => Ok(None),
        }
    };
    let broker_tls = match (mqtt.tls_listen(), &tls.cert_file, &tls.key_file) {
        (Some(listen), Some(cert), Some(key)) if mqtt.embedded() => Some(BrokerTls {
            listen,
            cert_file: PathBuf::from(cert),
            key_file: PathBuf::from(key),
        }),
        _ => None,
    };
    Ok(FleetSettings {
        broker_listen: args.mqtt_listen.unwrap_or(mqtt.listen.0),
        mqtt_url: mqtt.url.as_ref().map(|u| u.as_str().to_string()),
        mqtt_username: mqtt.username.clone(),
        mqtt_password: mqtt.password.clone(),
        mqtt_ca_pem: read("ca_file", &tls.ca_file)?,
        mqtt_client_cert_pem: read("client_cert_file", &tls.client_cert_file)?,
        mqtt_client_key_pem: read("client_key_file", &tls.client_key_file)?,
        broker_tls,
        health_checks: server
            .environments
            .iter()
            .map(|env| {
                let checks = server
                    .health_checks
                    .keys()
                    .filter_map(|name| server.health_check(&env.name, name))
                    .collect();
                (env.name.clone(), checks)
            })
            .collect(),
        artifact_dir: args
            .artifact_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&config.artifacts.dir)),
        ..FleetSettings::default()
    })
}

pub async fn run(command: ServeCommand, _global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        ServeCommand::Serve(args) => serve(args).await,
    }
}

/// Reads and validates the configuration, printing its warnings.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<DeploymentConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lookup = |var: &str| std::env::var(var).ok();
    let overrides: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with("CUTOVER_"))
        .collect();
    let vars = Vars::new(&lookup).with_overrides(&overrides);
    let mut warnings = Vec::new();
    let config = DeploymentConfig::parse(&text, &path.display().to_string(), &vars, &mut warnings);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    config.map_err(|e| anyhow::anyhow!("{e}"))
}

fn decode_key(text: &str) -> anyhow::Result<[u8; 32]> {
    use base64::Engine;
    let t = text.trim();
    let bytes = hex::decode(t)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .or_else(|| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
        })
        .with_context(|| format!("--jwt-public-key {t:?} is neither hex nor base64"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!(
            "--jwt-public-key must be 32 bytes (an Ed25519 public key), got {}",
            b.len()
        )
    })
}

/// The settings `cutover serve` would use, and the database URL and address.
pub fn settings_for(
    args: &ServeArgs,
) -> anyhow::Result<(ServerSettings, String, SocketAddr, DeploymentConfig)> {
    let config = match &args.config {
        Some(path) => load_config(path)?,
        None => DeploymentConfig::default(),
    };
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| config.database.connection_string.as_str().to_string());
    let secret = cutover_server::auth::resolve_secret(args.secret_file.as_deref(), &database)
        .context("cannot read or create the key secret")?;
    let mut settings = if args.config.is_some() {
        from_config(&config, secret)
    } else {
        ServerSettings::new(secret)
    };
    for key in &args.jwt_public_keys {
        settings
            .security
            .jwt
            .ed25519_public_keys
            .push(decode_key(key)?);
    }
    settings.security.jwt.issuer = args.jwt_issuer.clone();
    settings.security.jwt.audience = args.jwt_audience.clone();
    let listen = args.listen.unwrap_or(config.server.listen.0);
    Ok((settings, database, listen, config))
}

async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let (settings, database, listen, config) = settings_for(&args)?;
    let max_connections = config.database.max_connections();
    let store = cutover_store::Store::connect_with(
        &database,
        &cutover_store::ConnectOptions {
            max_connections: max_connections.max(2),
            ..Default::default()
        },
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the database {}",
            cutover_store::redact_url(&database)
        )
    })?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    // Environments are in the store before anyone is told the server is up.
    cutover_server::sync_environments(&store, &settings).await?;
    let (stop_fleet, fleet_shutdown) = tokio::sync::watch::channel(false);
    let fleet = if args.api_only {
        None
    } else {
        Some(
            FleetPlane::start(fleet_settings(&args, &config, &settings)?, store.clone(), fleet_shutdown)
                .await
                .context("cannot start the fleet plane (MQTT broker and orchestrator); --mqtt-listen 127.0.0.1:0 picks a free port")?,
        )
    };
    eprintln!(
        "cutover serving the API on http://{local} (database {}, mqtt {})",
        cutover_store::redact_url(&database),
        match &fleet {
            None => "off: --api-only".to_string(),
            Some(f) => match f.tls_broker_url() {
                Some(tls) => format!("{} and {tls}", f.broker_url()),
                None => f.broker_url().to_string(),
            },
        }
    );
    let shutdown = async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        eprintln!("cutover: shutting down");
        let _ = stop_fleet.send(true);
    };
    let mut server = cutover_server::Server::new(settings, store);
    if let Some(fleet) = &fleet {
        server = server.with_fleet(fleet);
    }
    server.serve(listener, shutdown).await?;
    Ok(0)
}
