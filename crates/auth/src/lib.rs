//! Authentication and authorization for Atlas.
//!
//! - [`password`]: Argon2id hashing with configured parameters.
//! - [`token`]: JWT access tokens (HS256 or EdDSA, `alg` pinned, `exp`/`nbf`/
//!   `iss`/`aud` checked) and hashed opaque tokens (refresh, personal).
//! - [`principal`]: the `Principal` extractor.
//! - [`guard`]: the `CollectionGuard`, the only place that decides whether a
//!   caller may act in a collection (Casbin policy + a role resolver).
//!
//! This crate knows no tables: the identity module stores tokens, the
//! collections module resolves roles.

pub mod guard;
pub mod password;
pub mod principal;
pub mod token;

pub use guard::{CollectionGuard, RolePolicy, RoleResolver};
pub use password::PasswordHasher;
pub use principal::{Authenticator, Credential, PersonalTokenStore, Principal};
pub use token::{hash_token, new_opaque_token, JwtCodec};

use atlas_kernel::settings::{AuthSettings, JwtAlgorithm};

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    #[error(transparent)]
    Policy(#[from] guard::PolicyError),
    #[error("auth.{key}: cannot read {path}: {source}")]
    File {
        key: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The JWT codec described by the settings (the secret must be resolved).
pub fn jwt_from_settings(s: &AuthSettings) -> Result<JwtCodec, AuthSetupError> {
    match s.jwt_algorithm {
        JwtAlgorithm::HS256 => {
            let secret =
                s.jwt_secret
                    .as_ref()
                    .map(|x| x.expose().as_bytes().to_vec())
                    .ok_or(token::TokenError::Key {
                        key: "jwt_secret",
                        message: "not set".into(),
                    })?;
            Ok(JwtCodec::hs256(
                &secret,
                &s.issuer,
                &s.audience,
                s.access_token_ttl_secs,
            ))
        }
        JwtAlgorithm::EdDSA => {
            let read = |key: &'static str, p: &Option<std::path::PathBuf>| -> Result<Vec<u8>, AuthSetupError> {
                let path = p.clone().unwrap_or_default();
                std::fs::read(&path).map_err(|source| AuthSetupError::File {
                    key,
                    path: path.display().to_string(),
                    source,
                })
            };
            let private = read("jwt_private_key_file", &s.jwt_private_key_file)?;
            let public = read("jwt_public_key_file", &s.jwt_public_key_file)?;
            Ok(JwtCodec::eddsa(
                &private,
                &public,
                &s.issuer,
                &s.audience,
                s.access_token_ttl_secs,
            )?)
        }
    }
}

/// The role policy: `auth.policy_file` when set, else the built-in one.
pub async fn policy_from_settings(s: &AuthSettings) -> Result<RolePolicy, AuthSetupError> {
    let text = match &s.policy_file {
        Some(path) => std::fs::read_to_string(path).map_err(|source| AuthSetupError::File {
            key: "policy_file",
            path: path.display().to_string(),
            source,
        })?,
        None => guard::DEFAULT_POLICY.to_string(),
    };
    Ok(RolePolicy::load(&text).await?)
}

/// Password hasher with the configured Argon2id parameters.
pub fn hasher_from_settings(s: &AuthSettings) -> Result<PasswordHasher, AuthSetupError> {
    Ok(PasswordHasher::new(
        s.argon2_memory_kib,
        s.argon2_iterations,
        s.argon2_parallelism,
    )?)
}
