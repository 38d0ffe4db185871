//! The HTTP side of the client: one request helper that turns every failure into one clear
//! line (an unreachable server, a rejected key, a problem+json refusal), never a backtrace.

use anyhow::{Context, anyhow};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where the server is and how to authenticate; flags or the environment.
#[derive(Debug, Args, Clone)]
pub struct Connection {
    /// The cutover server's URL.
    #[arg(
        long,
        global = true,
        env = "CUTOVER_SERVER",
        default_value = "http://127.0.0.1:5001"
    )]
    pub server: String,
    /// The API key (cut_…) sent as X-API-Key.
    #[arg(long, global = true, env = "CUTOVER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// A client of one server with one key.
pub struct Api {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(conn: &Connection) -> anyhow::Result<Api> {
        let base = conn.server.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base).with_context(|| {
            format!("--server {base:?} is not a URL (e.g. http://127.0.0.1:5001)")
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api {
            base,
            key: conn.api_key.clone().filter(|k| !k.trim().is_empty()),
            http,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, self.url(path));
        if let Some(k) = &self.key {
            r = r.header("X-API-Key", k.trim());
        }
        r
    }

    /// Sends a request and reads the answer as JSON, or fails with one line.
    pub async fn send<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = self.execute(builder).await?;
        let text = response
            .text()
            .await
            .context("cannot read the server's answer")?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "the server's answer is not what this client expects: {}",
                truncate(&text, 200)
            )
        })
    }

    /// Sends a request; a non-2xx answer becomes an error.
    pub async fn execute(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_else(|| truncate(&text, 200));
        Err(match status {
            StatusCode::UNAUTHORIZED if self.key.is_none() => {
                anyhow!("the server needs an API key: pass --api-key or set CUTOVER_API_KEY")
            }
            StatusCode::UNAUTHORIZED => anyhow!(
                "the server rejected the API key ({detail}); check --api-key or CUTOVER_API_KEY"
            ),
            _ => anyhow!(
                "{} {}: {detail}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        anyhow!(
            "cannot reach the cutover server at {} ({cause}); is it running? set --server or CUTOVER_SERVER",
            self.base
        )
    }
}

fn truncate(s: &str, n: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Percent-encodes one path segment (ids are plain, but names may not be).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
