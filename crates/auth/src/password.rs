//! Argon2id password hashing.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Hashes and verifies passwords with Argon2id and fixed parameters.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A hash of a random password, verified against when the account does
    /// not exist so that unknown emails take as long as wrong passwords.
    decoy: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl PasswordHasher {
    /// `memory_kib`, `iterations`, `parallelism`: Argon2id's m, t, p.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, PasswordError> {
        let params =
            Params::new(memory_kib, iterations, parallelism, None).map_err(|e| PasswordError::Params(e.to_string()))?;
        let mut hasher = PasswordHasher {
            params,
            decoy: String::new(),
        };
        hasher.decoy = hasher.hash(&crate::token::new_opaque_token("decoy"))?;
        Ok(hasher)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string (`$argon2id$v=19$m=…`), salt included.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Constant-time check against a stored PHC string; `None` checks against
    /// a decoy and returns false, taking about as long as a real check.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let target = stored.unwrap_or(&self.decoy);
        let Ok(parsed) = PasswordHash::new(target) else {
            return false;
        };
        let ok = self.argon2().verify_password(password.as_bytes(), &parsed).is_ok();
        ok && stored.is_some()
    }

    /// Hash on the blocking pool so request threads stay free.
    pub async fn hash_async(&self, password: String) -> Result<String, PasswordError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.hash(&password))
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?
    }

    pub async fn verify_async(&self, password: String, stored: Option<String>) -> bool {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.verify(&password, stored.as_deref()))
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = PasswordHasher::new(1024, 1, 1).unwrap();
        let stored = h.hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(h.verify("correct horse", Some(&stored)));
        assert!(!h.verify("wrong", Some(&stored)));
        assert!(!h.verify("correct horse", None));
    }
}
