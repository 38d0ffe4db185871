//! Artifact verification: size, sha256 and an ed25519 signature over the
//! signed manifest, checked on the downloaded file before anything is installed.

use cutover_core::protocol::{ArtifactRef, signed_manifest};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
    #[error("sha256 mismatch: expected {expected}, got {actual}")]
    Hash { expected: String, actual: String },
    #[error("signature is not 128 hex digits")]
    MalformedSignature,
    #[error("signature does not verify with any trusted key")]
    BadSignature,
    #[error("cannot read the downloaded file: {0}")]
    Io(String),
}

/// A hex ed25519 public key.
pub fn parse_public_key(hex_text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(hex_text.trim()).map_err(|e| e.to_string())?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| "not 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&arr).map_err(|e| e.to_string())
}

/// The sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
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

/// Checks the signature of the manifest (digest and version) against the trusted keys.
pub fn verify_signature(artifact: &ArtifactRef, keys: &[VerifyingKey]) -> Result<(), VerifyError> {
    let sig_bytes =
        hex::decode(artifact.signature.trim()).map_err(|_| VerifyError::MalformedSignature)?;
    let arr: [u8; 64] = sig_bytes
        .try_into()
        .map_err(|_| VerifyError::MalformedSignature)?;
    let sig = Signature::from_bytes(&arr);
    let manifest = signed_manifest(&artifact.sha256, &artifact.version);
    if keys
        .iter()
        .any(|k| k.verify_strict(&manifest, &sig).is_ok())
    {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// Verifies a downloaded file: size, digest, then signature.
pub fn verify_file(
    path: &Path,
    artifact: &ArtifactRef,
    keys: &[VerifyingKey],
) -> Result<(), VerifyError> {
    let (digest, size) = sha256_file(path).map_err(|e| VerifyError::Io(e.to_string()))?;
    if size != artifact.size {
        return Err(VerifyError::Size {
            expected: artifact.size,
            actual: size,
        });
    }
    if !digest.eq_ignore_ascii_case(artifact.sha256.trim()) {
        return Err(VerifyError::Hash {
            expected: artifact.sha256.clone(),
            actual: digest,
        });
    }
    verify_signature(artifact, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn artifact(data: &[u8], key: &SigningKey) -> ArtifactRef {
        let sha = hex::encode(Sha256::digest(data));
        let sig = key.sign(&signed_manifest(&sha, "2.0.0"));
        ArtifactRef {
            id: "art_1".into(),
            version: "2.0.0".into(),
            sha256: sha,
            size: data.len() as u64,
            signature: hex::encode(sig.to_bytes()),
            key_id: String::new(),
            url: "/x".into(),
            hardware: vec![],
        }
    }

    #[test]
    fn good_file_passes_and_each_tampering_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"firmware").unwrap();
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let a = artifact(b"firmware", &key);
        verify_file(&p, &a, &[key.verifying_key()]).unwrap();
        assert_eq!(
            verify_file(&p, &a, &[other.verifying_key()]),
            Err(VerifyError::BadSignature)
        );
        let mut relabelled = a.clone();
        relabelled.version = "9.9.9".into();
        assert_eq!(
            verify_file(&p, &relabelled, &[key.verifying_key()]),
            Err(VerifyError::BadSignature)
        );
        std::fs::write(&p, b"firmwarX").unwrap();
        assert!(matches!(
            verify_file(&p, &a, &[key.verifying_key()]),
            Err(VerifyError::Hash { .. })
        ));
        std::fs::write(&p, b"firm").unwrap();
        assert!(matches!(
            verify_file(&p, &a, &[key.verifying_key()]),
            Err(VerifyError::Size { .. })
        ));
    }
}
