//! Authorization in one place: "may principal P do action A on resource R in
//! collection C". Which role P has in C comes from a [`RoleResolver`] (the
//! memberships table); what a role may do comes from a Casbin model and
//! policy, shipped in the binary and replaceable by `auth.policy_file`.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use atlas_http::ApiError;
use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};

use crate::principal::Principal;

/// The built-in Casbin model.
pub const DEFAULT_MODEL: &str = include_str!("../policy/model.conf");
/// The built-in role policy.
pub const DEFAULT_POLICY: &str = include_str!("../policy/policy.csv");

/// Answers which role a user holds in a collection.
#[async_trait]
pub trait RoleResolver: Send + Sync + 'static {
    /// `None` when the user is not a member (or the collection does not exist).
    async fn role_in(&self, user_id: &str, collection_id: &str) -> Result<Option<String>, ApiError>;
    /// Every collection the user is a member of.
    async fn collections_of(&self, user_id: &str) -> Result<Vec<String>, ApiError>;
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("auth.policy_file: {0}")]
    Invalid(String),
}

/// The decision table computed from the Casbin policy.
#[derive(Debug, Clone)]
pub struct RolePolicy {
    allowed: HashSet<(String, String, String)>,
}

impl RolePolicy {
    /// Evaluate the model over every (role, resource, action) the policy
    /// mentions, once at startup; requests then look the answer up.
    pub async fn load(policy_csv: &str) -> Result<Self, PolicyError> {
        let model = DefaultModel::from_str(DEFAULT_MODEL)
            .await
            .map_err(|e| PolicyError::Invalid(e.to_string()))?;
        let mut enforcer = Enforcer::new(model, MemoryAdapter::default())
            .await
            .map_err(|e| PolicyError::Invalid(e.to_string()))?;
        let mut roles = HashSet::new();
        let mut perms = HashSet::new();
        for (n, line) in policy_csv.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<String> = line.split(',').map(|f| f.trim().to_string()).collect();
            match (fields.first().map(String::as_str), fields.len()) {
                (Some("p"), 4) => {
                    roles.insert(fields[1].clone());
                    perms.insert((fields[2].clone(), fields[3].clone()));
                    enforcer
                        .add_policy(fields[1..].to_vec())
                        .await
                        .map_err(|e| PolicyError::Invalid(format!("line {}: {e}", n + 1)))?;
                }
                (Some("g"), 3) => {
                    roles.insert(fields[1].clone());
                    roles.insert(fields[2].clone());
                    enforcer
                        .add_grouping_policy(fields[1..].to_vec())
                        .await
                        .map_err(|e| PolicyError::Invalid(format!("line {}: {e}", n + 1)))?;
                }
                _ => {
                    return Err(PolicyError::Invalid(format!(
                        "line {}: expected `p, role, resource, action` or `g, role, parent`",
                        n + 1
                    )))
                }
            }
        }
        let mut allowed = HashSet::new();
        for role in &roles {
            for (obj, act) in &perms {
                let ok = enforcer
                    .enforce((role.as_str(), obj.as_str(), act.as_str()))
                    .map_err(|e| PolicyError::Invalid(e.to_string()))?;
                if ok {
                    allowed.insert((role.clone(), obj.clone(), act.clone()));
                }
            }
        }
        Ok(RolePolicy { allowed })
    }

    pub fn allows(&self, role: &str, resource: &str, action: &str) -> bool {
        self.allowed
            .contains(&(role.to_string(), resource.to_string(), action.to_string()))
    }
}

/// The one guard every collection-scoped handler calls.
#[derive(Clone)]
pub struct CollectionGuard {
    policy: Arc<RolePolicy>,
    roles: Arc<dyn RoleResolver>,
}

impl CollectionGuard {
    pub fn new(policy: Arc<RolePolicy>, roles: Arc<dyn RoleResolver>) -> Self {
        CollectionGuard { policy, roles }
    }

    /// The caller's role when allowed. A non-member gets 404 (the collection's
    /// existence is not revealed), a member without the permission 403.
    pub async fn authorize(
        &self,
        principal: &Principal,
        collection_id: &str,
        resource: &str,
        action: &str,
    ) -> Result<String, ApiError> {
        let role = self
            .roles
            .role_in(&principal.user_id, collection_id)
            .await?
            .ok_or_else(|| ApiError::not_found("collection"))?;
        if self.policy.allows(&role, resource, action) {
            Ok(role)
        } else {
            Err(ApiError::Forbidden(format!(
                "your role `{role}` may not {action} {resource} in this collection"
            )))
        }
    }

    /// The caller's role, or 404 for a non-member.
    pub async fn membership(&self, principal: &Principal, collection_id: &str) -> Result<String, ApiError> {
        self.roles
            .role_in(&principal.user_id, collection_id)
            .await?
            .ok_or_else(|| ApiError::not_found("collection"))
    }

    /// The collections a principal may see anything of (its memberships).
    pub async fn visible_collections(&self, principal: &Principal) -> Result<Vec<String>, ApiError> {
        self.roles.collections_of(&principal.user_id).await
    }

    pub fn policy(&self) -> &RolePolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn default_policy_inherits_roles() {
        let p = RolePolicy::load(DEFAULT_POLICY).await.unwrap();
        assert!(p.allows("owner", "items", "read"));
        assert!(p.allows("owner", "members", "manage"));
        assert!(p.allows("editor", "items", "write"));
        assert!(!p.allows("editor", "members", "manage"));
        assert!(p.allows("viewer", "items", "read"));
        assert!(!p.allows("viewer", "items", "write"));
        assert!(!p.allows("stranger", "items", "read"));
    }

    #[tokio::test]
    async fn bad_policy_names_the_line() {
        let err = RolePolicy::load("p, viewer, items\n").await.unwrap_err();
        assert!(err.to_string().contains("line 1"));
    }
}
