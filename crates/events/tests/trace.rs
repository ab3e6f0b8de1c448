//! Trace continuity: with traces on, a consumer's span is a child of the
//! span that wrote the event, in the trace the request came with.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atlas_events::{EntityRef, EventContext, EventsModule};
use atlas_kernel::{AppContext, Consumer, Module, ModuleError, ModuleRegistry};
use atlas_testkit::{TestBackend, TestServer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

#[async_trait]
impl Consumer for Seen {
    fn name(&self) -> &str {
        "traced"
    }
    fn event_types(&self) -> &[&'static str] {
        &[]
    }
    async fn handle(&self, envelope: &serde_json::Value) -> Result<(), ModuleError> {
        tracing::info!("handled");
        self.0
            .lock()
            .unwrap()
            .push(envelope["event_id"].as_str().unwrap_or_default().into());
        Ok(())
    }
}

struct Fixture(Arc<Seen>);

#[async_trait]
impl Module for Fixture {
    fn name(&self) -> &'static str {
        "fixture"
    }
    fn depends_on(&self) -> &'static [&'static str] {
        &["events"]
    }
    fn consumers(&self, _ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
        vec![self.0.clone()]
    }
}

// One thread, so the test's subscriber sees the runtime's spans too.
#[tokio::test(flavor = "current_thread")]
async fn a_consumer_span_is_a_child_of_the_span_that_wrote_the_event() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let seen = Arc::new(Seen::default());
    let registry =
        ModuleRegistry::from_modules(vec![Arc::new(EventsModule::default()), Arc::new(Fixture(seen.clone()))]).unwrap();
    let server = TestServer::start(TestBackend::Sqlite, registry, |s| s.events.poll_interval_ms = 10)
        .await
        .unwrap();
    let db = server.database.connect().await;

    // A request that arrived with a traceparent writes an event.
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("traceparent", format!("00-{TRACE}-{CALLER}-01").parse().unwrap());
    let request = atlas_http::RequestContext::from_headers(&headers);
    let span = tracing::info_span!("http.request");
    atlas_telemetry::trace::continue_trace(&span, &request.trace_id, request.parent_span_id.as_deref());
    let request_span_id = atlas_telemetry::trace::span_id(&span).expect("traces are on");
    let envelope = {
        let _entered = span.enter();
        EventContext::from_request(None, &request).envelope(
            "ItemCreated",
            EntityRef {
                entity_type: "item".into(),
                id: "i1".into(),
                collection_id: None,
            },
            serde_json::json!({}),
        )
    };
    assert_eq!(envelope.span_id.as_deref(), Some(request_span_id.as_str()));
    let mut tx = db.begin().await.unwrap();
    atlas_events::append(&mut tx, &envelope).await.unwrap();
    tx.commit().await.unwrap();
    drop(span);

    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.0.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the event was not handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.close().await;
    server.stop().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no {name} span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let http = find("http.request");
    assert_eq!(http.span_context.trace_id().to_string(), TRACE);
    assert_eq!(
        http.parent_span_id.to_string(),
        CALLER,
        "the request continues the caller's trace"
    );
    let consume = find("process ItemCreated");
    assert_eq!(consume.span_context.trace_id().to_string(), TRACE, "same trace");
    assert_eq!(
        consume.parent_span_id.to_string(),
        request_span_id,
        "the consumer's span is a child of the request's"
    );
}
