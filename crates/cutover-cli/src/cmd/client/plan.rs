//! `cutover plan …`: create a plan (from flags, a YAML or JSON file, or interactively with
//! prompts that offer defaults and check each answer), list, show, approve.

use super::{Api, opt, seg, table};
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cutover_server::dto::{ApproveResponse, EnvironmentList, PlanList, PlanView};
use serde_json::{Map, Value, json};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Create a deployment plan.
    Create(CreateArgs),
    /// List plans, newest first.
    List {
        /// Only plans with this status (e.g. pending_approval).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One plan with its approvals.
    Show {
        #[arg(value_name = "PLAN_ID")]
        id: String,
    },
    /// Approve a plan (the approver role; never your own plan).
    Approve {
        #[arg(value_name = "PLAN_ID")]
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Ask for each field, with defaults.
    #[arg(long, conflicts_with = "config")]
    pub interactive: bool,
    /// A plan file, YAML or JSON, with the API's fields (name, firmware_version, …).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub name: Option<String>,
    /// The version to roll out.
    #[arg(long = "firmware-version")]
    pub firmware_version: Option<String>,
    #[arg(long)]
    pub source: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    /// immediate, rolling, canary or blue_green.
    #[arg(long)]
    pub strategy: Option<String>,
    #[arg(long)]
    pub rollout_percentage: Option<f64>,
    #[arg(long)]
    pub canary_percentage: Option<f64>,
    /// Rolling: targets per wave, a count or a share such as 10%.
    #[arg(long)]
    pub batch_size: Option<String>,
}

pub async fn run(api: &Api, command: PlanCommand, out: OutputFormat) -> anyhow::Result<u8> {
    match command {
        PlanCommand::Create(args) => {
            let body = if args.interactive {
                let environments: EnvironmentList = api.get("/api/environments").await?;
                let names: Vec<String> = environments
                    .environments
                    .iter()
                    .map(|e| e.name.clone())
                    .collect();
                let stdin = std::io::stdin();
                let mut input = stdin.lock();
                let mut err = std::io::stderr();
                let body = interactive(&mut input, &mut err, &names)?;
                if body.is_null() {
                    eprintln!("no plan created");
                    return Ok(1);
                }
                body
            } else if let Some(path) = &args.config {
                let mut body = read_plan_file(path)?;
                merge_flags(&mut body, &args);
                body
            } else {
                let mut body = Value::Object(Map::new());
                merge_flags(&mut body, &args);
                for field in ["name", "target_environment", "strategy"] {
                    if body.get(field).is_none() {
                        bail!(
                            "plan create needs --interactive, --config FILE, or at least --name, --target and --strategy ({field} is missing)"
                        );
                    }
                }
                body
            };
            let plan: PlanView = api.post("/api/deployment-plans", &body).await?;
            if out == OutputFormat::Json {
                print_json(&plan)?;
            } else {
                println!("{}", plan.id);
                eprintln!(
                    "created plan {} ({}): {} {} to {}, {}",
                    plan.id,
                    plan.status,
                    plan.artifact_kind,
                    plan.firmware_version,
                    plan.target_environment,
                    plan.strategy
                );
                if plan.status == "pending_approval" {
                    eprintln!(
                        "it needs {} approval(s): cutover plan approve {}",
                        plan.required_approvals, plan.id
                    );
                }
            }
        }
        PlanCommand::List { status, limit } => {
            let mut path = format!("/api/deployment-plans?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={}", seg(&s)));
            }
            let list: PlanList = api.get(&path).await?;
            if out == OutputFormat::Json {
                print_json(&list)?;
                return Ok(0);
            }
            let mut t = table(&[
                "id",
                "name",
                "version",
                "from",
                "to",
                "strategy",
                "status",
                "approvals",
            ]);
            for p in &list.plans {
                t.add_row(vec![
                    p.id.clone(),
                    p.name.clone(),
                    p.firmware_version.clone(),
                    opt(&p.source_environment),
                    p.target_environment.clone(),
                    p.strategy.clone(),
                    p.status.clone(),
                    format!("{}/{}", p.approvals.len(), p.required_approvals),
                ]);
            }
            println!("{t}");
        }
        PlanCommand::Show { id } => {
            let p: PlanView = api
                .get(&format!("/api/deployment-plans/{}", seg(&id)))
                .await?;
            if out == OutputFormat::Json {
                print_json(&p)?;
                return Ok(0);
            }
            println!("{} — {}", p.id, p.name);
            println!(
                "  {} {} from {} to {}",
                p.artifact_kind,
                p.firmware_version,
                opt(&p.source_environment),
                p.target_environment
            );
            println!("  strategy: {}  status: {}", p.strategy, p.status);
            println!("  created by {} at {}", p.created_by, p.created_at);
            println!(
                "  approvals: {} of {} needed",
                p.approvals.len(),
                p.required_approvals
            );
            for a in &p.approvals {
                println!(
                    "    {} {} at {}{}",
                    a.approver,
                    a.decision,
                    a.created_at,
                    a.comment
                        .as_ref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                );
            }
        }
        PlanCommand::Approve { id, comment } => {
            let r: ApproveResponse = api
                .post(
                    &format!("/api/deployment-plans/{}/approve", seg(&id)),
                    &json!({"comment": comment}),
                )
                .await?;
            if out == OutputFormat::Json {
                print_json(&r)?;
            } else if r.approved {
                println!(
                    "plan {id} is approved ({} of {} approvals)",
                    r.approvals_counted, r.approvals_needed
                );
            } else {
                println!(
                    "approval recorded: {} of {} approvals",
                    r.approvals_counted, r.approvals_needed
                );
            }
        }
    }
    Ok(0)
}

fn read_plan_file(path: &std::path::Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?
    } else {
        serde_saphyr::from_str(&text)
            .with_context(|| format!("{} is not valid YAML", path.display()))?
    };
    if !value.is_object() {
        bail!(
            "{}: expected a mapping of plan fields (name, firmware_version, …)",
            path.display()
        );
    }
    Ok(value)
}

/// Flags win over the file's fields.
fn merge_flags(body: &mut Value, a: &CreateArgs) {
    let mut set = |k: &str, v: Value| {
        body[k] = v;
    };
    if let Some(v) = &a.name {
        set("name", json!(v));
    }
    if let Some(v) = &a.firmware_version {
        set("firmware_version", json!(v));
    }
    if let Some(v) = &a.source {
        set("source_environment", json!(v));
    }
    if let Some(v) = &a.target {
        set("target_environment", json!(v));
    }
    if let Some(v) = &a.strategy {
        set("strategy", json!(v));
    }
    if let Some(v) = a.rollout_percentage {
        set("rollout_percentage", json!(v));
    }
    if let Some(v) = a.canary_percentage {
        set("canary_percentage", json!(v));
    }
    if let Some(v) = &a.batch_size {
        match v.parse::<u64>() {
            Ok(n) => set("batch_size", json!(n)),
            Err(_) => set("batch_size", json!(v)),
        }
    }
}

/// Asks one question until the answer passes `check`; an empty answer takes the default.
fn ask<R: BufRead, W: Write>(
    input: &mut R,
    err: &mut W,
    question: &str,
    default: Option<&str>,
    check: impl Fn(&str) -> Result<(), String>,
) -> anyhow::Result<String> {
    loop {
        match default {
            Some(d) => write!(err, "{question} [{d}]: ")?,
            None => write!(err, "{question}: ")?,
        }
        err.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            bail!("input ended before the plan was complete (at \"{question}\")");
        }
        let answer = match line.trim() {
            "" => match default {
                Some(d) => d.to_string(),
                None => {
                    writeln!(err, "  an answer is required")?;
                    continue;
                }
            },
            a => a.to_string(),
        };
        match check(&answer) {
            Ok(()) => return Ok(answer),
            Err(why) => writeln!(err, "  {why}")?,
        }
    }
}

fn percent(min_exclusive: f64, max: f64) -> impl Fn(&str) -> Result<(), String> {
    move |a: &str| match a.trim_end_matches('%').parse::<f64>() {
        Ok(v) if v > min_exclusive && v <= max => Ok(()),
        _ => Err(format!(
            "enter a number above {min_exclusive} and at most {max}"
        )),
    }
}

/// The prompts of `plan create --interactive`; `Null` when the person declines at the end.
pub fn interactive<R: BufRead, W: Write>(
    input: &mut R,
    err: &mut W,
    environments: &[String],
) -> anyhow::Result<Value> {
    let known = |allow_none: bool| {
        let environments = environments.to_vec();
        move |a: &str| {
            if (allow_none && a == "none") || environments.iter().any(|e| e == a) {
                Ok(())
            } else {
                Err(format!(
                    "expected one of: {}{}",
                    environments.join(", "),
                    if allow_none { ", none" } else { "" }
                ))
            }
        }
    };
    writeln!(
        err,
        "New deployment plan (Enter takes the default in brackets)"
    )?;
    let version = ask(input, err, "Firmware version", None, |a| {
        if a.chars().any(char::is_whitespace) {
            Err("a version has no spaces".into())
        } else {
            Ok(())
        }
    })?;
    let default_target = if environments.iter().any(|e| e == "production") {
        "production".to_string()
    } else {
        environments.last().cloned().unwrap_or_default()
    };
    let target = ask(
        input,
        err,
        "Target environment",
        Some(&default_target),
        known(false),
    )?;
    let index = environments.iter().position(|e| *e == target).unwrap_or(0);
    let default_source = if index > 0 {
        environments[index - 1].clone()
    } else {
        "none".into()
    };
    let source = ask(
        input,
        err,
        "Source environment",
        Some(&default_source),
        known(true),
    )?;
    let strategy = ask(
        input,
        err,
        "Strategy (immediate, rolling, canary, blue_green)",
        Some("rolling"),
        |a| match a {
            "immediate" | "rolling" | "canary" | "blue_green" | "blue-green" => Ok(()),
            _ => Err("expected immediate, rolling, canary or blue_green".into()),
        },
    )?;
    let mut body = json!({
        "firmware_version": version,
        "target_environment": target,
        "strategy": strategy.replace('-', "_"),
    });
    if source != "none" {
        body["source_environment"] = json!(source);
    }
    if strategy == "canary" {
        let c = ask(
            input,
            err,
            "Canary percentage",
            Some("10"),
            percent(0.0, 99.99),
        )?;
        body["canary_percentage"] = json!(c.trim_end_matches('%').parse::<f64>()?);
    }
    if strategy == "rolling" {
        let b = ask(
            input,
            err,
            "Batch size (targets, or a share such as 10%)",
            Some("10%"),
            |a| {
                if let Some(p) = a.strip_suffix('%') {
                    percent(0.0, 100.0)(p)
                } else {
                    match a.parse::<u64>() {
                        Ok(n) if n > 0 => Ok(()),
                        _ => Err("enter a count above 0 or a share such as 10%".into()),
                    }
                }
            },
        )?;
        body["batch_size"] = match b.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => json!(b),
        };
    }
    let r = ask(
        input,
        err,
        "Rollout percentage",
        Some("100"),
        percent(0.0, 100.0),
    )?;
    body["rollout_percentage"] = json!(r.trim_end_matches('%').parse::<f64>()?);
    let default_name = format!("{} rollout {version}", capitalise(&target));
    let name = ask(input, err, "Plan name", Some(&default_name), |_| Ok(()))?;
    body["name"] = json!(name);
    writeln!(err, "{}", serde_json::to_string_pretty(&body)?)?;
    let ok = ask(
        input,
        err,
        "Create this plan? (y/n)",
        Some("y"),
        |a| match a {
            "y" | "yes" | "n" | "no" => Ok(()),
            _ => Err("answer y or n".into()),
        },
    )?;
    Ok(if ok.starts_with('y') {
        body
    } else {
        Value::Null
    })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_take_defaults_and_reask_on_bad_answers() {
        let envs: Vec<String> = ["development", "testing", "staging", "production"]
            .map(String::from)
            .to_vec();
        // version, target (default), source (bad, then default), strategy canary,
        // canary % (bad then 5), rollout (default), name (default), confirm.
        let answers = "1.2.0\n\nmoon\n\ncanary\n150\n5\n\n\ny\n";
        let mut input = answers.as_bytes();
        let mut err = Vec::new();
        let body = interactive(&mut input, &mut err, &envs).unwrap();
        assert_eq!(body["firmware_version"], "1.2.0");
        assert_eq!(body["target_environment"], "production");
        assert_eq!(body["source_environment"], "staging");
        assert_eq!(body["strategy"], "canary");
        assert_eq!(body["canary_percentage"], 5.0);
        assert_eq!(body["rollout_percentage"], 100.0);
        assert_eq!(body["name"], "Production rollout 1.2.0");
        let prompts = String::from_utf8(err).unwrap();
        assert!(
            prompts.contains("expected one of: development, testing, staging, production, none"),
            "{prompts}"
        );
        assert!(prompts.contains("enter a number above 0"), "{prompts}");
    }

    #[test]
    fn prompts_fail_cleanly_when_input_ends() {
        let mut input = "1.2.0\n".as_bytes();
        let e = interactive(&mut input, &mut Vec::new(), &["staging".into()]).unwrap_err();
        assert!(e.to_string().contains("input ended"), "{e}");
    }
}
