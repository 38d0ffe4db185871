//! Serves a static release's files on its internal port, from the daemon
//! itself: no process to start, so a static push is healthy at once.

use super::proxy::{ProxyBody, plain};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Serves `root` on `listener` until the returned task is aborted.
pub fn serve(listener: TcpListener, root: PathBuf) -> JoinHandle<()> {
    let canonical = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
    let root = Arc::new(Site {
        root,
        canonical,
        cache: Mutex::new(HashMap::new()),
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let root = root.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let root = root.clone();
                    async move { Ok::<_, Infallible>(respond(&request, &root).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A release's files. A release directory never changes after its export,
/// so small files are kept in memory after the first read; files reached
/// through links out of the release (shared uploads) are always read afresh.
struct Site {
    root: PathBuf,
    canonical: PathBuf,
    cache: Mutex<HashMap<String, (Bytes, &'static str)>>,
}

const CACHE_FILE_MAX: usize = 256 * 1024;
const CACHE_ENTRIES_MAX: usize = 4096;

async fn respond(request: &Request<Incoming>, site: &Site) -> Response<ProxyBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let key = request.uri().path();
    let cached = site.cache.lock().expect("cache lock").get(key).cloned();
    if let Some((data, content_type)) = cached {
        return file_response(request, data, content_type);
    }
    let Some(relative) = decode_path(key) else {
        return plain(StatusCode::BAD_REQUEST, "bad path\n");
    };
    let root = &site.root;
    let mut path = root.join(&relative);
    if tokio::fs::metadata(&path)
        .await
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        path.push("index.html");
    }
    // A link inside the release may point anywhere the export allowed: still inside.
    let data = match tokio::fs::read(&path).await {
        Ok(data) => data,
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    let data = Bytes::from(data);
    let content_type = content_type(&path);
    if data.len() <= CACHE_FILE_MAX
        && tokio::fs::canonicalize(&path)
            .await
            .is_ok_and(|real| real.starts_with(&site.canonical))
    {
        let mut cache = site.cache.lock().expect("cache lock");
        if cache.len() < CACHE_ENTRIES_MAX {
            cache.insert(key.to_string(), (data.clone(), content_type));
        }
    }
    file_response(request, data, content_type)
}

fn file_response(
    request: &Request<Incoming>,
    data: Bytes,
    content_type: &'static str,
) -> Response<ProxyBody> {
    let length = data.len();
    let body = if request.method() == Method::HEAD {
        Bytes::new()
    } else {
        data
    };
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if request.method() == Method::HEAD {
        headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// Percent-decodes a URL path into a relative path without `..`.
fn decode_path(path: &str) -> Option<PathBuf> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    let mut clean = PathBuf::new();
    for component in Path::new(&decoded).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(clean)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_paths_and_refuses_parent_dirs() {
        assert_eq!(
            decode_path("/a%20b/c.html"),
            Some(PathBuf::from("a b/c.html"))
        );
        assert_eq!(decode_path("/"), Some(PathBuf::new()));
        assert_eq!(decode_path("/../etc/passwd"), None);
        assert_eq!(decode_path("/%2e%2e/etc/passwd"), None);
        assert_eq!(decode_path("/bad%zz"), None);
    }
}
