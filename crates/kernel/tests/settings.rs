//! Layered configuration: precedence, `_file` secrets, validation errors
//! that name the key, and the production profile's refusals.

use std::path::Path;

use atlas_kernel::{ConfigError, Profile, Role, Settings, SettingsSource};

const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";

fn source(dir: &Path, env: &[(&str, &str)]) -> SettingsSource {
    SettingsSource {
        dir: dir.to_path_buf(),
        config_file: None,
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        overrides: Vec::new(),
    }
}

fn invalid_key(err: ConfigError) -> String {
    err.key()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("error without a key: {err}"))
}

#[test]
fn defaults_are_embedded_mode_on_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::load(&source(dir.path(), &[])).unwrap();
    assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(s.profile, Profile::Local);
    assert_eq!(s.server.role, Role::All);
    assert_eq!(s.database_url(), "sqlite://atlas-data/atlas.db");
    assert_eq!(s.server.body_limit_bytes, 2 * 1024 * 1024);
    assert_eq!(s.auth.access_token_ttl_secs, 900);
}

#[test]
fn every_section_can_be_set_from_the_environment() {
    // One variable per top-level section, each naming a key of it.
    let dir = tempfile::tempdir().unwrap();
    let defaults = serde_json::to_value(Settings::default()).unwrap();
    let sections: Vec<String> = defaults
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.is_object())
        .map(|(k, _)| k.clone())
        .collect();
    assert!(sections.contains(&"rules".to_string()), "{sections:?}");
    for section in sections {
        let bogus = format!("ATLAS_{}__NO_SUCH_KEY", section.to_uppercase());
        let err = Settings::load(&source(dir.path(), &[(bogus.as_str(), "1")]))
            .expect_err("an unknown key inside a known section is an error");
        assert_eq!(invalid_key(err), format!("{section}.no_such_key"), "{bogus}");
    }
    let s = Settings::load(&source(dir.path(), &[("ATLAS_RULES__DIR", "/etc/atlas/rules")])).unwrap();
    assert_eq!(s.rules.dir, Path::new("/etc/atlas/rules"));
}

#[test]
fn later_layers_win() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("atlas.toml"),
        "[server]\nbind = \"127.0.0.1:1001\"\nrequest_timeout_secs = 11\nbody_limit_bytes = 5000\nshutdown_grace_secs = 3\n[database]\nmax_connections = 3\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("atlas.staging.toml"),
        "[server]\nbind = \"127.0.0.1:1002\"\nrequest_timeout_secs = 12\nbody_limit_bytes = 6000\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("atlas.production.toml"),
        "[server]\nbind = \"127.0.0.1:9999\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "ATLAS_PROFILE=staging\nATLAS_SERVER__BIND=127.0.0.1:1003\nATLAS_SERVER__REQUEST_TIMEOUT_SECS=13\n",
    )
    .unwrap();
    let src = source(
        dir.path(),
        &[("ATLAS_SERVER__BIND", "127.0.0.1:1004"), ("HOME", "/nowhere")],
    );

    let s = Settings::load(&src).unwrap();
    assert_eq!(s.profile, Profile::Staging, ".env selects the profile");
    assert_eq!(s.database.max_connections, 3, "atlas.toml");
    assert_eq!(s.server.shutdown_grace_secs, 3, "atlas.toml");
    assert_eq!(s.server.body_limit_bytes, 6000, "atlas.staging.toml over atlas.toml");
    assert_eq!(s.server.request_timeout_secs, 13, ".env over the profile file");
    assert_eq!(s.server.bind.to_string(), "127.0.0.1:1004", "environment over .env");

    let s = Settings::load(&src.clone().with_override("server.bind", "127.0.0.1:1005")).unwrap();
    assert_eq!(s.server.bind.to_string(), "127.0.0.1:1005", "CLI flags over everything");
}

#[test]
fn an_explicit_config_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = source(dir.path(), &[]);
    src.config_file = Some(dir.path().join("missing.toml"));
    assert!(matches!(Settings::load(&src), Err(ConfigError::File { .. })));
    std::fs::write(dir.path().join("custom.toml"), "[server]\nbind = \"127.0.0.1:7000\"\n").unwrap();
    src.config_file = Some(dir.path().join("custom.toml"));
    assert_eq!(Settings::load(&src).unwrap().server.bind.port(), 7000);
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("jwt");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let url_file = dir.path().join("db-url");
    std::fs::write(&url_file, "postgres://atlas:pw@db:5432/atlas").unwrap();
    let s = Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_AUTH__JWT_SECRET_FILE", secret_file.to_str().unwrap()),
            ("ATLAS_DATABASE__URL_FILE", url_file.to_str().unwrap()),
        ],
    ))
    .unwrap();
    assert_eq!(
        s.auth.jwt_secret.as_ref().unwrap().expose(),
        SECRET,
        "trailing newline dropped"
    );
    assert_eq!(s.database_url(), "postgres://atlas:pw@db:5432/atlas");

    let both = Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_AUTH__JWT_SECRET_FILE", secret_file.to_str().unwrap()),
            ("ATLAS_AUTH__JWT_SECRET", SECRET),
        ],
    ))
    .unwrap_err();
    assert_eq!(invalid_key(both), "auth.jwt_secret");

    let missing = Settings::load(&source(dir.path(), &[("ATLAS_AUTH__JWT_SECRET_FILE", "/no/such/file")])).unwrap_err();
    assert_eq!(invalid_key(missing), "auth.jwt_secret_file");
}

#[test]
fn invalid_values_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("ATLAS_SERVER__BIND", "not-an-address", "server.bind"),
        ("ATLAS_SERVER__ROLE", "janitor", "server.role"),
        ("ATLAS_SERVER__BODY_LIMIT_BYTES", "10", "server.body_limit_bytes"),
        ("ATLAS_DATABASE__URL", "mysql://x/y", "database.url"),
        ("ATLAS_DATABASE__MAX_CONNECTIONS", "0", "database.max_connections"),
        ("ATLAS_AUTH__JWT_SECRET", "short", "auth.jwt_secret"),
        ("ATLAS_PROFILE", "prod", "profile"),
        ("ATLAS_TELEMETRY__LOG_FORMAT", "xml", "telemetry.log_format"),
        ("ATLAS_SEARCH__WRITER_MEMORY_MB", "10", "search.writer_memory_mb"),
        ("ATLAS_SEARCH__QUERY_THREADS", "65", "search.query_threads"),
    ];
    for (var, value, key) in cases {
        let err = Settings::load(&source(dir.path(), &[(var, value)])).unwrap_err();
        assert_eq!(invalid_key(err), *key, "{var}={value}");
    }
    let err = Settings::load(&source(dir.path(), &[("ATLAS_SERVER__BNDD", "x")])).unwrap_err();
    assert_eq!(
        invalid_key(err),
        "server.bndd",
        "unknown keys in a known section are refused"
    );
    // Variables of other tools sharing the prefix are not configuration.
    assert!(Settings::load(&source(
        dir.path(),
        &[("ATLAS_REQUIRE_SERVICES", "1"), ("ATLAS_TEST_POSTGRES_URL", "x")]
    ))
    .is_ok());
    std::fs::write(dir.path().join("atlas.toml"), "[server]\nbnd = \"127.0.0.1:1\"\n").unwrap();
    let err = Settings::load(&source(dir.path(), &[])).unwrap_err();
    assert_eq!(invalid_key(err), "server.bnd", "unknown keys are refused by name");
}

#[test]
fn production_refuses_a_missing_jwt_secret() {
    let dir = tempfile::tempdir().unwrap();
    let err = Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_PROFILE", "production"),
            ("ATLAS_DATABASE__URL", "postgres://db/atlas"),
        ],
    ))
    .unwrap_err();
    assert_eq!(invalid_key(err), "auth.jwt_secret");
    let ok = Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_PROFILE", "production"),
            ("ATLAS_DATABASE__URL", "postgres://db/atlas"),
            ("ATLAS_AUTH__JWT_SECRET", SECRET),
            (
                "ATLAS_AUDIT__SIGNING_KEY",
                "nHZ1DrbqHOe6KmWdO0YgUaNq5sMhWBkuvmRLG6Fl1uU=",
            ),
        ],
    ));
    assert!(ok.is_ok());
}

#[test]
fn production_on_postgres_refuses_a_missing_audit_key() {
    let dir = tempfile::tempdir().unwrap();
    let production = [
        ("ATLAS_PROFILE", "production"),
        ("ATLAS_DATABASE__URL", "postgres://db/atlas"),
        ("ATLAS_AUTH__JWT_SECRET", SECRET),
    ];
    let err = Settings::load(&source(dir.path(), &production)).unwrap_err();
    assert_eq!(invalid_key(err), "audit.signing_key", "every worker must share one key");
    let key_file = dir.path().join("audit.key");
    std::fs::write(&key_file, "nHZ1DrbqHOe6KmWdO0YgUaNq5sMhWBkuvmRLG6Fl1uU=\n").unwrap();
    let mut env = production.to_vec();
    let path = key_file.display().to_string();
    env.push(("ATLAS_AUDIT__SIGNING_KEY_FILE", &path));
    let settings = Settings::load(&source(dir.path(), &env)).unwrap();
    assert!(settings.audit.signing_key.is_some(), "read from the file");
    assert!(!settings.to_redacted_toml().contains("nHZ1"), "and never printed");
    // Embedded mode may generate its key (with its data outside the
    // temporary directory, which production refuses wherever the checkout is).
    let embedded = Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_PROFILE", "production"),
            ("ATLAS_AUTH__JWT_SECRET", SECRET),
            ("ATLAS_DATA_DIR", "/var/lib/atlas"),
        ],
    ));
    assert!(embedded.is_ok(), "{:?}", embedded.err());
}

#[test]
fn production_refuses_sqlite_in_a_temporary_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", std::env::temp_dir().join("atlas/atlas.db").display());
    let err = Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_PROFILE", "production"),
            ("ATLAS_AUTH__JWT_SECRET", SECRET),
            ("ATLAS_DATABASE__URL", &url),
        ],
    ))
    .unwrap_err();
    assert_eq!(invalid_key(err), "database.url");
    // The same in local is allowed, and a durable path is fine in production.
    assert!(Settings::load(&source(dir.path(), &[("ATLAS_DATABASE__URL", &url)])).is_ok());
    assert!(Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_PROFILE", "production"),
            ("ATLAS_AUTH__JWT_SECRET", SECRET),
            ("ATLAS_DATABASE__URL", "sqlite:///srv/atlas/atlas.db")
        ],
    ))
    .is_ok());
}

#[test]
fn config_show_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_AUTH__JWT_SECRET", SECRET),
            ("ATLAS_DATABASE__URL", "postgres://atlas:hunter2hunter2@db/atlas"),
        ],
    ))
    .unwrap();
    let shown = s.to_redacted_toml();
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("jwt_secret = \"[redacted]\""), "{shown}");
    assert!(shown.contains("url = \"postgres://atlas:***@db/atlas\""), "{shown}");
    assert!(shown.contains("bind = \"127.0.0.1:8080\""), "{shown}");
    assert!(!format!("{s:?}").contains(SECRET), "Debug redacts too");
}

#[test]
fn jobs_section_is_validated_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_JOBS__CONCURRENCY", "3"),
            ("ATLAS_JOBS__ENRICH_ALLOW_NETWORKS", "[\"127.0.0.1/32\", \"::1\"]"),
        ],
    ))
    .unwrap();
    assert_eq!(s.jobs.concurrency, 3);
    assert_eq!(s.jobs.enrich_allow_networks, ["127.0.0.1/32", "::1"]);
    for (key, value, named) in [
        ("ATLAS_JOBS__CONCURRENCY", "0", "jobs.concurrency"),
        ("ATLAS_JOBS__HEARTBEAT_SECS", "30", "jobs.heartbeat_secs"),
        (
            "ATLAS_JOBS__ENRICH_ALLOW_NETWORKS",
            "[\"10.0.0.0/33\"]",
            "jobs.enrich_allow_networks",
        ),
        ("ATLAS_JOBS__NO_SUCH_KEY", "1", "no_such_key"),
    ] {
        let err = Settings::load(&source(dir.path(), &[(key, value)])).unwrap_err();
        assert!(invalid_key(err).contains(named), "{key}={value}");
    }
}

/// A secret and its `_file` from different layers: the later layer wins
/// (an environment variable over `atlas.toml`, and the other way round);
/// both in one layer stay an error.
#[test]
fn a_later_layer_overrides_a_secret_file_of_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("db-url");
    std::fs::write(&url_file, "postgres://atlas@from-file:5432/atlas\n").unwrap();
    std::fs::write(
        dir.path().join("atlas.toml"),
        format!("[database]\nurl_file = {:?}\n", url_file.to_str().unwrap()),
    )
    .unwrap();
    let from_file = Settings::load(&source(dir.path(), &[])).unwrap();
    assert_eq!(
        from_file.database.url.unwrap().expose(),
        "postgres://atlas@from-file:5432/atlas"
    );
    let from_env = Settings::load(&source(
        dir.path(),
        &[("ATLAS_DATABASE__URL", "postgres://atlas@from-env:5432/atlas")],
    ))
    .unwrap();
    assert_eq!(
        from_env.database.url.unwrap().expose(),
        "postgres://atlas@from-env:5432/atlas"
    );

    std::fs::write(
        dir.path().join("atlas.toml"),
        "[database]\nurl = \"postgres://atlas@from-toml:5432/atlas\"\n",
    )
    .unwrap();
    let env_file = Settings::load(&source(
        dir.path(),
        &[("ATLAS_DATABASE__URL_FILE", url_file.to_str().unwrap())],
    ))
    .unwrap();
    assert_eq!(
        env_file.database.url.unwrap().expose(),
        "postgres://atlas@from-file:5432/atlas"
    );

    let both = Settings::load(&source(
        dir.path(),
        &[
            ("ATLAS_DATABASE__URL", "postgres://atlas@from-env:5432/atlas"),
            ("ATLAS_DATABASE__URL_FILE", url_file.to_str().unwrap()),
        ],
    ))
    .unwrap_err();
    assert_eq!(invalid_key(both), "database.url");
}
