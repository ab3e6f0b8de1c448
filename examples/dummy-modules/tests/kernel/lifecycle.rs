//! Module ordering, lifecycle order and startup errors.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use atlas_kernel::{AppContext, KernelError, Module, ModuleError, ModuleRegistry};
use atlas_testkit::{TestBackend, TestServer};

struct Recorder {
    name: &'static str,
    deps: &'static [&'static str],
    log: Arc<Mutex<Vec<String>>>,
    fail_init: bool,
}

impl Recorder {
    fn module(name: &'static str, deps: &'static [&'static str], log: &Arc<Mutex<Vec<String>>>) -> Arc<dyn Module> {
        Arc::new(Recorder {
            name,
            deps,
            log: log.clone(),
            fail_init: false,
        })
    }
    fn record(&self, phase: &str) {
        self.log.lock().unwrap().push(format!("{phase}:{}", self.name));
    }
}

#[async_trait]
impl Module for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }
    fn depends_on(&self) -> &'static [&'static str] {
        self.deps
    }
    async fn init(&self, _ctx: &AppContext) -> Result<(), ModuleError> {
        self.record("init");
        if self.fail_init {
            return Err("the widget store is unreachable".into());
        }
        Ok(())
    }
    async fn start(&self, _ctx: &AppContext) -> Result<(), ModuleError> {
        self.record("start");
        Ok(())
    }
    async fn stop(&self, _ctx: &AppContext) -> Result<(), ModuleError> {
        self.record("stop");
        Ok(())
    }
}

#[test]
fn order_is_topological_with_ties_by_name() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let registry = ModuleRegistry::from_modules(vec![
        Recorder::module("zeta", &[], &log),
        Recorder::module("items", &["collections"], &log),
        Recorder::module("collections", &["identity"], &log),
        Recorder::module("identity", &[], &log),
        Recorder::module("audit", &["items"], &log),
    ])
    .unwrap();
    assert_eq!(registry.names(), ["identity", "collections", "items", "audit", "zeta"]);
}

#[test]
fn a_missing_dependency_names_both_modules() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = ModuleRegistry::from_modules(vec![Recorder::module("search", &["items"], &log)]).unwrap_err();
    assert!(
        matches!(&err, KernelError::MissingDependency { module, dependency } if module == "search" && dependency == "items")
    );
    assert!(err.to_string().contains("`search` depends on `items`"), "{err}");
}

#[test]
fn a_cycle_names_its_modules() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = ModuleRegistry::from_modules(vec![
        Recorder::module("a", &["c"], &log),
        Recorder::module("b", &["a"], &log),
        Recorder::module("c", &["b"], &log),
        Recorder::module("free", &[], &log),
    ])
    .unwrap_err();
    match err {
        KernelError::DependencyCycle(names) => assert_eq!(names, ["a", "b", "c"]),
        other => panic!("expected a cycle error, got {other}"),
    }
}

#[test]
fn a_module_registered_twice_is_refused() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = ModuleRegistry::from_modules(vec![Recorder::module("a", &[], &log), Recorder::module("a", &[], &log)])
        .unwrap_err();
    assert!(matches!(err, KernelError::DuplicateModule(ref n) if n == "a"));
}

#[tokio::test]
async fn init_start_and_stop_run_in_order_and_stop_reverses() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let registry = ModuleRegistry::from_modules(vec![
        Recorder::module("b", &["a"], &log),
        Recorder::module("a", &[], &log),
        Recorder::module("c", &[], &log),
    ])
    .unwrap();
    let server = TestServer::start(TestBackend::Sqlite, registry, |_| {}).await.unwrap();
    let health = server.client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    server.stop().await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["init:a", "init:b", "init:c", "start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"]
    );
}

#[tokio::test]
async fn a_failing_init_is_a_startup_error_naming_the_module() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let failing: Arc<dyn Module> = Arc::new(Recorder {
        name: "widgets",
        deps: &[],
        log: log.clone(),
        fail_init: true,
    });
    let registry = ModuleRegistry::from_modules(vec![Recorder::module("a", &[], &log), failing]).unwrap();
    let db = atlas_testkit::TestDatabase::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let settings = atlas_testkit::test_settings(&db, dir.path());
    let err = match atlas_kernel::Atlas::build(settings, registry).await {
        Ok(_) => panic!("build should fail"),
        Err(e) => e,
    };
    assert!(matches!(&err, KernelError::Lifecycle { module, phase: "init", .. } if module == "widgets"));
    assert_eq!(
        err.to_string(),
        "module `widgets` failed to init: the widget store is unreachable"
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["init:a", "init:widgets"],
        "nothing starts after a failed init"
    );
}
