//! Who is calling: the [`Principal`] extractor.

use std::sync::Arc;

use async_trait::async_trait;
use atlas_http::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use crate::token::{hash_token, JwtCodec, PERSONAL_TOKEN_PREFIX};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub is_admin: bool,
    pub via: Credential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    PersonalToken,
}

/// Looks up personal access tokens (implemented by the identity module).
#[async_trait]
pub trait PersonalTokenStore: Send + Sync + 'static {
    /// The principal for a stored token hash, if the token exists, is not
    /// revoked and has not expired.
    async fn principal_for(&self, token_hash: &str) -> Result<Option<Principal>, ApiError>;
}

/// Turns a `Bearer` credential into a [`Principal`].
#[derive(Clone)]
pub struct Authenticator {
    jwt: JwtCodec,
    personal_tokens: Option<Arc<dyn PersonalTokenStore>>,
}

impl Authenticator {
    pub fn new(jwt: JwtCodec, personal_tokens: Option<Arc<dyn PersonalTokenStore>>) -> Self {
        Authenticator { jwt, personal_tokens }
    }

    pub fn jwt(&self) -> &JwtCodec {
        &self.jwt
    }

    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, ApiError> {
        if bearer.starts_with(PERSONAL_TOKEN_PREFIX) {
            let store = self
                .personal_tokens
                .as_ref()
                .ok_or_else(|| ApiError::Unauthorized("personal access tokens are not enabled".into()))?;
            return store
                .principal_for(&hash_token(bearer))
                .await?
                .ok_or_else(|| ApiError::Unauthorized("invalid or revoked token".into()));
        }
        let claims = self
            .jwt
            .verify(bearer)
            .map_err(|_| ApiError::Unauthorized("invalid or expired access token".into()))?;
        Ok(Principal {
            user_id: claims.sub,
            is_admin: claims.adm,
            via: Credential::AccessToken,
        })
    }
}

/// The `Bearer` token of a request (`Authorization` header).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl<S> FromRequestParts<S> for Principal
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let token =
            bearer_token(&parts.headers).ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        auth.authenticate(token).await
    }
}
