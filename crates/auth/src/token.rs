//! Access tokens (JWT) and opaque tokens (refresh and personal access tokens).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Claims of an Atlas access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// Whether the user was an admin when the token was issued.
    #[serde(default)]
    pub adm: bool,
}

/// Signs and verifies access tokens with one pinned algorithm.
#[derive(Clone)]
pub struct JwtCodec {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("auth.{key}: {message}")]
    Key { key: &'static str, message: String },
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("cannot sign token: {0}")]
    Sign(String),
}

impl JwtCodec {
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str, ttl_secs: u64) -> Self {
        JwtCodec {
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.into(),
            audience: audience.into(),
            ttl_secs: ttl_secs as i64,
        }
    }

    /// EdDSA (Ed25519) keys in PEM.
    pub fn eddsa(
        private_pem: &[u8],
        public_pem: &[u8],
        issuer: &str,
        audience: &str,
        ttl_secs: u64,
    ) -> Result<Self, TokenError> {
        Ok(JwtCodec {
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_pem(private_pem).map_err(|e| TokenError::Key {
                key: "jwt_private_key_file",
                message: e.to_string(),
            })?,
            decoding: DecodingKey::from_ed_pem(public_pem).map_err(|e| TokenError::Key {
                key: "jwt_public_key_file",
                message: e.to_string(),
            })?,
            issuer: issuer.into(),
            audience: audience.into(),
            ttl_secs: ttl_secs as i64,
        })
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    pub fn issue(&self, user_id: &str, is_admin: bool) -> Result<String, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.into(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
            jti: uuid::Uuid::now_v7().to_string(),
            adm: is_admin,
        };
        self.sign(&claims)
    }

    /// Sign arbitrary claims (tests use this to forge expired tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// Verify signature, `alg`, `exp`, `nbf`, `iss` and `aud`.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(self.algorithm);
        validation.algorithms = vec![self.algorithm];
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

/// Prefix of personal access tokens, so they are recognizable in a leak scan.
pub const PERSONAL_TOKEN_PREFIX: &str = "atlas_pat_";
/// Prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "atlas_rt_";

/// A new random opaque token: prefix + 256 random bits, base64url.
pub fn new_opaque_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// How opaque tokens are stored: SHA-256, hex. (They carry 256 bits of
/// entropy, so a fast hash is enough; no salt is needed for lookup.)
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_verify() {
        let codec = JwtCodec::hs256(b"0123456789abcdef0123456789abcdef", "atlas", "api", 60);
        let t = codec.issue("u1", true).unwrap();
        let c = codec.verify(&t).unwrap();
        assert_eq!(c.sub, "u1");
        assert!(c.adm);
        let other = JwtCodec::hs256(b"0123456789abcdef0123456789abcdeX", "atlas", "api", 60);
        assert!(other.verify(&t).is_err());
        let wrong_aud = JwtCodec::hs256(b"0123456789abcdef0123456789abcdef", "atlas", "other", 60);
        assert!(wrong_aud.verify(&t).is_err());
    }

    #[test]
    fn opaque_tokens() {
        let t = new_opaque_token(PERSONAL_TOKEN_PREFIX);
        assert!(t.starts_with("atlas_pat_"));
        assert_eq!(hash_token(&t).len(), 64);
        assert_ne!(new_opaque_token("x"), new_opaque_token("x"));
    }
}
