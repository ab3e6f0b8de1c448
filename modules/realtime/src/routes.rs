//! `GET /api/v1/events/stream` (SSE) and `GET /api/v1/events/ws` (WebSocket).

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use atlas_auth::{Authenticator, CollectionGuard, Principal};
use atlas_events::Envelope;
use atlas_http::{ApiError, ApiResult, ErrorBody, Query};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::hub::Hub;

#[derive(Clone)]
pub(crate) struct RealtimeState {
    pub hub: Arc<Hub>,
    pub auth: Arc<Authenticator>,
    pub guard: Arc<CollectionGuard>,
    pub shutdown: CancellationToken,
}

pub(crate) fn router(state: RealtimeState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(stream))
        .routes(routes!(websocket))
        .with_state(state)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// For clients that cannot set headers (EventSource): the access token.
    access_token: Option<String>,
    /// Resume after this event sequence (like `Last-Event-ID`).
    since: Option<i64>,
}

/// Who is listening and which collections they may see. Membership events
/// about the listener change the set as they pass.
struct Visibility {
    user_id: String,
    collections: HashSet<String>,
}

impl Visibility {
    fn admit(&mut self, e: &Envelope) -> bool {
        let collection = e.entity.collection_id.clone();
        let about_me = e.data.get("user_id").and_then(|v| v.as_str()) == Some(self.user_id.as_str());
        match (e.event_type.as_str(), collection) {
            ("MembershipAdded", Some(c)) if about_me => {
                self.collections.insert(c);
                true
            }
            // The listener learns of its own removal, then sees nothing more there.
            ("MembershipRemoved", Some(c)) if about_me => self.collections.remove(&c),
            ("CollectionCreated", Some(c))
                if e.data.get("owner_user_id").and_then(|v| v.as_str()) == Some(self.user_id.as_str()) =>
            {
                self.collections.insert(c);
                true
            }
            ("CollectionDeleted", Some(c)) => self.collections.remove(&c),
            (_, Some(c)) => self.collections.contains(&c),
            (_, None) => false,
        }
    }
}

async fn authenticate(s: &RealtimeState, headers: &HeaderMap, q: &StreamQuery) -> ApiResult<Principal> {
    let token = atlas_auth::principal::bearer_token(headers)
        .map(str::to_string)
        .or_else(|| q.access_token.clone())
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token or access_token".into()))?;
    s.auth.authenticate(&token).await
}

fn resume_point(headers: &HeaderMap, q: &StreamQuery) -> ApiResult<Option<i64>> {
    match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::BadRequest("Last-Event-ID must be an event sequence".into())),
        None => Ok(q.since),
    }
}

struct Feed {
    hub: Arc<Hub>,
    rx: broadcast::Receiver<Arc<Envelope>>,
    backlog: VecDeque<Envelope>,
    caught_up: bool,
    last: i64,
    visibility: Visibility,
    shutdown: CancellationToken,
}

const BACKLOG_PAGE: i64 = 500;

/// Visible envelopes: first the backlog after the resume point, then live
/// ones. Ends when the listener falls too far behind, or at shutdown.
async fn open_feed(
    s: &RealtimeState,
    principal: &Principal,
    since: Option<i64>,
) -> ApiResult<impl Stream<Item = Arc<Envelope>> + use<>> {
    let rx = s.hub.subscribe();
    let collections = s.guard.visible_collections(principal).await?.into_iter().collect();
    let feed = Feed {
        hub: s.hub.clone(),
        rx,
        backlog: VecDeque::new(),
        caught_up: since.is_none(),
        last: since.unwrap_or(0),
        visibility: Visibility {
            user_id: principal.user_id.clone(),
            collections,
        },
        shutdown: s.shutdown.clone(),
    };
    metrics::gauge!("atlas_realtime_subscribers").increment(1.0);
    Ok(futures::stream::unfold(feed, next_event)
        .chain(futures::stream::once(async {
            metrics::gauge!("atlas_realtime_subscribers").decrement(1.0);
            None
        }))
        .filter_map(|e| async move { e }))
}

async fn next_event(mut f: Feed) -> Option<(Option<Arc<Envelope>>, Feed)> {
    loop {
        if let Some(e) = f.backlog.pop_front() {
            f.last = e.sequence.unwrap_or(f.last);
            if f.visibility.admit(&e) {
                return Some((Some(Arc::new(e)), f));
            }
            continue;
        }
        if !f.caught_up {
            match f.hub.since(f.last, BACKLOG_PAGE).await {
                Ok(page) => {
                    f.caught_up = (page.len() as i64) < BACKLOG_PAGE;
                    f.backlog.extend(page);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "realtime: reading the backlog failed; closing the stream");
                    return None;
                }
            }
        }
        let received = tokio::select! {
            _ = f.shutdown.cancelled() => return None,
            r = f.rx.recv() => r,
        };
        match received {
            Ok(e) => {
                let seq = e.sequence.unwrap_or(0);
                if seq <= f.last {
                    continue;
                }
                f.last = seq;
                if f.visibility.admit(&e) {
                    return Some((Some(e), f));
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::info!(user_id = %f.visibility.user_id, missed, "realtime: client too slow; disconnecting");
                metrics::counter!("atlas_realtime_dropped_total").increment(1);
                return None;
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Server-Sent Events of the caller's collections. Each message's `id` is
/// the event's sequence, `event` its type and `data` the envelope.
#[utoipa::path(get, path = "/events/stream", tag = "realtime", params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this sequence")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "an endless `text/event-stream`", content_type = "text/event-stream", body = String),
        (status = 400, description = "malformed Last-Event-ID", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
    ))]
async fn stream(
    State(s): State<RealtimeState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Response> {
    let principal = authenticate(&s, &headers, &q).await?;
    let since = resume_point(&headers, &q)?;
    let feed = open_feed(&s, &principal, since).await?;
    let events = feed.map(|e| {
        let event = Event::default()
            .id(e.sequence.unwrap_or(0).to_string())
            .event(e.event_type.clone())
            .json_data(&*e)
            .unwrap_or_else(|_| Event::default().comment("unserializable event"));
        Ok::<_, Infallible>(event)
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// The same feed over a WebSocket: one JSON envelope per text message.
#[utoipa::path(get, path = "/events/ws", tag = "realtime", params(StreamQuery), security(("bearer" = [])),
    responses(
        (status = 101, description = "switching to WebSocket"),
        (status = 401, description = "not signed in", body = ErrorBody),
    ))]
async fn websocket(
    State(s): State<RealtimeState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let principal = authenticate(&s, &headers, &q).await?;
    let since = resume_point(&headers, &q)?;
    let feed = open_feed(&s, &principal, since).await?;
    Ok(upgrade.on_upgrade(move |socket| forward(socket, feed)))
}

async fn forward(mut socket: WebSocket, feed: impl Stream<Item = Arc<Envelope>>) {
    let mut feed = std::pin::pin!(feed);
    loop {
        tokio::select! {
            next = feed.next() => match next {
                Some(e) => {
                    let Ok(text) = serde_json::to_string(&*e) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
