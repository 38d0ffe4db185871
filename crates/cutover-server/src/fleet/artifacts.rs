//! Artifacts: content-addressed storage on disk (`{dir}/sha256/{hex}`),
//! ed25519 key generation and signing, and the signed reference an agent
//! receives in an install command.

use cutover_core::protocol::{ArtifactRef, signed_manifest};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A signing key pair, hex encoded.
pub struct KeyPair {
    pub secret_hex: String,
    pub public_hex: String,
}

/// A new ed25519 key pair from the system's randomness.
pub fn keygen() -> KeyPair {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    KeyPair {
        secret_hex: hex::encode(seed),
        public_hex: hex::encode(key.verifying_key().to_bytes()),
    }
}

/// Reads a hex secret key (from a file's first line or the text itself).
pub fn parse_secret(text: &str) -> anyhow::Result<SigningKey> {
    let bytes =
        hex::decode(text.trim()).map_err(|e| anyhow::anyhow!("secret key is not hex: {e}"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("secret key must be 32 bytes (64 hex digits)"))?;
    Ok(SigningKey::from_bytes(&arr))
}

/// A key id: the first 8 bytes of the public key, hex.
pub fn key_id(key: &SigningKey) -> String {
    hex::encode(&key.verifying_key().to_bytes()[..8])
}

/// Signs the manifest of an artifact; returns the hex signature.
pub fn sign(key: &SigningKey, sha256_hex: &str, version: &str) -> String {
    hex::encode(key.sign(&signed_manifest(sha256_hex, version)).to_bytes())
}

/// The sha256 and size of a file, streamed.
pub fn digest_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Content-addressed blobs.
#[derive(Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("sha256"))
            .map_err(|e| anyhow::anyhow!("cannot create artifact dir {}: {e}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self, sha256_hex: &str) -> Option<PathBuf> {
        if sha256_hex.len() != 64 || !sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(
            self.dir
                .join("sha256")
                .join(sha256_hex.to_ascii_lowercase()),
        )
    }

    /// Stores bytes; returns (sha256, size). Writing the same content twice is a no-op.
    pub fn put(&self, bytes: &[u8]) -> anyhow::Result<(String, u64)> {
        let sha = hex::encode(Sha256::digest(bytes));
        let dest = self.path(&sha).expect("a digest is a valid name");
        if !dest.exists() {
            let tmp = self
                .dir
                .join(format!("upload-{}.tmp", uuid::Uuid::new_v4()));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dest)?;
        }
        Ok((sha, bytes.len() as u64))
    }
}

/// The reference to an artifact that goes into an install command.
pub fn artifact_ref(row: &cutover_store::ArtifactRow) -> ArtifactRef {
    ArtifactRef {
        id: row.id.clone(),
        version: row.version.clone(),
        sha256: row.sha256.clone(),
        size: row.size_bytes.max(0) as u64,
        signature: row.signature.clone().unwrap_or_default(),
        key_id: row.signing_key_id.clone().unwrap_or_default(),
        url: format!("/api/agent/v1/artifacts/{}/download", row.id),
        hardware: row.compatible_hardware.clone(),
    }
}
