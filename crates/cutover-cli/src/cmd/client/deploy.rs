//! `cutover deploy …`: execute a plan, status (with `--watch`: a progress bar per wave,
//! fed by the server-sent-events stream), list, and the operator commands.
//!
//! With `--watch` the command exits 0 when the deployment succeeded and 3 when it ended any
//! other way, so scripts can wait on it. Bars are drawn only when stdout is a terminal;
//! otherwise each change is printed as a line (or, with `--output json`, as one JSON object
//! per line).

use super::{Api, opt, seg, table};
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, bail};
use clap::Subcommand;
use cutover_server::dto::{CommandAccepted, ExecutionList, ExecutionView};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::json;
use std::io::IsTerminal;

/// The exit code of a watched deployment that did not succeed.
pub const NOT_SUCCEEDED: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Execute an approved plan.
    Execute {
        #[arg(long = "plan-id")]
        plan_id: String,
        /// A pre-deployment gate that waits for a person (manual, or one the server
        /// cannot run) which you say was passed; recorded with your name. Repeatable.
        #[arg(long = "pass-gate", value_name = "GATE")]
        pass_gate: Vec<String>,
        /// Follow the deployment until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// A deployment's status, per wave.
    Status {
        #[arg(long = "execution-id", alias = "id")]
        execution_id: String,
        /// Follow the deployment until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// List deployments, newest first.
    List {
        /// Comma-separated statuses (e.g. running,paused).
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Cancel a deployment.
    Cancel {
        #[arg(long = "execution-id", alias = "id")]
        execution_id: String,
    },
    /// Roll back every target a deployment touched.
    Rollback {
        #[arg(long = "execution-id", alias = "id")]
        execution_id: String,
    },
    /// Pause a deployment (actions in progress go on).
    Pause {
        #[arg(long = "execution-id", alias = "id")]
        execution_id: String,
    },
    /// Resume a paused deployment.
    Resume {
        #[arg(long = "execution-id", alias = "id")]
        execution_id: String,
    },
    /// End a canary's bake now and go on to the next wave.
    Promote {
        #[arg(long = "execution-id", alias = "id")]
        execution_id: String,
    },
}

pub async fn run(api: &Api, command: DeployCommand, out: OutputFormat) -> anyhow::Result<u8> {
    match command {
        DeployCommand::Execute {
            plan_id,
            pass_gate,
            watch: follow,
        } => {
            let mut body = json!({"plan_id": plan_id});
            if !pass_gate.is_empty() {
                body["passed_gates"] = json!(pass_gate);
            }
            let v: ExecutionView = api.post("/api/deployments/execute", &body).await?;
            if follow {
                if out == OutputFormat::Text {
                    eprintln!("started {}", v.summary.id);
                }
                return watch(api, &v.summary.id, out).await;
            }
            if out == OutputFormat::Json {
                print_json(&v)?;
            } else {
                println!("{}", v.summary.id);
                eprintln!(
                    "started {}: {} targets in {} wave(s); follow it with: cutover deploy status --execution-id {} --watch",
                    v.summary.id,
                    v.summary.target_count,
                    v.waves.len(),
                    v.summary.id
                );
            }
            Ok(0)
        }
        DeployCommand::Status {
            execution_id,
            watch: follow,
        } => {
            if follow {
                return watch(api, &execution_id, out).await;
            }
            let v: ExecutionView = api
                .get(&format!("/api/deployments/{}", seg(&execution_id)))
                .await?;
            if out == OutputFormat::Json {
                print_json(&v)?;
            } else {
                print_status(&v);
            }
            Ok(0)
        }
        DeployCommand::List {
            status,
            environment,
            limit,
        } => {
            let mut path = format!("/api/deployments?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={}", seg(&s)));
            }
            if let Some(e) = environment {
                path.push_str(&format!("&environment={}", seg(&e)));
            }
            let list: ExecutionList = api.get(&path).await?;
            if out == OutputFormat::Json {
                print_json(&list)?;
                return Ok(0);
            }
            let mut t = table(&[
                "id",
                "plan",
                "environment",
                "version",
                "strategy",
                "status",
                "targets",
                "created",
            ]);
            for d in &list.deployments {
                t.add_row(vec![
                    d.id.clone(),
                    d.plan_id.clone(),
                    d.environment.clone(),
                    opt(&d.version),
                    opt(&d.strategy),
                    d.status.clone(),
                    d.target_count.to_string(),
                    d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        DeployCommand::Cancel { execution_id } => operator(api, &execution_id, "cancel", out).await,
        DeployCommand::Rollback { execution_id } => {
            operator(api, &execution_id, "rollback", out).await
        }
        DeployCommand::Pause { execution_id } => operator(api, &execution_id, "pause", out).await,
        DeployCommand::Resume { execution_id } => operator(api, &execution_id, "resume", out).await,
        DeployCommand::Promote { execution_id } => {
            operator(api, &execution_id, "promote", out).await
        }
    }
}

async fn operator(api: &Api, id: &str, command: &str, out: OutputFormat) -> anyhow::Result<u8> {
    let r: CommandAccepted = api
        .post(
            &format!("/api/deployments/{}/{command}", seg(id)),
            &json!({}),
        )
        .await?;
    if out == OutputFormat::Json {
        print_json(&r)?;
    } else {
        println!("{command} accepted for {}", r.execution_id);
    }
    Ok(0)
}

fn line(v: &ExecutionView) -> String {
    let p = &v.progress;
    let wave = v
        .waves
        .iter()
        .position(|w| w.progress.pending + w.progress.in_progress > 0)
        .map(|i| format!(" wave {}/{}", i + 1, v.waves.len()))
        .unwrap_or_default();
    let held = v
        .held
        .as_deref()
        .map(|h| format!("; held: {h}"))
        .unwrap_or_default();
    format!(
        "{} {}{wave}: {}/{} succeeded, {} failed, {} rolled back, {} in progress ({:.1} %){held}",
        v.summary.id,
        v.summary.status,
        p.succeeded,
        p.total,
        p.failed,
        p.rolled_back,
        p.in_progress,
        p.percent_complete
    )
}

fn print_status(v: &ExecutionView) {
    let s = &v.summary;
    println!("{} of plan {}", s.id, s.plan_id);
    println!(
        "  environment: {}  version: {}  strategy: {}",
        s.environment,
        opt(&s.version),
        opt(&s.strategy)
    );
    println!("  {}", line(v));
    let mut t = table(&[
        "wave",
        "status",
        "targets",
        "succeeded",
        "failed",
        "in progress",
        "pending",
    ]);
    for w in &v.waves {
        t.add_row(vec![
            (w.index + 1).to_string(),
            w.status.clone(),
            w.target_count.to_string(),
            w.progress.succeeded.to_string(),
            (w.progress.failed + w.progress.rolled_back).to_string(),
            w.progress.in_progress.to_string(),
            w.progress.pending.to_string(),
        ]);
    }
    println!("{t}");
}

/// Follows the event stream until the deployment ends.
async fn watch(api: &Api, id: &str, out: OutputFormat) -> anyhow::Result<u8> {
    let response = api
        .execute(
            api.request(Method::GET, &format!("/api/deployments/{}/events", seg(id)))
                .header("Accept", "text/event-stream"),
        )
        .await?;
    let terminal = std::io::stdout().is_terminal();
    let multi = MultiProgress::with_draw_target(if terminal && out == OutputFormat::Text {
        ProgressDrawTarget::stdout()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:>8} [{bar:40.green/red}] {pos}/{len} {msg}")
        .context("progress bar template")?
        .progress_chars("=> ");
    let mut bars: Vec<ProgressBar> = Vec::new();
    let mut last: Option<ExecutionView> = None;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the event stream broke off")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(cut) = buffer.find("\n\n") {
            let block: String = buffer.drain(..cut + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for l in block.lines() {
                if let Some(e) = l.strip_prefix("event:") {
                    event = if e.trim() == "end" {
                        "end"
                    } else if e.trim() == "progress" {
                        "progress"
                    } else {
                        "other"
                    };
                } else if let Some(d) = l.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            match event {
                "progress" => {
                    let v: ExecutionView =
                        serde_json::from_str(&data).context("unreadable progress event")?;
                    while bars.len() < v.waves.len() {
                        let w = &v.waves[bars.len()];
                        let bar = multi.add(ProgressBar::new(w.target_count.max(0) as u64));
                        bar.set_style(style.clone());
                        bar.set_prefix(format!("wave {}", w.index + 1));
                        bars.push(bar);
                    }
                    for (bar, w) in bars.iter().zip(&v.waves) {
                        let p = &w.progress;
                        bar.set_position(
                            (p.succeeded + p.failed + p.rolled_back + p.canceled).max(0) as u64,
                        );
                        bar.set_message(format!(
                            "{} ok, {} failed, {}",
                            p.succeeded,
                            p.failed + p.rolled_back,
                            w.status
                        ));
                    }
                    match out {
                        OutputFormat::Json => println!("{}", serde_json::to_string(&v)?),
                        OutputFormat::Text if !terminal => println!("{}", line(&v)),
                        OutputFormat::Text => {}
                    }
                    last = Some(v);
                }
                "end" => {
                    for bar in &bars {
                        bar.finish();
                    }
                    let Some(v) = last else {
                        bail!("the event stream ended before any progress arrived");
                    };
                    if out == OutputFormat::Text {
                        println!("{}", line(&v));
                    }
                    return Ok(if v.summary.status == "succeeded" {
                        0
                    } else {
                        NOT_SUCCEEDED
                    });
                }
                _ => {}
            }
        }
    }
    bail!("the event stream closed before deployment {id} ended (server shutting down?)")
}
