//! `/collections/{id}/rules` (owners), `/rules/validate`, `/rules/test` and
//! `/webhooks/deliveries`.
//!
//! A rule in a request body is YAML (`application/yaml`) or JSON; invalid
//! rules are answered 422 with every problem and its line and column in
//! `details.errors`.

use std::sync::Arc;

use atlas_auth::{Authenticator, CollectionGuard, Principal};
use atlas_db::Database;
use atlas_http::{page_limit, ApiError, ApiResult, CursorCodec, ErrorBody, Json, Path, Query};
use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::book::RuleBook;
use crate::eval;
use crate::rule::{self, Checked, LoadOptions, Origin, RuleIssue};
use crate::store::{RuleChange, RuleStore, RuleVersion, StoredRule};
use crate::webhook::{self, Delivery, Outcome};

#[derive(Clone)]
pub(crate) struct RulesState {
    pub auth: Arc<Authenticator>,
    pub guard: Arc<CollectionGuard>,
    pub store: RuleStore,
    pub book: Arc<RuleBook>,
    pub db: Database,
    pub cursors: CursorCodec,
}

impl FromRef<RulesState> for Arc<Authenticator> {
    fn from_ref(s: &RulesState) -> Self {
        s.auth.clone()
    }
}

pub(crate) fn router(state: RulesState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, update_rule, delete_rule))
        .routes(routes!(rule_versions))
        .routes(routes!(validate))
        .routes(routes!(test_rules))
        .routes(routes!(list_deliveries))
        .with_state(state)
}

/// The permission every collection-rules endpoint needs (owners have it).
const RESOURCE: &str = "rules";
const ACTION: &str = "manage";

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    items: Vec<StoredRule>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    items: Vec<RuleVersion>,
}

/// `POST /rules/validate`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Validation {
    valid: bool,
    errors: Vec<RuleIssue>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ValidateQuery {
    /// Check as this collection's rule (only item jobs and workflows, only
    /// the allowed webhook secrets); needs the rules permission there.
    collection_id: Option<String>,
}

/// `POST /rules/test`'s request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// A list of rules (objects as in YAML), or YAML text.
    #[schema(value_type = Object)]
    rules: Value,
    /// A sample event envelope.
    #[schema(value_type = Object, example = json!({"type": "ItemCreated", "entity": {"type": "item", "id": "0192f0c4-6a4e-7c1d-9d6e-6d7f7f1a2b3c", "collection_id": "0192f0c4-6a4e-7c1d-9d6e-000000000001"}, "data": {"title": "Rust in action", "version": 1}}))]
    event: Value,
}

/// An action a rule would take.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlannedAction {
    rule: String,
    action: String,
    /// Arguments with templates filled in from the event.
    #[schema(value_type = Object)]
    args: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    actions: Vec<PlannedAction>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Deliveries of this collection (owners); without it, all (administrators).
    collection_id: Option<String>,
    /// delivered, failed, refused, retrying or dead.
    outcome: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    items: Vec<Delivery>,
    next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct DeliveryCursor {
    id: String,
}

/// Every problem of a rule text, as a 422.
fn invalid(issues: Vec<RuleIssue>) -> ApiError {
    let message = match issues.first() {
        Some(first) if issues.len() == 1 => format!("invalid rule: {first}"),
        Some(first) => format!("invalid rule: {first} (and {} more)", issues.len() - 1),
        None => "invalid rule".into(),
    };
    let mut details = Map::new();
    details.insert("field".into(), Value::String("body".into()));
    details.insert("errors".into(), serde_json::to_value(&issues).unwrap_or(Value::Null));
    ApiError::Invalid { message, details }
}

fn body_text(headers: &HeaderMap, body: &Bytes) -> ApiResult<String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let accepted = [
        "application/json",
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "text/plain",
    ];
    if !accepted.iter().any(|t| content_type.starts_with(t)) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "send a rule as application/json or application/yaml, not {content_type}"
        )));
    }
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))
}

/// Exactly one valid rule from a request body.
fn one_rule(text: &str, options: &LoadOptions) -> ApiResult<Checked> {
    let doc = crate::yaml::parse(text).map_err(|e| {
        invalid(vec![RuleIssue {
            line: e.pos.line,
            column: e.pos.column,
            message: e.message,
        }])
    })?;
    if !doc.value.is_object() {
        return Err(invalid(vec![RuleIssue {
            line: doc.value_pos("").line,
            column: doc.value_pos("").column,
            message: "a request body is one rule: a mapping (or JSON object)".into(),
        }]));
    }
    let mut rules = rule::check_document(&doc, options).map_err(invalid)?;
    rules.pop().ok_or_else(|| invalid(Vec::new()))
}

/// What storing `rule`, sent as `text` by `principal`, writes.
fn change<'a>(rule: &'a Checked, text: &'a str, principal: &'a Principal) -> RuleChange<'a> {
    RuleChange {
        name: &rule.name,
        definition: &rule.definition,
        source: text,
        author: &principal.user_id,
    }
}

async fn authorize(s: &RulesState, principal: &Principal, collection_id: &str) -> ApiResult<()> {
    s.guard
        .authorize(principal, collection_id, RESOURCE, ACTION)
        .await
        .map(|_| ())
}

fn created(path: String, body: impl Serialize) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&path) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A collection's rules (owners).
#[utoipa::path(get, path = "/collections/{id}/rules", tag = "rules", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the collection's rules, by name", body = RuleList),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a member who is not an owner", body = ErrorBody),
        (status = 404, description = "no such collection, or not a member", body = ErrorBody),
    ))]
async fn list_rules(
    State(s): State<RulesState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RuleList>> {
    authorize(&s, &principal, &id).await?;
    Ok(Json(RuleList {
        items: s.store.list(&id).await?,
    }))
}

/// Add a rule to a collection (owners). The body is one rule, as YAML
/// (`application/yaml`) or JSON, with the fields of the rules language.
#[utoipa::path(post, path = "/collections/{id}/rules", tag = "rules", params(("id" = String, Path)),
    security(("bearer" = [])),
    request_body(description = "one rule", content(
        (Object = "application/json", example = json!({"name": "tag-rust", "on": ["ItemCreated", "ItemUpdated"], "when": "event.data.title.lowerAscii().contains(\"rust\")", "do": [{"add_tags": ["rust"]}]})),
        (String = "application/yaml", example = "name: tag-rust\non: [ItemCreated, ItemUpdated]\nwhen: 'event.data.title.lowerAscii().contains(\"rust\")'\ndo:\n  - add_tags: [rust]\n"),
    )),
    responses(
        (status = 201, description = "the rule, version 1", body = StoredRule),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a member who is not an owner", body = ErrorBody),
        (status = 404, description = "no such collection, or not a member", body = ErrorBody),
        (status = 409, description = "the collection has a rule of that name", body = ErrorBody),
        (status = 415, description = "neither JSON nor YAML", body = ErrorBody),
        (status = 422, description = "an invalid rule: `details.errors` lists each problem with its line and column", body = ErrorBody),
    ))]
async fn create_rule(
    State(s): State<RulesState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&s, &principal, &id).await?;
    let text = body_text(&headers, &body)?;
    let rule = one_rule(&text, s.book.collection_options())?;
    let stored = s.store.create(&id, change(&rule, &text, &principal)).await?;
    Ok(created(format!("/api/v1/collections/{id}/rules/{}", stored.id), stored))
}

/// One of a collection's rules (owners).
#[utoipa::path(get, path = "/collections/{id}/rules/{rule_id}", tag = "rules",
    params(("id" = String, Path), ("rule_id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "the rule", body = StoredRule),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a member who is not an owner", body = ErrorBody),
        (status = 404, description = "no such collection or rule", body = ErrorBody),
    ))]
async fn get_rule(
    State(s): State<RulesState>,
    principal: Principal,
    Path((id, rule_id)): Path<(String, String)>,
) -> ApiResult<Json<StoredRule>> {
    authorize(&s, &principal, &id).await?;
    Ok(Json(s.store.get(&id, &rule_id).await?))
}

/// Replace a rule (owners); the change is kept as a new version.
#[utoipa::path(put, path = "/collections/{id}/rules/{rule_id}", tag = "rules",
    params(("id" = String, Path), ("rule_id" = String, Path)), security(("bearer" = [])),
    request_body(description = "one rule", content(
        (Object = "application/json"),
        (String = "application/yaml"),
    )),
    responses(
        (status = 200, description = "the rule with its new version", body = StoredRule),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a member who is not an owner", body = ErrorBody),
        (status = 404, description = "no such collection or rule", body = ErrorBody),
        (status = 409, description = "another rule of the collection has that name", body = ErrorBody),
        (status = 415, description = "neither JSON nor YAML", body = ErrorBody),
        (status = 422, description = "an invalid rule, with each problem's line and column", body = ErrorBody),
    ))]
async fn update_rule(
    State(s): State<RulesState>,
    principal: Principal,
    Path((id, rule_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<StoredRule>> {
    authorize(&s, &principal, &id).await?;
    let text = body_text(&headers, &body)?;
    let rule = one_rule(&text, s.book.collection_options())?;
    let stored = s.store.update(&id, &rule_id, change(&rule, &text, &principal)).await?;
    Ok(Json(stored))
}

/// Delete a rule (owners); its versions stay readable.
#[utoipa::path(delete, path = "/collections/{id}/rules/{rule_id}", tag = "rules",
    params(("id" = String, Path), ("rule_id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a member who is not an owner", body = ErrorBody),
        (status = 404, description = "no such collection or rule", body = ErrorBody),
    ))]
async fn delete_rule(
    State(s): State<RulesState>,
    principal: Principal,
    Path((id, rule_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    authorize(&s, &principal, &id).await?;
    s.store.delete(&id, &rule_id, &principal.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every version of a rule, oldest first, with its author and time.
#[utoipa::path(get, path = "/collections/{id}/rules/{rule_id}/versions", tag = "rules",
    params(("id" = String, Path), ("rule_id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "the versions: created, updated …, deleted", body = VersionList),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a member who is not an owner", body = ErrorBody),
        (status = 404, description = "no such collection or rule", body = ErrorBody),
    ))]
async fn rule_versions(
    State(s): State<RulesState>,
    principal: Principal,
    Path((id, rule_id)): Path<(String, String)>,
) -> ApiResult<Json<VersionList>> {
    authorize(&s, &principal, &id).await?;
    Ok(Json(VersionList {
        items: s.store.versions(&id, &rule_id).await?,
    }))
}

/// Check rules (YAML or JSON; one rule or a list) without storing them.
#[utoipa::path(post, path = "/rules/validate", tag = "rules", params(ValidateQuery), security(("bearer" = [])),
    request_body(description = "one rule or a list", content(
        (String = "application/yaml", example = "- name: tag-rust\n  on: [ItemCreated]\n  whn: 'true'\n  do: [{add_tags: [rust]}]\n"),
        (Object = "application/json"),
    )),
    responses(
        (status = 200, description = "whether the rules are valid, and each problem with its line and column", body = Validation,
            example = json!({"valid": false, "errors": [{"line": 3, "column": 3, "message": "unknown field `whn`, expected one of `name`, `on`, `when`, `do`, `enabled`, `priority`, `description`"}]})),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "checking as a collection's rule without the permission", body = ErrorBody),
        (status = 404, description = "no such collection", body = ErrorBody),
        (status = 415, description = "neither JSON nor YAML", body = ErrorBody),
    ))]
async fn validate(
    State(s): State<RulesState>,
    principal: Principal,
    Query(q): Query<ValidateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Validation>> {
    let options = match &q.collection_id {
        Some(c) => {
            authorize(&s, &principal, c).await?;
            s.book.collection_options()
        }
        None => s.book.global_options(),
    };
    let text = body_text(&headers, &body)?;
    let errors = match rule::parse(&text, options) {
        Ok(_) => Vec::new(),
        Err(issues) => issues,
    };
    Ok(Json(Validation {
        valid: errors.is_empty(),
        errors,
    }))
}

/// Dry-run rules against a sample event: the actions they would take, in
/// order, with templates filled in. Nothing is changed.
#[utoipa::path(post, path = "/rules/test", tag = "rules", security(("bearer" = [])),
    request_body = TestRequest,
    responses(
        (status = 200, description = "the actions the rules would take", body = TestResult,
            example = json!({"actions": [{"rule": "tag-rust", "action": "add_tags", "args": ["rust"]}]})),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 422, description = "invalid rules (each problem with its line and column) or an event without `type`", body = ErrorBody),
    ))]
async fn test_rules(
    State(s): State<RulesState>,
    _principal: Principal,
    Json(body): Json<TestRequest>,
) -> ApiResult<Json<TestResult>> {
    if body.event.get("type").and_then(Value::as_str).is_none() {
        return Err(ApiError::validation("event", "the event needs a `type`"));
    }
    let checked = match &body.rules {
        Value::String(text) => rule::parse(text, s.book.global_options()),
        other => rule::check_document(&crate::yaml::Located::unplaced(other.clone()), s.book.global_options()),
    }
    .map_err(invalid)?;
    let rules: Vec<_> = checked
        .into_iter()
        .map(|c| {
            let key = format!("test:{}", c.name);
            Arc::new(c.into_rule(key, Origin::Test))
        })
        .collect();
    let actions = eval::matching(&rules, &body.event)
        .iter()
        .flat_map(|r| {
            r.actions.iter().map(|a| PlannedAction {
                rule: r.name.clone(),
                action: a.kind().to_string(),
                args: a.args(&body.event),
            })
        })
        .collect();
    Ok(Json(TestResult { actions }))
}

/// Webhook delivery attempts, newest first: a collection's (owners), or all
/// (administrators).
#[utoipa::path(get, path = "/webhooks/deliveries", tag = "rules", params(DeliveriesQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of delivery attempts", body = DeliveryPage),
        (status = 400, description = "invalid cursor", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an owner of the collection; or no collection and not an administrator", body = ErrorBody),
        (status = 404, description = "no such collection, or not a member", body = ErrorBody),
        (status = 422, description = "unknown outcome or limit out of range", body = ErrorBody),
    ))]
async fn list_deliveries(
    State(s): State<RulesState>,
    principal: Principal,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryPage>> {
    match &q.collection_id {
        Some(c) => authorize(&s, &principal, c).await?,
        None if principal.is_admin => {}
        None => {
            return Err(ApiError::Forbidden(
                "all deliveries are for administrators; name a collection you own with collection_id".into(),
            ))
        }
    }
    let limit = page_limit(q.limit)?;
    let outcome = q
        .outcome
        .as_deref()
        .map(|o| {
            Outcome::parse(o).ok_or_else(|| {
                ApiError::validation(
                    "outcome",
                    "outcome must be delivered, failed, refused, retrying or dead",
                )
            })
        })
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| s.cursors.decode::<DeliveryCursor>(c).map(|c| c.id))
        .transpose()?;
    let mut items = webhook::list_deliveries(&s.db, q.collection_id.as_deref(), outcome, before.as_deref(), limit + 1)
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = s
        .cursors
        .next_page(&mut items, limit, |d| DeliveryCursor { id: d.id.clone() });
    Ok(Json(DeliveryPage { items, next_cursor }))
}
