//! Fleet commands: `artifact keygen|sign|upload|list` and `fleet-sim`.

pub mod sim;

use super::GlobalArgs;
use super::client::{Api, Connection};
use crate::output::OutputFormat;
use anyhow::Context;
use clap::{Args, Subcommand};
use cutover_server::fleet::artifacts;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Signed, content-addressed artifacts (firmware images, bundles).
    #[command(subcommand)]
    Artifact(ArtifactCommand),
    /// Many simulated devices in one process speaking the real protocol.
    FleetSim(sim::FleetSimArgs),
}

#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Generate an ed25519 signing key pair.
    Keygen {
        /// Where to write the secret key (hex); the public key goes to FILE.pub.
        #[arg(long, default_value = "cutover-signing.key")]
        out: PathBuf,
        /// Overwrite an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Sign a file for a version: prints its sha256 and signature.
    #[command(disable_version_flag = true)]
    Sign(SignArgs),
    /// Upload a file, signed, as a version for some hardware.
    #[command(disable_version_flag = true)]
    Upload {
        #[command(flatten)]
        sign: SignArgs,
        /// Compatible hardware models, comma-separated.
        #[arg(long)]
        hardware: Option<String>,
        /// firmware or release.
        #[arg(long, default_value = "firmware")]
        kind: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// List the server's artifacts.
    List {
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The artifact file.
    pub file: PathBuf,
    /// The artifact's version (signed with its digest).
    #[arg(long)]
    pub version: String,
    /// The secret key file written by `artifact keygen`.
    #[arg(long, default_value = "cutover-signing.key")]
    pub key: PathBuf,
}

struct Signed {
    sha256: String,
    size: u64,
    signature: String,
    key_id: String,
}

fn sign_file(a: &SignArgs) -> anyhow::Result<Signed> {
    if a.version.trim().is_empty() {
        anyhow::bail!("--version must not be empty");
    }
    let text = std::fs::read_to_string(&a.key)
        .with_context(|| format!("cannot read the signing key {}", a.key.display()))?;
    let key = artifacts::parse_secret(&text).with_context(|| format!("in {}", a.key.display()))?;
    let (sha256, size) = artifacts::digest_file(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let signature = artifacts::sign(&key, &sha256, &a.version);
    Ok(Signed {
        sha256,
        size,
        signature,
        key_id: artifacts::key_id(&key),
    })
}

pub async fn run(command: FleetCommand, global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        FleetCommand::Artifact(c) => artifact(c, global).await,
        FleetCommand::FleetSim(args) => sim::run(args, global).await,
    }
}

async fn artifact(command: ArtifactCommand, global: &GlobalArgs) -> anyhow::Result<u8> {
    let json = matches!(global.output, OutputFormat::Json);
    match command {
        ArtifactCommand::Keygen { out, force } => {
            let public = PathBuf::from(format!("{}.pub", out.display()));
            if out.exists() && !force {
                anyhow::bail!("{} exists; pass --force to overwrite it", out.display());
            }
            let pair = artifacts::keygen();
            write_secret(&out, &pair.secret_hex)
                .with_context(|| format!("cannot write {}", out.display()))?;
            std::fs::write(&public, format!("{}\n", pair.public_hex))
                .with_context(|| format!("cannot write {}", public.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"secret_key_file": out, "public_key_file": public, "public_key": pair.public_hex})
                );
            } else {
                println!("secret key: {} (keep it private)", out.display());
                println!("public key: {} = {}", public.display(), pair.public_hex);
                println!("put the public key in each agent's public_keys");
            }
            Ok(0)
        }
        ArtifactCommand::Sign(a) => {
            let s = sign_file(&a)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"file": a.file, "version": a.version, "sha256": s.sha256, "size": s.size,
                        "signature": s.signature, "key_id": s.key_id})
                );
            } else {
                println!("sha256:    {}", s.sha256);
                println!("size:      {}", s.size);
                println!("signature: {}", s.signature);
                println!("key id:    {}", s.key_id);
            }
            Ok(0)
        }
        ArtifactCommand::Upload {
            sign,
            hardware,
            kind,
            conn,
        } => {
            let s = sign_file(&sign)?;
            let bytes = std::fs::read(&sign.file)
                .with_context(|| format!("cannot read {}", sign.file.display()))?;
            let api = Api::new(&conn)?;
            let mut query = vec![
                ("version", sign.version.clone()),
                ("kind", kind),
                ("signature", s.signature.clone()),
                ("key_id", s.key_id.clone()),
            ];
            if let Some(h) = hardware {
                query.push(("hardware", h));
            }
            let mut url = reqwest::Url::parse("http://query.invalid/").expect("a fixed url parses");
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
            let path = format!("/api/artifacts/upload?{}", url.query().unwrap_or_default());
            let row: serde_json::Value = api
                .send(api.request(reqwest::Method::POST, &path).body(bytes))
                .await?;
            if json {
                println!("{row}");
            } else {
                println!(
                    "uploaded {} {} as {} (sha256 {})",
                    row["kind"].as_str().unwrap_or(""),
                    row["version"].as_str().unwrap_or(""),
                    row["id"].as_str().unwrap_or(""),
                    row["sha256"].as_str().unwrap_or("")
                );
            }
            Ok(0)
        }
        ArtifactCommand::List { conn } => {
            let api = Api::new(&conn)?;
            let v: serde_json::Value = api.get("/api/artifacts").await?;
            if json {
                println!("{v}");
            } else {
                let rows = v["artifacts"].as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("no artifacts");
                }
                for r in rows {
                    println!(
                        "{}  {:<10} {:<8} {:>10} B  {}",
                        r["id"].as_str().unwrap_or(""),
                        r["version"].as_str().unwrap_or(""),
                        r["kind"].as_str().unwrap_or(""),
                        r["size_bytes"],
                        r["sha256"].as_str().unwrap_or("").get(..16).unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
    }
}

/// Writes the secret key readable by its owner only.
fn write_secret(path: &std::path::Path, hex: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{hex}\n").as_bytes())
}
