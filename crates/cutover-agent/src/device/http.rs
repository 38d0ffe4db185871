//! A small HTTP/1.1 client on hyper for the agent: downloads with range
//! resume and the polling transport. One connection per request keeps it
//! simple and small; `https` goes through rustls with the ring provider and
//! the system's roots.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad url {0:?}: {1}")]
    Url(String, &'static str),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls to {0}: {1}")]
    Tls(String, String),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{0} timed out")]
    Timeout(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Protocol(String),
}

/// The parts of a URL the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, HttpError> {
        let bad = |why| HttpError::Url(text.to_string(), why);
        let (tls, rest) = if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the url are not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| bad("port is not a number"))?,
            ),
            _ => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Url {
            tls,
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// Resolves `path_or_url` against a base URL (absolute URLs pass through).
    pub fn join(base: &str, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                path_or_url.trim_start_matches('/')
            )
        }
    }
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<std::sync::OnceLock<Arc<rustls::ClientConfig>>>,
    timeout: Duration,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

impl HttpClient {
    /// `timeout` bounds the connect and the response head, not the body.
    pub fn new(timeout: Duration) -> Self {
        Self {
            tls: Arc::new(std::sync::OnceLock::new()),
            timeout,
        }
    }

    fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.tls
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let cfg = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Arc::new(cfg)
            })
            .clone()
    }

    /// Sends one request and returns the response head with its streaming body.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, HttpError> {
        let u = Url::parse(url)?;
        let addr = format!("{}:{}", u.host, u.port);
        let work = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|source| HttpError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn Stream> = if u.tls {
                let name = rustls::pki_types::ServerName::try_from(u.host.clone())
                    .map_err(|e| HttpError::Tls(u.host.clone(), e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls_config())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| HttpError::Tls(u.host.clone(), e.to_string()))?;
                Box::new(tls)
            } else {
                Box::new(tcp)
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let host_header = if (u.tls && u.port == 443) || (!u.tls && u.port == 80) {
                u.host.clone()
            } else {
                format!("{}:{}", u.host, u.port)
            };
            let mut req = Request::builder()
                .method(method)
                .uri(&u.path)
                .header("host", host_header);
            req = req.header(
                "user-agent",
                concat!("cutover-agent/", env!("CARGO_PKG_VERSION")),
            );
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            let body = Full::new(Bytes::from(body.unwrap_or_default()));
            let req = req
                .body(body)
                .map_err(|e| HttpError::Protocol(e.to_string()))?;
            Ok::<_, HttpError>(sender.send_request(req).await?)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| HttpError::Timeout(url.to_string()))?
    }

    /// A request whose whole answer body is returned; non-2xx is an error.
    pub async fn fetch(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), HttpError> {
        let resp = self.send(method, url, headers, body).await?;
        let status = resp.status().as_u16();
        let bytes = tokio::time::timeout(self.timeout, resp.into_body().collect())
            .await
            .map_err(|_| HttpError::Timeout(url.to_string()))??
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(HttpError::Status {
                url: url.to_string(),
                status,
            });
        }
        Ok((status, bytes))
    }

    /// Downloads `url` into `dest`, resuming from the bytes already there with
    /// a range request. Returns the offset it resumed from.
    pub async fn download_resume(
        &self,
        url: &str,
        dest: &Path,
        expected_size: u64,
        headers: &[(&str, String)],
    ) -> Result<u64, HttpError> {
        let werr = |source| HttpError::Write {
            path: dest.display().to_string(),
            source,
        };
        let mut have = match tokio::fs::metadata(dest).await {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        if have > expected_size {
            tokio::fs::remove_file(dest).await.map_err(werr)?;
            have = 0;
        }
        if have == expected_size && expected_size > 0 {
            return Ok(have);
        }
        let mut hs: Vec<(&str, String)> = headers.to_vec();
        if have > 0 {
            hs.push(("range", format!("bytes={have}-")));
        }
        let resp = self.send("GET", url, &hs, None).await?;
        let status = resp.status().as_u16();
        let resumed_from = match status {
            206 => {
                let start = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    return Err(HttpError::Protocol(format!(
                        "{url} answered a range that does not start at {have}"
                    )));
                }
                have
            }
            200 => 0,
            416 if have == expected_size => return Ok(have),
            _ => {
                return Err(HttpError::Status {
                    url: url.to_string(),
                    status,
                });
            }
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed_from > 0)
            .truncate(resumed_from == 0)
            .open(dest)
            .await
            .map_err(werr)?;
        let mut body = resp.into_body();
        let mut written = resumed_from;
        loop {
            let frame = tokio::time::timeout(self.timeout, body.frame())
                .await
                .map_err(|_| HttpError::Timeout(url.to_string()))?;
            let Some(frame) = frame else { break };
            let frame = frame?;
            if let Ok(data) = frame.into_data() {
                written += data.len() as u64;
                if written > expected_size {
                    return Err(HttpError::Protocol(format!(
                        "{url} sent more than the expected {expected_size} bytes"
                    )));
                }
                file.write_all(&data).await.map_err(werr)?;
            }
        }
        file.flush().await.map_err(werr)?;
        file.sync_all().await.map_err(werr)?;
        if written != expected_size {
            return Err(HttpError::Protocol(format!(
                "{url} ended after {written} of {expected_size} bytes"
            )));
        }
        Ok(resumed_from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = Url::parse("http://127.0.0.1:8080/api/x?y=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (false, "127.0.0.1", 8080, "/api/x?y=1")
        );
        let u = Url::parse("https://example.org").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, "/"));
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert_eq!(Url::join("http://h:1/", "/api/a"), "http://h:1/api/a");
        assert_eq!(Url::join("http://h:1", "https://o/a"), "https://o/a");
    }
}
