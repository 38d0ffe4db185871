//! Who is calling: API keys (`X-API-Key`) and JSON Web Tokens (`Authorization: Bearer`),
//! and the roles that decide what they may do.
//!
//! An API key is `cut_{prefix}_{secret}`: 12 hex characters of prefix, by which the store
//! finds it, and 256 random bits. Only an HMAC-SHA256 of the whole key, keyed with the
//! server's secret, is stored; it is compared in constant time. A key is shown once, at
//! creation. Recently used keys are kept in memory for a few seconds so that a read does
//! not cost a database query; revoking through this server drops it at once, and another
//! replica's revocation takes effect within [`KEY_CACHE_TTL`].

use crate::problem::ApiError;
use crate::settings::JwtSettings;
use chrono::Utc;
use cutover_store::{ApiKeyRow, NewApiKey, Store};
use hmac::{KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

/// How long a verified key row is reused before the store is asked again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// What a caller may do; each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything but the audit log and keys.
    Viewer,
    /// Creates plans, executes, pauses, resumes, cancels, rolls back, promotes.
    Operator,
    /// Approves plans.
    Approver,
    /// Manages keys and reads the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Approver, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "approver" => Ok(Role::Approver),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role {s:?}: expected viewer, operator, approver or admin"
            )),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable identity used in audit rows and for "the creator may not approve":
    /// `key:{prefix}` or `jwt:{sub}`.
    pub id: String,
    /// A name for people (the key's name or the token's subject).
    pub name: String,
    pub role: Role,
    /// Rate-limit bucket of this caller.
    pub bucket: String,
}

impl Principal {
    /// Refuses with 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {role} role; {} has {}",
                self.name, self.role
            )))
        }
    }
}

/// A freshly generated key: the text shown once and what the store keeps.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub key: String,
    pub prefix: String,
    pub hash: String,
}

/// Makes a new random key and its HMAC.
pub fn generate_key(secret: &[u8]) -> GeneratedKey {
    let prefix_bytes: [u8; 6] = rand::random();
    let secret_bytes: [u8; 32] = rand::random();
    let prefix = hex::encode(prefix_bytes);
    let key = format!("cut_{prefix}_{}", hex::encode(secret_bytes));
    let hash = hash_key(secret, &key);
    GeneratedKey { key, prefix, hash }
}

/// HMAC-SHA256 of `key` under the server secret, lowercase hex.
pub fn hash_key(secret: &[u8], key: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("hmac accepts keys of any length");
    mac.update(key.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The prefix of a well-formed key, or `None`.
pub fn key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("cut_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let ok = prefix.len() == 12
        && secret.len() == 64
        && prefix.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(prefix)
}

/// Creates a key in the store and returns the row and the key text (shown once).
pub async fn create_key(
    store: &Store,
    secret: &[u8],
    name: &str,
    role: Role,
    created_by: Option<&str>,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> Result<(ApiKeyRow, String), cutover_store::StoreError> {
    let generated = generate_key(secret);
    let row = store
        .insert_api_key(&NewApiKey {
            id: None,
            prefix: generated.prefix.clone(),
            hash: generated.hash.clone(),
            name: name.to_string(),
            role: role.as_str().to_string(),
            created_by: created_by.map(str::to_string),
            expires_at,
        })
        .await?;
    Ok((row, generated.key))
}

/// A key row as the verifier needs it: what to compare and who it stands for.
#[derive(Debug, Clone)]
struct KnownKey {
    /// The stored HMAC, decoded (empty when the stored text is not hex: nothing matches).
    hash: Vec<u8>,
    revoked: bool,
    expires_at: Option<chrono::DateTime<Utc>>,
    /// An error when the stored role is unknown (answered with 500).
    principal: Result<Principal, String>,
    fetched: Instant,
}

impl KnownKey {
    fn of(row: &ApiKeyRow) -> KnownKey {
        let principal = row.role.parse::<Role>().map(|role| Principal {
            id: format!("key:{}", row.prefix),
            name: row.name.clone(),
            role,
            bucket: format!("key:{}", row.prefix),
        });
        KnownKey {
            hash: hex::decode(&row.hash).unwrap_or_default(),
            revoked: row.revoked_at.is_some(),
            expires_at: row.expires_at,
            principal: principal.map_err(|e| format!("key {}: {e}", row.id)),
            fetched: Instant::now(),
        }
    }
}

/// Checks keys against the store, with a short-lived cache of what the store said.
///
/// A cached entry holds the stored HMAC, not the key: every request still proves it holds
/// the key. Revocation through this server drops the entry at once ([`KeyVerifier::forget`]);
/// a revocation by another replica (or directly in the database) is seen within
/// [`KEY_CACHE_TTL`], after which the store is asked again.
#[derive(Debug)]
pub struct KeyVerifier {
    secret: Vec<u8>,
    cache: Mutex<HashMap<String, KnownKey>>,
}

impl KeyVerifier {
    pub fn new(secret: Vec<u8>) -> Self {
        KeyVerifier {
            secret,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Drops a key from the cache (after a revocation).
    pub fn forget(&self, prefix: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(prefix);
        }
    }

    /// The caller behind `key`, or 401 saying why not.
    pub async fn verify(&self, store: &Store, key: &str) -> Result<Principal, ApiError> {
        let key = key.trim();
        let prefix = key_prefix(key).ok_or_else(|| {
            ApiError::unauthorized("X-API-Key is not a cutover key (expected cut_…)")
        })?;
        let cached = self.cache.lock().ok().and_then(|c| {
            c.get(prefix)
                .filter(|k| k.fetched.elapsed() < KEY_CACHE_TTL)
                .cloned()
        });
        let known = match cached {
            Some(known) => known,
            None => {
                let row = store
                    .find_api_key(prefix)
                    .await
                    .map_err(ApiError::from)?
                    .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
                let known = KnownKey::of(&row);
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() > 10_000 {
                        cache.retain(|_, k| k.fetched.elapsed() < KEY_CACHE_TTL);
                    }
                    cache.insert(prefix.to_string(), known.clone());
                }
                known
            }
        };
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("hmac accepts keys of any length");
        mac.update(key.as_bytes());
        let computed = mac.finalize().into_bytes();
        if known.hash.len() != computed.len()
            || !bool::from(computed.as_slice().ct_eq(known.hash.as_slice()))
        {
            return Err(ApiError::unauthorized("unknown API key"));
        }
        if known.revoked {
            return Err(ApiError::unauthorized("API key was revoked"));
        }
        if known.expires_at.is_some_and(|t| t <= Utc::now()) {
            return Err(ApiError::unauthorized("API key has expired"));
        }
        known.principal.map_err(ApiError::internal)
    }
}

/// The claims cutover reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
}

/// Verifies bearer tokens: HS256 with the shared secret, EdDSA with the configured keys;
/// exp is required, nbf, iss and aud are checked.
#[derive(Clone)]
pub struct JwtVerifier {
    settings: JwtSettings,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").finish_non_exhaustive()
    }
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Self {
        JwtVerifier { settings }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled()
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.settings.leeway_secs;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.settings.issuer {
            v.set_issuer(&[iss.as_str()]);
            required.push("iss");
        }
        match &self.settings.audience {
            Some(aud) => {
                v.set_audience(&[aud.as_str()]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// The caller behind `token`, or 401 saying why not.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        if !self.enabled() {
            return Err(ApiError::unauthorized(
                "bearer tokens are not accepted by this server (no jwt_secret or public key configured)",
            ));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ApiError::unauthorized(format!("bearer token is malformed: {e}")))?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let secret = self.settings.hs256_secret.as_ref().ok_or_else(|| {
                    ApiError::unauthorized("HS256 tokens are not accepted by this server")
                })?;
                jsonwebtoken::decode::<Claims>(
                    token,
                    &DecodingKey::from_secret(secret),
                    &self.validation(Algorithm::HS256),
                )
                .map_err(token_error)?
                .claims
            }
            Algorithm::EdDSA => {
                if self.settings.ed25519_public_keys.is_empty() {
                    return Err(ApiError::unauthorized(
                        "EdDSA tokens are not accepted by this server",
                    ));
                }
                let validation = self.validation(Algorithm::EdDSA);
                let mut last = None;
                let mut found = None;
                for key in &self.settings.ed25519_public_keys {
                    match jsonwebtoken::decode::<Claims>(
                        token,
                        &DecodingKey::from_ed_der(key),
                        &validation,
                    ) {
                        Ok(data) => {
                            found = Some(data.claims);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match (found, last) {
                    (Some(c), _) => c,
                    (None, Some(e)) => return Err(token_error(e)),
                    (None, None) => return Err(ApiError::unauthorized("bearer token refused")),
                }
            }
            other => {
                return Err(ApiError::unauthorized(format!(
                    "bearer token algorithm {other:?} is not accepted (HS256 or EdDSA)"
                )));
            }
        };
        let role = match &claims.role {
            Some(r) => r
                .parse()
                .map_err(|e: String| ApiError::unauthorized(format!("bearer token: {e}")))?,
            None => Role::Viewer,
        };
        Ok(Principal {
            id: format!("jwt:{}", claims.sub),
            name: claims.name.clone().unwrap_or_else(|| claims.sub.clone()),
            role,
            bucket: format!("jwt:{}", claims.sub),
        })
    }
}

fn token_error(e: jsonwebtoken::errors::Error) -> ApiError {
    use jsonwebtoken::errors::ErrorKind as K;
    let why = match e.kind() {
        K::ExpiredSignature => "it has expired (exp)".to_string(),
        K::ImmatureSignature => "it is not valid yet (nbf)".to_string(),
        K::InvalidIssuer => "wrong issuer (iss)".to_string(),
        K::InvalidAudience => "wrong audience (aud)".to_string(),
        K::InvalidSignature => "bad signature".to_string(),
        K::MissingRequiredClaim(c) => format!("claim {c} is missing"),
        other => format!("{other:?}"),
    };
    ApiError::unauthorized(format!("bearer token refused: {why}"))
}

/// Where the key secret is kept when no path is given: beside a SQLite database file
/// (`cutover.db.key-secret`), else in the user's configuration directory.
pub fn default_secret_path(database_url: &str) -> PathBuf {
    if let Some(rest) = database_url.strip_prefix("sqlite:")
        && !rest.contains(":memory:")
    {
        let path = rest.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or(path);
        if !path.is_empty() {
            return PathBuf::from(format!("{path}.key-secret"));
        }
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("cutover").join("key-secret")
}

/// Reads the key secret at `path`, creating it (32 random bytes, hex, mode 0600) when missing.
pub fn load_or_create_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            if text.len() < 32 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: key secret is shorter than 32 characters",
                        path.display()
                    ),
                ));
            }
            Ok(text.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let bytes: [u8; 32] = rand::random();
            let text = hex::encode(bytes);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            match options.open(path) {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(text.as_bytes())?;
                    f.sync_all()?;
                    Ok(text.into_bytes())
                }
                // Someone else created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create_secret(path)
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The key secret: `CUTOVER_API_KEY_SECRET` if set, else the file at `path` (or the default
/// path for `database_url`), created when missing.
pub fn resolve_secret(path: Option<&Path>, database_url: &str) -> std::io::Result<Vec<u8>> {
    if let Ok(value) = std::env::var("CUTOVER_API_KEY_SECRET")
        && !value.trim().is_empty()
    {
        if value.trim().len() < 32 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "CUTOVER_API_KEY_SECRET is shorter than 32 characters",
            ));
        }
        return Ok(value.trim().as_bytes().to_vec());
    }
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("CUTOVER_SECRET_FILE") {
            Some(p) => PathBuf::from(p),
            None => default_secret_path(database_url),
        },
    };
    load_or_create_secret(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_findable_prefix_and_a_keyed_hash() {
        let k = generate_key(b"secret-one");
        assert_eq!(key_prefix(&k.key), Some(k.prefix.as_str()));
        assert_eq!(hash_key(b"secret-one", &k.key), k.hash);
        assert_ne!(hash_key(b"secret-two", &k.key), k.hash);
        assert_eq!(key_prefix("cut_abc_def"), None);
        assert_eq!(key_prefix("nonsense"), None);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator);
        assert!(Role::Operator < Role::Approver);
        assert!(Role::Approver < Role::Admin);
        assert_eq!("Admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn secret_path_sits_beside_a_sqlite_file() {
        assert_eq!(
            default_secret_path("sqlite:///tmp/x/cutover.db?mode=rwc"),
            PathBuf::from("/tmp/x/cutover.db.key-secret")
        );
        assert_eq!(
            default_secret_path("sqlite://cutover.db"),
            PathBuf::from("cutover.db.key-secret")
        );
    }

    #[test]
    fn secret_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret");
        let a = load_or_create_secret(&path).unwrap();
        let b = load_or_create_secret(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }
}
