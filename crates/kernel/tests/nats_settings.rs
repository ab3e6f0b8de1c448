//! `[events.nats]` security settings: secrets from files, one way to
//! authenticate, and errors that name the key.

use std::path::Path;

use atlas_kernel::{Settings, SettingsSource};

fn load(dir: &Path, env: &[(&str, &str)]) -> Result<Settings, atlas_kernel::ConfigError> {
    Settings::load(&SettingsSource {
        dir: dir.to_path_buf(),
        config_file: None,
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        overrides: Vec::new(),
    })
}

const SEED: &str = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";

#[test]
fn nats_secrets_come_from_files_and_stay_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("nkey.seed");
    std::fs::write(&seed, format!("{SEED}\n")).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let s = load(
        dir.path(),
        &[
            ("ATLAS_EVENTS__NATS__NKEY_SEED_FILE", seed.to_str().unwrap()),
            ("ATLAS_EVENTS__NATS__TLS_CA_FILE", ca.to_str().unwrap()),
        ],
    )
    .unwrap();
    let n = &s.events.nats;
    assert_eq!(n.nkey_seed.as_ref().unwrap().expose(), SEED);
    assert!(n.uses_tls());
    assert_eq!(n.auth_setting(), Some("events.nats.nkey_seed_file"));
    assert!(!s.to_redacted_toml().contains(SEED));

    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let s = load(
        dir.path(),
        &[
            ("ATLAS_EVENTS__NATS__USER", "atlas"),
            ("ATLAS_EVENTS__NATS__PASSWORD_FILE", password.to_str().unwrap()),
        ],
    )
    .unwrap();
    assert_eq!(s.events.nats.password.as_ref().unwrap().expose(), "s3cret");
    assert!(!s.events.nats.uses_tls());
}

#[test]
fn nats_security_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_of = |env: &[(&str, &str)]| load(dir.path(), env).unwrap_err().key().unwrap().to_string();
    assert_eq!(
        key_of(&[("ATLAS_EVENTS__NATS__NKEY_SEED", "not-a-seed")]),
        "events.nats.nkey_seed"
    );
    assert_eq!(
        key_of(&[
            ("ATLAS_EVENTS__NATS__NKEY_SEED", SEED),
            ("ATLAS_EVENTS__NATS__USER", "a")
        ]),
        "events.nats.nkey_seed"
    );
    assert_eq!(key_of(&[("ATLAS_EVENTS__NATS__USER", "a")]), "events.nats.password");
    assert_eq!(
        key_of(&[("ATLAS_EVENTS__NATS__TLS_CA_FILE", "/no/such/ca.pem")]),
        "events.nats.tls_ca_file"
    );
    assert_eq!(
        key_of(&[("ATLAS_EVENTS__NATS__TLS_CERT_FILE", "/etc/hostname")]),
        "events.nats.tls_cert_file"
    );
    assert_eq!(
        key_of(&[("ATLAS_EVENTS__NATS__CREDS_FILE", "/no/such/atlas.creds")]),
        "events.nats.creds_file"
    );
}
