//! The node's Ed25519 key and signed checkpoints.
//!
//! A checkpoint says "the chain up to `sequence` ends in `hash`", signed by
//! the node key, like a signed tree head in Certificate Transparency. The
//! signed message is the ASCII prefix `atlas.audit.checkpoint.v1`, a line
//! feed, then the canonical JSON (RFC 8785) of
//! `{"created_at", "hash", "key_id", "sequence"}`; the signature is stored as
//! standard base64 (with padding) of the 64 signature bytes.
//!
//! A key's id is the first 16 hex digits of SHA-256 over its 32 public key
//! bytes. Public keys are written as standard base64 of those 32 bytes, or
//! as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`, what `openssl pkey -pubout`
//! prints); signing keys as PKCS#8 PEM (`openssl genpkey -algorithm ed25519`)
//! or base64 of the 32-byte seed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::canonical::to_canonical_string;

/// Domain separation for checkpoint signatures.
const CHECKPOINT_CONTEXT: &[u8] = b"atlas.audit.checkpoint.v1\n";

/// The file a generated key is kept in, inside the data directory.
pub const GENERATED_KEY_FILE: &str = "audit-signing.key";

/// A signed statement about the head of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    /// The last row covered.
    pub sequence: i64,
    /// That row's hash.
    pub hash: String,
    /// Ed25519 signature, standard base64.
    pub signature: String,
    /// Id of the key that signed.
    pub key_id: String,
    pub created_at: String,
}

impl Checkpoint {
    /// The exact bytes the signature covers.
    pub fn signed_message(sequence: i64, hash: &str, key_id: &str, created_at: &str) -> Vec<u8> {
        let body = serde_json::json!({
            "created_at": created_at,
            "hash": hash,
            "key_id": key_id,
            "sequence": sequence,
        });
        let mut message = CHECKPOINT_CONTEXT.to_vec();
        message.extend_from_slice(to_canonical_string(&body).as_bytes());
        message
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{key}: not an Ed25519 key (expected PEM, or 32 bytes in base64)")]
    Unreadable { key: String },
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the key: {0}")]
    Encode(String),
}

/// The node's signing key.
pub struct NodeKey {
    signing: SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

/// Where the node key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `audit.signing_key` or `audit.signing_key_file`.
    Configured,
    /// A key generated earlier into the data directory.
    DataDir(PathBuf),
    /// Generated just now into the data directory.
    Generated(PathBuf),
}

impl NodeKey {
    pub fn generate() -> NodeKey {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        NodeKey::from_signing(SigningKey::from_bytes(&seed))
    }

    fn from_signing(signing: SigningKey) -> NodeKey {
        let public = PublicKey::from_verifying(signing.verifying_key());
        NodeKey { signing, public }
    }

    /// A PKCS#8 PEM, or the 32-byte seed in base64. `what` names the source
    /// in errors.
    pub fn parse(text: &str, what: &str) -> Result<NodeKey, KeyError> {
        let text = text.trim();
        let unreadable = || KeyError::Unreadable { key: what.to_string() };
        if text.starts_with("-----BEGIN") {
            return SigningKey::from_pkcs8_pem(text)
                .map(NodeKey::from_signing)
                .map_err(|_| unreadable());
        }
        let bytes = STANDARD.decode(text).map_err(|_| unreadable())?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| unreadable())?;
        Ok(NodeKey::from_signing(SigningKey::from_bytes(&seed)))
    }

    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn key_id(&self) -> &str {
        &self.public.key_id
    }

    /// Sign "the chain up to `sequence` ends in `hash`".
    pub fn sign_checkpoint(&self, sequence: i64, hash: &str, created_at: &str) -> Checkpoint {
        let message = Checkpoint::signed_message(sequence, hash, &self.public.key_id, created_at);
        let signature = self.signing.sign(&message);
        Checkpoint {
            sequence,
            hash: hash.to_string(),
            signature: STANDARD.encode(signature.to_bytes()),
            key_id: self.public.key_id.clone(),
            created_at: created_at.to_string(),
        }
    }

    /// The configured key, else the one kept in `{data_dir}`, else (when
    /// `generate` allows) a new one written there.
    pub fn load(
        settings: &atlas_kernel::settings::AuditSettings,
        data_dir: &Path,
        generate: bool,
    ) -> Result<Option<(NodeKey, KeySource)>, KeyError> {
        if let Some(secret) = &settings.signing_key {
            let key = NodeKey::parse(secret.expose(), "audit.signing_key")?;
            return Ok(Some((key, KeySource::Configured)));
        }
        let path = data_dir.join(GENERATED_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = NodeKey::parse(&text, &path.display().to_string())?;
                Ok(Some((key, KeySource::DataDir(path))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
                let key = NodeKey::generate();
                let file_error = |source| KeyError::File {
                    path: path.display().to_string(),
                    source,
                };
                std::fs::create_dir_all(data_dir).map_err(file_error)?;
                write_private_file(&path, &key.to_pkcs8_pem()?).map_err(file_error)?;
                Ok(Some((key, KeySource::Generated(path))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyError::File {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

/// An Ed25519 public key that checkpoints are checked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    key_id: String,
}

impl PublicKey {
    fn from_verifying(key: VerifyingKey) -> PublicKey {
        let digest = Sha256::digest(key.as_bytes());
        PublicKey {
            key,
            key_id: hex::encode(&digest[..8]),
        }
    }

    /// An SPKI PEM, or 32 bytes in base64 (or 64 hex digits).
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        let unreadable = || KeyError::Unreadable {
            key: "public key".to_string(),
        };
        if text.starts_with("-----BEGIN") {
            return VerifyingKey::from_public_key_pem(text)
                .map(PublicKey::from_verifying)
                .map_err(|_| unreadable());
        }
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| unreadable())?
        } else {
            STANDARD.decode(text).map_err(|_| unreadable())?
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| unreadable())?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey::from_verifying)
            .map_err(|_| unreadable())
    }

    /// `arg` as a key, or, when it names a file, the key that file holds.
    pub fn resolve(arg: &str) -> Result<PublicKey, KeyError> {
        let path = Path::new(arg);
        if path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|source| KeyError::File {
                path: arg.to_string(),
                source,
            })?;
            return PublicKey::parse(&text).map_err(|_| KeyError::Unreadable { key: arg.to_string() });
        }
        PublicKey::parse(arg)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.as_bytes())
    }

    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// Whether `checkpoint` carries a valid signature by this key.
    pub fn verifies(&self, checkpoint: &Checkpoint) -> bool {
        if checkpoint.key_id != self.key_id {
            return false;
        }
        let Ok(bytes) = STANDARD.decode(&checkpoint.signature) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        let message = Checkpoint::signed_message(
            checkpoint.sequence,
            &checkpoint.hash,
            &checkpoint.key_id,
            &checkpoint.created_at,
        );
        self.key.verify(&message, &signature).is_ok()
    }
}

/// The public keys whose checkpoints are accepted, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, PublicKey>,
}

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        TrustedKeys {
            keys: keys.into_iter().map(|k| (k.key_id.clone(), k)).collect(),
        }
    }

    pub fn add(&mut self, key: PublicKey) {
        self.keys.insert(key.key_id.clone(), key);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, key_id: &str) -> Option<&PublicKey> {
        self.keys.get(key_id)
    }

    /// The node key's public half plus `audit.trusted_public_keys`.
    pub fn from_settings(
        settings: &atlas_kernel::settings::AuditSettings,
        node: Option<&PublicKey>,
    ) -> Result<TrustedKeys, KeyError> {
        let mut trusted = TrustedKeys::new(node.cloned());
        for (i, text) in settings.trusted_public_keys.iter().enumerate() {
            let key = PublicKey::parse(text).map_err(|_| KeyError::Unreadable {
                key: format!("audit.trusted_public_keys[{i}]"),
            })?;
            trusted.add(key);
        }
        Ok(trusted)
    }
}

fn write_private_file(path: &Path, content: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(content.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let key = NodeKey::generate();
        let cp = key.sign_checkpoint(42, &"ab".repeat(32), "2026-11-23T12:00:00.000000Z");
        assert!(key.public().verifies(&cp));
        let other = NodeKey::generate();
        assert!(!other.public().verifies(&cp));
        for tamper in [
            Checkpoint {
                sequence: 43,
                ..cp.clone()
            },
            Checkpoint {
                hash: "cd".repeat(32),
                ..cp.clone()
            },
            Checkpoint {
                created_at: "2026-11-23T12:00:00.000001Z".into(),
                ..cp.clone()
            },
            Checkpoint {
                signature: STANDARD.encode([0u8; 64]),
                ..cp.clone()
            },
        ] {
            assert!(!key.public().verifies(&tamper), "{tamper:?}");
        }
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let key = NodeKey::generate();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(NodeKey::parse(&pem, "k").unwrap().key_id(), key.key_id());
        let seed = STANDARD.encode(key.signing.to_bytes());
        assert_eq!(NodeKey::parse(&seed, "k").unwrap().key_id(), key.key_id());
        let public = key.public();
        assert_eq!(&PublicKey::parse(&public.to_base64()).unwrap(), public);
        assert_eq!(&PublicKey::parse(&public.to_pem().unwrap()).unwrap(), public);
        assert_eq!(&PublicKey::parse(&hex::encode(public.key.as_bytes())).unwrap(), public);
        assert_eq!(public.key_id().len(), 16);
        assert!(NodeKey::parse("not a key", "audit.signing_key")
            .unwrap_err()
            .to_string()
            .contains("audit.signing_key"));
        assert!(PublicKey::parse("AAAA").is_err());
    }

    #[test]
    fn a_generated_key_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = atlas_kernel::settings::AuditSettings::default();
        assert!(NodeKey::load(&settings, dir.path(), false).unwrap().is_none());
        let (first, source) = NodeKey::load(&settings, dir.path(), true).unwrap().unwrap();
        assert!(matches!(source, KeySource::Generated(_)));
        let (again, source) = NodeKey::load(&settings, dir.path(), true).unwrap().unwrap();
        assert!(matches!(source, KeySource::DataDir(_)));
        assert_eq!(first.key_id(), again.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(GENERATED_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
