//! `cutover bench cutover`: release switches under load.
//!
//! A throwaway host (temporary repos and deployments dirs, free ports) gets a
//! static app by `cutover setup` and real `git push`es. wrk drives keep-alive
//! load through the built-in proxy: without switches (the baseline), then
//! while N pushes each deploy and switch a new release. nginx, as a reverse
//! proxy to the same release's internal port, is measured in the same run,
//! alternating with the proxy's baseline over a few rounds, for the throughput
//! ratio. Rollback to the warm previous release is timed last.

use super::super::GlobalArgs;
use crate::cmd::bench::api::parse_wrk;
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, bail};
use clap::Args;
use cutover_agent::release::client::HostClient;
use cutover_agent::release::protocol::Request;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args, Clone)]
pub struct BenchCutoverArgs {
    /// Release switches (git pushes) under load.
    #[arg(long, default_value_t = 20)]
    pub switches: u32,
    /// Seconds of each baseline measurement (proxy and nginx).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Proxy and nginx measurements, alternating, for the throughput ratio:
    /// on a shared machine one pair can land on a busy moment.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct BenchCutoverResult {
    pub switches: u32,
    pub requests: u64,
    pub failed_requests: u64,
    pub rps_during_switch: f64,
    pub p99_ms_during_switch: f64,
    pub p99_ms_baseline: f64,
    pub proxy_rps: f64,
    pub nginx_rps: f64,
    /// The median of the rounds' proxy / nginx ratios.
    pub proxy_vs_nginx: f64,
    /// Each round's ratio, in order.
    pub proxy_vs_nginx_rounds: Vec<f64>,
    pub push_to_healthy_ms_median: u64,
    pub push_to_healthy_ms_max: u64,
    pub rollback_warm_ms: u64,
}

struct Wrk {
    rps: f64,
    p99_ms: f64,
    requests: u64,
    failed: u64,
}

fn wrk(url: &str, seconds: u64, args: &BenchCutoverArgs) -> anyhow::Result<std::process::Child> {
    Command::new("wrk")
        .args([
            "-t",
            &args.threads.to_string(),
            "-c",
            &args.connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run wrk; install it with: apt-get install -y wrk")
}

fn wrk_result(child: std::process::Child) -> anyhow::Result<Wrk> {
    let output = child.wait_with_output().context("wrk failed")?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let (rps, _p50, p99_ms, requests, non_2xx) = parse_wrk(&report)?;
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket_errors: u64 = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(Wrk {
        rps,
        p99_ms,
        requests,
        failed: non_2xx + socket_errors,
    })
}

struct Bench {
    dir: tempfile::TempDir,
    repos: PathBuf,
    deployments: PathBuf,
    work: PathBuf,
    exe: PathBuf,
}

impl Bench {
    fn env(&self, command: &mut Command) {
        command
            .env("CUTOVER_REPOS_DIR", &self.repos)
            .env("CUTOVER_DEPLOYMENTS_DIR", &self.deployments)
            .env("CUTOVER_BIND_HOST", "127.0.0.1")
            .env("CUTOVER_KEEP_WARM", "60")
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
            .env_remove("GIT_DIR");
    }

    fn run(&self, program: &Path, args: &[&str], cwd: &Path) -> anyhow::Result<String> {
        let mut command = Command::new(program);
        command.args(args).current_dir(cwd);
        self.env(&mut command);
        let output = command
            .output()
            .with_context(|| format!("cannot run {}", program.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            bail!("{} {args:?} failed: {text}", program.display());
        }
        Ok(text)
    }

    fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run(Path::new("git"), args, &self.work)
    }

    /// Commits release `n` and pushes it; returns the push's wall time.
    fn push(&self, n: u32) -> anyhow::Result<Duration> {
        std::fs::write(
            self.work.join("index.html"),
            format!("<!doctype html><title>bench</title><p>release {n}</p>\n"),
        )?;
        self.git(&["commit", "-q", "-am", &format!("release {n}")])?;
        let started = Instant::now();
        let out = self.git(&["push", "-q", "production", "main"])?;
        let took = started.elapsed();
        if !out.contains("-----> deployed") {
            bail!("push {n} did not deploy:\n{out}");
        }
        Ok(took)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let mut command = Command::new(&self.exe);
        command.args(["host", "stop"]).current_dir(self.dir.path());
        self.env(&mut command);
        let _ = command.output();
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// nginx as a production reverse proxy would run it: a worker per core,
/// HTTP/1.1 keep-alive connections to the upstream, and the forwarding
/// headers the built-in proxy sets too; no access log on either side.
fn nginx_conf(prefix: &Path, listen: u16, upstream: u16) -> String {
    let p = prefix.display();
    format!(
        "daemon off;\nworker_processes auto;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
           upstream release {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n\
           server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n      proxy_pass http://release;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n  }}\n}}\n"
    )
}

/// nginx in the foreground under its own prefix; stopped when dropped.
struct Nginx {
    child: std::process::Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &Path, upstream: u16) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = cutover_agent::ports::fixed_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir, port, upstream))?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run nginx; install it with: apt-get install -y nginx")?;
        let nginx = Nginx { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "nginx did not start; see {}",
                    dir.join("error.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // QUIT: a graceful stop of the master and its workers.
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

pub async fn run(args: BenchCutoverArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let result = tokio::task::spawn_blocking({
        let args = args.clone();
        move || bench(&args)
    })
    .await
    .context("bench task panicked")??;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else if global.output == OutputFormat::Json {
        print_json(&result)?;
    } else {
        println!(
            "{} switches under load: {} requests ({:.0}/s), {} failed, p99 {:.2} ms (baseline {:.2} ms)",
            result.switches,
            result.requests,
            result.rps_during_switch,
            result.failed_requests,
            result.p99_ms_during_switch,
            result.p99_ms_baseline
        );
        println!(
            "proxy {:.0} req/s, nginx {:.0} req/s: proxy_vs_nginx {:.2} (rounds {:?})",
            result.proxy_rps, result.nginx_rps, result.proxy_vs_nginx, result.proxy_vs_nginx_rounds
        );
        println!(
            "git push to healthy (static): median {} ms, max {} ms; rollback to warm previous: {} ms",
            result.push_to_healthy_ms_median,
            result.push_to_healthy_ms_max,
            result.rollback_warm_ms
        );
    }
    Ok(0)
}

fn bench(args: &BenchCutoverArgs) -> anyhow::Result<BenchCutoverResult> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let exe = std::env::current_exe().context("cannot find this cutover binary")?;
    let bench = Bench {
        repos: dir.path().join("repos"),
        deployments: dir.path().join("deployments"),
        work: dir.path().join("work"),
        exe: exe.clone(),
        dir,
    };
    let port = cutover_agent::ports::fixed_port()?;
    bench.run(
        &exe,
        &[
            "setup",
            "bench",
            "git@example.invalid:bench.git",
            "--port",
            &port.to_string(),
        ],
        bench.dir.path(),
    )?;
    std::fs::create_dir_all(&bench.work)?;
    bench.git(&["init", "-q", "-b", "main"])?;
    bench.git(&[
        "remote",
        "add",
        "production",
        &bench.repos.join("bench.git").display().to_string(),
    ])?;
    std::fs::write(
        bench.work.join("deploy.yml"),
        "name: bench\ntype: static\nhealthCheck: /health.json\ndrainTimeout: 5s\n",
    )?;
    std::fs::write(bench.work.join("health.json"), "{\"status\":\"healthy\"}\n")?;
    std::fs::write(bench.work.join("index.html"), "release 0\n")?;
    bench.git(&["add", "-A"])?;
    bench.git(&["commit", "-q", "-m", "release 0"])?;
    bench.git(&["push", "-q", "production", "main"])?;
    let url = format!("http://127.0.0.1:{port}/");

    // nginx in front of the same release's internal port.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(HostClient::new(&bench.deployments).request(
        &Request::Status {
            app: Some("bench".to_string()),
        },
    ))?;
    let app = status
        .apps
        .first()
        .context("the daemon does not know the app")?;
    let serving = app.serving.clone().context("nothing is serving")?;
    let internal = app
        .releases
        .iter()
        .find(|r| r.release == serving)
        .map(|r| r.port)
        .context("no port for the serving release")?;
    let nginx = Nginx::start(&bench.dir.path().join("nginx"), internal)?;
    let nginx_url = format!("http://127.0.0.1:{}/", nginx.port);

    // Proxy and nginx, no switches, in alternating order round after round.
    let mut proxy_runs = Vec::new();
    let mut nginx_runs = Vec::new();
    for round in 0..args.rounds.max(1) {
        if round % 2 == 0 {
            proxy_runs.push(wrk_result(wrk(&url, args.seconds, args)?)?);
            nginx_runs.push(wrk_result(wrk(&nginx_url, args.seconds, args)?)?);
        } else {
            nginx_runs.push(wrk_result(wrk(&nginx_url, args.seconds, args)?)?);
            proxy_runs.push(wrk_result(wrk(&url, args.seconds, args)?)?);
        }
    }
    drop(nginx);
    let ratios: Vec<f64> = proxy_runs
        .iter()
        .zip(&nginx_runs)
        .map(|(proxy, nginx)| round2(proxy.rps / nginx.rps.max(f64::MIN_POSITIVE)))
        .collect();

    // Switches under load: wrk runs while the pushes deploy and switch.
    let estimate = 2 + u64::from(args.switches) / 2;
    let under_load = wrk(&url, estimate.max(args.seconds), args)?;
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut pushes = Vec::new();
    for n in 1..=args.switches {
        pushes.push(bench.push(n)?);
    }
    let switching = started.elapsed();
    let during = wrk_result(under_load)?;
    if switching.as_secs() + 1 > estimate.max(args.seconds) {
        eprintln!(
            "note: the pushes took {switching:?}, longer than the load run; the last ones ran without load"
        );
    }

    // Rollback to the warm previous release.
    let out = bench.run(
        &exe,
        &["--output", "json", "rollback", "bench"],
        bench.dir.path(),
    )?;
    let report: serde_json::Value =
        serde_json::from_str(out.trim()).with_context(|| format!("bad rollback report: {out}"))?;
    let rollback_ms = report["took_ms"].as_u64().unwrap_or(u64::MAX);

    pushes.sort();
    let ms = |d: &Duration| d.as_millis() as u64;
    Ok(BenchCutoverResult {
        switches: args.switches,
        requests: during.requests,
        failed_requests: during.failed,
        rps_during_switch: during.rps,
        p99_ms_during_switch: during.p99_ms,
        p99_ms_baseline: median(proxy_runs.iter().map(|r| r.p99_ms)),
        proxy_rps: median(proxy_runs.iter().map(|r| r.rps)),
        nginx_rps: median(nginx_runs.iter().map(|r| r.rps)),
        proxy_vs_nginx: median(ratios.iter().copied()),
        proxy_vs_nginx_rounds: ratios,
        push_to_healthy_ms_median: pushes.get(pushes.len() / 2).map(ms).unwrap_or(0),
        push_to_healthy_ms_max: pushes.last().map(ms).unwrap_or(0),
        rollback_warm_ms: rollback_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn nginx_config_proxies_with_keepalive() {
        let conf = nginx_conf(Path::new("/tmp/n"), 8080, 9090);
        assert!(conf.contains("server 127.0.0.1:9090; keepalive 64;"));
        assert!(conf.contains("listen 127.0.0.1:8080;"));
        assert!(conf.contains("proxy_set_header Connection \"\";"));
        assert!(conf.contains("X-Forwarded-For $proxy_add_x_forwarded_for;"));
    }
}
