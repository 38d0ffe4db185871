//! The standalone git-push commands of a single host: init, setup, execute,
//! releases, rollback, lock, logs, host.
//!
//! They are thin: the work is done by `cutover_agent::release`, which the
//! host agent shares.

pub mod bench;

use super::GlobalArgs;
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use cutover_agent::release::client::{HostClient, Launcher};
use cutover_agent::release::export::ExportLimits;
use cutover_agent::release::host::HostPaths;
use cutover_agent::release::install::{self, DeployError, DeployOptions, Manifest};
use cutover_agent::release::layout::{AppLayout, tail};
use cutover_agent::release::protocol::{Request, RunSpec};
use cutover_agent::release::{history, lock, managers};
use cutover_core::config::{HostConfig, ProcessManager};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A documented deploy.yml, as `cutover init` writes it.
pub const DEPLOY_YML_TEMPLATE: &str = include_str!("release/deploy.yml.template");

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Write a documented deploy.yml in the current directory.
    Init,
    /// Prepare this host for an app: bare repository with its post-receive
    /// hook, deployment directory, config.yml, and a systemd unit or pm2 file.
    Setup(SetupArgs),
    /// Deploy a pushed commit (run by the post-receive hook).
    Execute(ExecuteArgs),
    /// List an app's releases, failed releases and recent deploys.
    Releases {
        app: String,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Switch an app back to its previous release (or --to one), at once when it is still warm.
    Rollback {
        app: String,
        /// The release id to switch to (see `cutover releases APP`).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        dirs: DirArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Show or clear an app's deploy lock.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Show an app's output (the current release unless --release).
    Logs {
        app: String,
        #[arg(long)]
        release: Option<String>,
        /// How many lines from the end.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Keep printing new output.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// The built-in process manager: a per-host daemon holding the public ports.
    #[command(subcommand)]
    Host(HostCommand),
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the deploy lock of APP.
    Status {
        app: String,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Clear the deploy lock of APP (when its holder is stuck).
    Release {
        app: String,
        #[command(flatten)]
        dirs: DirArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Run the daemon in the foreground (`execute` starts it on demand).
    Run {
        #[command(flatten)]
        dirs: DirArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Stop the daemon and every release it runs.
    Stop {
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// What the daemon runs and serves.
    Status {
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Run APP's current release in the foreground on its public port (for systemd and pm2).
    Exec {
        app: String,
        #[command(flatten)]
        dirs: DirArgs,
    },
}

/// Where repositories and deployments live. Root: /var/repos and
/// /opt/deployments as in the seed; others: under ~/.local/share/cutover.
#[derive(Debug, Args, Clone)]
pub struct DirArgs {
    /// Base directory of the bare repositories.
    #[arg(long, env = "CUTOVER_REPOS_DIR")]
    pub repos_dir: Option<PathBuf>,
    /// Base directory of the deployments.
    #[arg(long, env = "CUTOVER_DEPLOYMENTS_DIR")]
    pub deployments_dir: Option<PathBuf>,
}

impl DirArgs {
    fn user_base() -> PathBuf {
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(data).join("cutover");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".local/share/cutover")
    }
    fn is_root() -> bool {
        nix_free_is_root()
    }
    pub fn repos(&self) -> PathBuf {
        self.repos_dir.clone().unwrap_or_else(|| {
            if Self::is_root() {
                PathBuf::from("/var/repos")
            } else {
                Self::user_base().join("repos")
            }
        })
    }
    pub fn deployments(&self) -> PathBuf {
        let dir = self.deployments_dir.clone().unwrap_or_else(|| {
            if Self::is_root() {
                PathBuf::from("/opt/deployments")
            } else {
                Self::user_base().join("deployments")
            }
        });
        absolute(&dir)
    }
}

/// Whether we run as root, read from /proc (no unsafe, no extra crate).
fn nix_free_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// How releases run under the built-in manager.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Address the public proxy binds, with config.yml's port.
    #[arg(long, env = "CUTOVER_BIND_HOST", default_value = "0.0.0.0")]
    pub bind_host: String,
    /// Seconds a replaced release keeps running for an instant rollback.
    #[arg(long, env = "CUTOVER_KEEP_WARM", default_value_t = 300)]
    pub keep_warm: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ManagerArg {
    Builtin,
    Systemd,
    Pm2,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The app's name: names the repository, directory and service.
    pub app: String,
    /// Where the code lives (recorded in the repository's config).
    pub git_url: String,
    /// The public port the app is reached on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, value_enum, default_value_t = ManagerArg::Builtin)]
    pub manager: ManagerArg,
    /// Environment name: `.env.{env}` beside the releases becomes each release's `.env`.
    #[arg(long, default_value = "production")]
    pub env: String,
    /// The branch whose pushes deploy; other branches are skipped.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Where to write the systemd unit.
    #[arg(
        long,
        env = "CUTOVER_SYSTEMD_DIR",
        default_value = "/etc/systemd/system"
    )]
    pub systemd_dir: PathBuf,
    /// The user the systemd unit runs the app as.
    #[arg(long, default_value = "www-data")]
    pub user: String,
    #[command(flatten)]
    pub dirs: DirArgs,
}

#[derive(Debug, Args)]
pub struct ExecuteArgs {
    /// The bare repository that received the push.
    pub git_dir: PathBuf,
    /// The pushed commit.
    pub sha: String,
    /// The pushed ref (from the hook); refs of other branches are skipped.
    #[arg(long = "ref")]
    pub refname: Option<String>,
    /// The branch that deploys.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// The app's name; by default the repository's name without `.git`.
    #[arg(long)]
    pub app: Option<String>,
    /// Seconds to wait for another deploy of the same app.
    #[arg(long, default_value_t = 600)]
    pub lock_timeout: u64,
    #[command(flatten)]
    pub dirs: DirArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

pub async fn run(command: ReleaseCommand, global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        ReleaseCommand::Init => init(),
        ReleaseCommand::Setup(args) => setup(args),
        ReleaseCommand::Execute(args) => execute(args, global).await,
        ReleaseCommand::Releases { app, dirs } => releases(&app, &dirs, global).await,
        ReleaseCommand::Rollback { app, to, dirs, run } => {
            rollback(&app, to.as_deref(), &dirs, &run, global).await
        }
        ReleaseCommand::Lock(LockCommand::Status { app, dirs }) => lock_status(&app, &dirs, global),
        ReleaseCommand::Lock(LockCommand::Release { app, dirs }) => lock_release(&app, &dirs),
        ReleaseCommand::Logs {
            app,
            release,
            lines,
            follow,
            dirs,
        } => logs(&app, release.as_deref(), lines, follow, &dirs).await,
        ReleaseCommand::Host(HostCommand::Run { dirs, run }) => host_run(&dirs, &run).await,
        ReleaseCommand::Host(HostCommand::Stop { dirs }) => host_stop(&dirs).await,
        ReleaseCommand::Host(HostCommand::Status { dirs }) => host_status(&dirs, global).await,
        ReleaseCommand::Host(HostCommand::Exec { app, dirs }) => host_exec(&app, &dirs).await,
    }
}

fn init() -> anyhow::Result<u8> {
    let path = Path::new("deploy.yml");
    if path.exists() {
        eprintln!("deploy.yml already exists; not overwriting it");
        return Ok(1);
    }
    std::fs::write(path, DEPLOY_YML_TEMPLATE).context("cannot write deploy.yml")?;
    println!("Created deploy.yml");
    println!("Edit it to describe your application, commit it, then `git push production main`.");
    Ok(0)
}

fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn this_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this cutover binary")?;
    Ok(std::fs::canonicalize(&exe).unwrap_or(exe))
}

fn git(args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new("git")
        .args(args)
        .env_remove("GIT_DIR")
        .output()
        .context("cannot run git")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn setup(args: SetupArgs) -> anyhow::Result<u8> {
    if !valid_app_name(&args.app) {
        bail!(
            "invalid app name {:?}: use letters, digits, '.', '_' or '-', starting with a letter or digit",
            args.app
        );
    }
    if args.port == 0 {
        bail!("invalid --port 0: expected a port from 1 to 65535");
    }
    let repos = absolute(&args.dirs.repos());
    let deployments = args.dirs.deployments();
    let cutover = this_binary()?;
    println!("=== Setting up {} ===", args.app);

    // 1. The bare repository and its hook.
    let repo = repos.join(format!("{}.git", args.app));
    let repo_str = repo.display().to_string();
    if repo.join("HEAD").exists() {
        println!("  repository exists: {repo_str}");
    } else {
        std::fs::create_dir_all(&repo).with_context(|| format!("cannot create {repo_str}"))?;
        git(&["init", "--quiet", "--bare", &repo_str])?;
        println!("✓ bare repository: {repo_str}");
    }
    git(&[
        "--git-dir",
        &repo_str,
        "symbolic-ref",
        "HEAD",
        &format!("refs/heads/{}", args.branch),
    ])?;
    git(&[
        "--git-dir",
        &repo_str,
        "config",
        "cutover.origin",
        &args.git_url,
    ])?;
    let hook = repo.join("hooks").join("post-receive");
    std::fs::create_dir_all(hook.parent().expect("hook has a parent"))?;
    std::fs::write(
        &hook,
        managers::post_receive_hook(&cutover, &deployments, &args.branch),
    )
    .with_context(|| format!("cannot write {}", hook.display()))?;
    set_executable(&hook)?;
    println!(
        "✓ post-receive hook: {} (runs {})",
        hook.display(),
        cutover.display()
    );

    // 2. The deployment directory and config.yml.
    let app = AppLayout::new(&deployments, &args.app);
    for dir in [app.releases(), app.shared(), app.failed()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    println!("✓ deployment directory: {}", app.root.display());
    let manager = match args.manager {
        ManagerArg::Builtin => ProcessManager::Builtin,
        ManagerArg::Systemd => ProcessManager::Systemd,
        ManagerArg::Pm2 => ProcessManager::Pm2,
    };
    let config_path = app.config();
    if config_path.exists() {
        println!("  config exists, left as it is: {}", config_path.display());
    } else {
        let config = HostConfig {
            port: args.port,
            manager,
            env: args.env.clone(),
        };
        let text = config.to_yaml();
        // What we write must read back.
        HostConfig::from_yaml(&text, "config.yml")
            .context("generated config.yml does not parse")?;
        std::fs::write(&config_path, text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        println!("✓ host config: {}", config_path.display());
    }

    // 3. The manager's own files.
    match manager {
        ProcessManager::Builtin => {
            println!("✓ process manager: built-in (`cutover host run`, started on the first push)");
        }
        ProcessManager::Systemd => {
            let unit = managers::systemd_unit(&cutover, &deployments, &args.app, &args.user);
            let name = format!("{}.service", args.app);
            let local = app.root.join(&name);
            std::fs::write(&local, &unit)?;
            let target = args.systemd_dir.join(&name);
            match std::fs::write(&target, &unit) {
                Ok(()) => {
                    println!("✓ systemd unit: {}", target.display());
                    println!("  enable it: systemctl daemon-reload && systemctl enable {name}");
                }
                Err(error) => {
                    println!(
                        "⚠ cannot write {} ({error}); the unit is at {}",
                        target.display(),
                        local.display()
                    );
                    println!(
                        "  install it: sudo cp {} {} && sudo systemctl daemon-reload && sudo systemctl enable {name}",
                        local.display(),
                        target.display()
                    );
                }
            }
        }
        ProcessManager::Pm2 => {
            let path = app.root.join("ecosystem.config.js");
            std::fs::write(
                &path,
                managers::pm2_ecosystem(&cutover, &deployments, &args.app),
            )?;
            println!("✓ pm2 ecosystem: {}", path.display());
            println!(
                "  after the first push: pm2 start {} && pm2 save",
                path.display()
            );
        }
    }

    println!();
    println!("=== Setup complete ===");
    println!("Next steps:");
    println!("1. On your machine, add the remote:");
    println!("   git remote add production <user>@<host>:{repo_str}");
    println!("2. Add deploy.yml to your project: cutover init");
    println!("3. Deploy: git push production {}", args.branch);
    Ok(0)
}

fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

fn launcher(deployments: &Path, run: &RunArgs) -> anyhow::Result<Launcher> {
    Ok(Launcher {
        program: this_binary()?,
        args: vec![
            "host".into(),
            "run".into(),
            "--deployments-dir".into(),
            deployments.as_os_str().to_owned(),
            "--bind-host".into(),
            run.bind_host.clone().into(),
            "--keep-warm".into(),
            run.keep_warm.to_string().into(),
        ],
    })
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn report_failure(error: &DeployError) {
    say(&format!(
        "-----> deploy FAILED at step {}: {}",
        error.step, error.message
    ));
    if !error.log_tail.is_empty() {
        say("       last lines of the log:");
        for line in error.log_tail.lines() {
            say(&format!("       | {line}"));
        }
    }
    if let Some(dir) = &error.failed_dir {
        say(&format!("       release kept in {}", dir.display()));
    }
    say("       nothing was switched: the previous release keeps serving");
}

async fn execute(args: ExecuteArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let wanted = format!("refs/heads/{}", args.branch);
    if let Some(refname) = &args.refname
        && *refname != wanted
    {
        say(&format!("-----> skipping {refname}: only {wanted} deploys"));
        return Ok(0);
    }
    if args.sha.chars().all(|c| c == '0') {
        say("-----> branch deleted: nothing to deploy");
        return Ok(0);
    }
    let git_dir = absolute(&args.git_dir);
    let app = match &args.app {
        Some(app) => app.clone(),
        None => install::app_name_from_git_dir(&git_dir)
            .with_context(|| format!("cannot tell the app's name from {}", git_dir.display()))?,
    };
    let deployments = args.dirs.deployments();
    if !AppLayout::new(&deployments, &app).root.is_dir() {
        say(&format!(
            "-----> {app} is not set up in {}: run `cutover setup {app} GIT_URL --port PORT`",
            deployments.display()
        ));
        return Ok(1);
    }
    let options = DeployOptions {
        deployments_dir: deployments.clone(),
        launcher: launcher(&deployments, &args.run)?,
        bind_host: args.run.bind_host.clone(),
        keep_warm: Duration::from_secs(args.run.keep_warm),
        lock_timeout: Duration::from_secs(args.lock_timeout),
        limits: ExportLimits::default(),
    };
    let quiet = global.output == OutputFormat::Json;
    let printer = |line: &str| {
        if !quiet {
            say(line)
        }
    };
    match install::deploy(&git_dir, &args.sha, &app, &options, &printer).await {
        Ok(report) => {
            if quiet {
                print_json(&report)?;
            }
            Ok(0)
        }
        Err(error) => {
            report_failure(&error);
            Ok(1)
        }
    }
}

async fn releases(app_name: &str, dirs: &DirArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let app = AppLayout::new(&dirs.deployments(), app_name);
    if !app.root.is_dir() {
        bail!("no app {app_name:?} in {}", dirs.deployments().display());
    }
    let current = app.link_target(&app.current());
    let previous = app.link_target(&app.previous());
    let ids = app.list_releases().context("cannot list releases")?;
    let failed = app.list_failed().context("cannot list failed releases")?;
    let log = history::read(&app.release_log()).context("cannot read the release log")?;
    if global.output == OutputFormat::Json {
        let list: Vec<_> = ids
            .iter()
            .map(|id| {
                let manifest = Manifest::load(&app.release_dir(id)).ok();
                serde_json::json!({
                    "release": id,
                    "sha": manifest.as_ref().map(|m| m.sha.clone()),
                    "current": current.as_deref() == Some(id.as_str()),
                    "previous": previous.as_deref() == Some(id.as_str()),
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "app": app_name,
            "current": current,
            "previous": previous,
            "releases": list,
            "failed": failed,
            "log": log,
        }))?;
        return Ok(0);
    }
    println!("Releases of {app_name} (newest last):");
    if ids.is_empty() {
        println!("  none yet");
    }
    for id in &ids {
        let mark = if current.as_deref() == Some(id.as_str()) {
            "current "
        } else if previous.as_deref() == Some(id.as_str()) {
            "previous"
        } else {
            "        "
        };
        let sha = Manifest::load(&app.release_dir(id))
            .map(|m| m.sha[..7.min(m.sha.len())].to_string())
            .unwrap_or_default();
        println!("  {mark}  {id}  {sha}");
    }
    if !failed.is_empty() {
        println!("Failed (kept in {}):", app.failed().display());
        for id in &failed {
            println!("            {id}");
        }
    }
    if !log.is_empty() {
        println!("Recent deploys:");
        for entry in log.iter().rev().take(10).rev() {
            println!(
                "  {}  {:<8}  {:<11}  {}  {}  by {}{}",
                entry.time.format("%Y-%m-%d %H:%M:%S"),
                entry.action,
                format!("{:?}", entry.outcome).to_lowercase(),
                &entry.sha[..7.min(entry.sha.len())],
                entry.release,
                entry.user,
                entry
                    .failed_step
                    .as_ref()
                    .map(|s| format!(" (failed at {s})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(0)
}

async fn rollback(
    app: &str,
    to: Option<&str>,
    dirs: &DirArgs,
    run: &RunArgs,
    global: &GlobalArgs,
) -> anyhow::Result<u8> {
    let deployments = dirs.deployments();
    let quiet = global.output == OutputFormat::Json;
    let printer = |line: &str| {
        if !quiet {
            say(line)
        }
    };
    let result = install::rollback(
        &deployments,
        app,
        to,
        &launcher(&deployments, run)?,
        &run.bind_host,
        Duration::from_secs(run.keep_warm),
        &printer,
    )
    .await;
    match result {
        Ok(report) => {
            if global.output == OutputFormat::Json {
                print_json(&report)?;
            }
            Ok(0)
        }
        Err(error) => {
            say(&format!(
                "-----> rollback failed at step {}: {}",
                error.step, error.message
            ));
            for line in error.log_tail.lines() {
                say(&format!("       | {line}"));
            }
            Ok(1)
        }
    }
}

fn lock_status(app: &str, dirs: &DirArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let layout = AppLayout::new(&dirs.deployments(), app);
    let holder = lock::status(&layout.lock()).context("cannot read the deploy lock")?;
    if global.output == OutputFormat::Json {
        print_json(&serde_json::json!({ "app": app, "holder": holder }))?;
        return Ok(0);
    }
    match holder {
        Some(holder) => {
            let alive = lock::process_alive(holder.pid);
            println!(
                "{app} is locked by pid {} ({}) deploying {} since {}{}",
                holder.pid,
                if holder.user.is_empty() {
                    "unknown user"
                } else {
                    &holder.user
                },
                holder.sha,
                holder.since.format("%Y-%m-%d %H:%M:%S UTC"),
                if alive {
                    ""
                } else {
                    " — that process is gone: the lock is stale"
                }
            );
        }
        None => println!("{app} is not locked"),
    }
    Ok(0)
}

fn lock_release(app: &str, dirs: &DirArgs) -> anyhow::Result<u8> {
    let layout = AppLayout::new(&dirs.deployments(), app);
    match lock::force_release(&layout.lock()).context("cannot clear the deploy lock")? {
        Some(holder) => println!(
            "released the lock of {app} held by pid {} ({})",
            holder.pid, holder.sha
        ),
        None => println!("{app} was not locked"),
    }
    Ok(0)
}

async fn logs(
    app_name: &str,
    release: Option<&str>,
    lines: usize,
    follow: bool,
    dirs: &DirArgs,
) -> anyhow::Result<u8> {
    let app = AppLayout::new(&dirs.deployments(), app_name);
    let id = match release {
        Some(id) => id.to_string(),
        None => app
            .link_target(&app.current())
            .with_context(|| format!("{app_name} has no current release yet"))?,
    };
    let mut path = app.app_log(&id);
    if !app.release_dir(&id).exists() && app.failed().join(&id).exists() {
        path = app
            .failed()
            .join(&id)
            .join(cutover_agent::release::layout::META_DIR)
            .join("app.log");
    }
    let text = tail(&path, lines);
    if !text.is_empty() {
        println!("{text}");
    }
    if follow {
        let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if (bytes.len() as u64) > offset {
                print!("{}", String::from_utf8_lossy(&bytes[offset as usize..]));
                let _ = std::io::stdout().flush();
                offset = bytes.len() as u64;
            } else if (bytes.len() as u64) < offset {
                offset = 0;
            }
        }
    }
    Ok(0)
}

async fn host_run(dirs: &DirArgs, run: &RunArgs) -> anyhow::Result<u8> {
    let deployments = dirs.deployments();
    cutover_agent::host::daemon::run(
        &deployments,
        &run.bind_host,
        Duration::from_secs(run.keep_warm),
    )
    .await
    .with_context(|| format!("host daemon in {} failed", deployments.display()))?;
    Ok(0)
}

async fn host_stop(dirs: &DirArgs) -> anyhow::Result<u8> {
    let deployments = dirs.deployments();
    let client = HostClient::new(&deployments);
    let paths = HostPaths::new(&deployments);
    let pid = match client.request(&Request::Shutdown).await {
        Ok(response) => response.pid,
        Err(_) => {
            println!("the host daemon is not running");
            return Ok(0);
        }
    };
    for _ in 0..300 {
        let alive = pid.is_some_and(lock::process_alive) && paths.socket.exists();
        if !alive {
            println!("host daemon stopped");
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the host daemon (pid {pid:?}) did not stop within 15 s")
}

async fn host_status(dirs: &DirArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let client = HostClient::new(&dirs.deployments());
    let response = match client.request(&Request::Status { app: None }).await {
        Ok(response) => response,
        Err(error) => {
            if global.output == OutputFormat::Json {
                print_json(&serde_json::json!({ "running": false }))?;
            } else {
                println!("{error}");
            }
            return Ok(1);
        }
    };
    if global.output == OutputFormat::Json {
        print_json(
            &serde_json::json!({ "running": true, "pid": response.pid, "apps": response.apps }),
        )?;
        return Ok(0);
    }
    println!(
        "host daemon pid {} ({})",
        response.pid.unwrap_or(0),
        client.paths().socket.display()
    );
    for app in &response.apps {
        println!(
            "{}: listening on {}, serving {} ({} requests, {} errors)",
            app.app,
            app.listen.as_deref().unwrap_or("-"),
            app.serving.as_deref().unwrap_or("nothing"),
            app.proxied_requests,
            app.proxy_errors
        );
        for r in &app.releases {
            println!(
                "  {}  port {}  {:?}  pid {}  restarts {}  in flight {}",
                r.release,
                r.port,
                r.state,
                r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                r.restarts,
                r.in_flight
            );
        }
    }
    Ok(0)
}

/// Runs the current release in the foreground on the public port: what the
/// systemd unit and pm2 file start.
async fn host_exec(app_name: &str, dirs: &DirArgs) -> anyhow::Result<u8> {
    let app = AppLayout::new(&dirs.deployments(), app_name);
    let (host, _) = install::read_host_config(&app).map_err(anyhow::Error::msg)?;
    let id = app
        .link_target(&app.current())
        .with_context(|| format!("{app_name} has no current release yet"))?;
    let manifest = Manifest::load(&app.release_dir(&id)).map_err(anyhow::Error::msg)?;
    match manifest.run {
        RunSpec::Process { command, cwd, env } => {
            use std::os::unix::process::CommandExt;
            let port = host.port.to_string();
            let error = std::process::Command::new("sh")
                .arg("-c")
                .arg(command.replace("{port}", &port))
                .current_dir(cwd)
                .envs(env)
                .env("PORT", &port)
                .exec();
            bail!("cannot run the release: {error}")
        }
        RunSpec::Static { root } => {
            let listener = tokio::net::TcpListener::bind(("0.0.0.0", host.port))
                .await
                .with_context(|| format!("cannot bind port {}", host.port))?;
            let task = cutover_agent::release::static_site::serve(listener, root);
            let _ = task.await;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::config::DeployConfig;

    #[test]
    fn the_init_template_is_a_valid_deploy_yml() {
        let (config, warnings) =
            DeployConfig::from_yaml(DEPLOY_YML_TEMPLATE, "deploy.yml").unwrap();
        assert_eq!(config.name, "my-app");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.health_check.path, "/health");
    }

    #[test]
    fn app_names_are_checked() {
        assert!(valid_app_name("web-1.api_x"));
        assert!(!valid_app_name("../x"));
        assert!(!valid_app_name(""));
        assert!(!valid_app_name("-x"));
    }
}
