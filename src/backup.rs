//! `atlas backup` and `atlas restore` for embedded mode.
//!
//! A backup is one gzip-compressed tar file:
//! - `manifest.json`: the format, when and by which version it was made,
//!   and the size and SHA-256 of every other entry;
//! - `atlas.db`: the SQLite database, taken with `VACUUM INTO` from the live
//!   database (a consistent snapshot: one read transaction, while a running
//!   server keeps writing);
//! - `data/<file>`: the secrets Atlas generated into the data directory
//!   (`server.secret`, `audit-signing.key`), without which restored tokens,
//!   cursors and audit checkpoints would not verify.
//!
//! The search index is not in the archive: it is derived from the database,
//! and copying Tantivy files from outside the process that writes them races
//! with its merges deleting segments. `atlas restore` rebuilds it from the
//! restored database instead, so a restored node is searchable at once.
//!
//! PostgreSQL deployments back up with `pg_dump` and the JetStream stream
//! tools; see "Back up and restore" in `docs/runbook.md`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use atlas_db::Database;
use atlas_kernel::Settings;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The archive format this binary writes and reads.
const FORMAT: &str = "atlas-backup/1";
const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "atlas.db";
/// Files Atlas generates into the data directory that a restore needs.
const DATA_FILES: &[&str] = &["server.secret", "audit-signing.key"];

/// What [`backup`] wrote.
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub database_bytes: u64,
    pub data_files: Vec<String>,
}

/// Write a backup of the embedded database and data-directory secrets to `out`.
pub async fn backup(settings: &Settings, out: &Path) -> anyhow::Result<BackupReport> {
    let Some(db_path) = settings.sqlite_path() else {
        bail!(
            "`atlas backup` backs up embedded mode (SQLite); this configuration uses PostgreSQL. \
             Back it up with pg_dump and the JetStream stream backup described under \
             \"Back up and restore\" in docs/runbook.md (bench/pg_backup_restore.sh runs it)"
        );
    };
    if !db_path.is_file() {
        bail!(
            "no database at {} (database.url): nothing to back up",
            db_path.display()
        );
    }
    if out.exists() {
        bail!("{} already exists; choose another --out", out.display());
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Staged beside the output: same filesystem, removed on every path out.
    let staging = tempfile::Builder::new()
        .prefix(".atlas-backup-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a staging directory in {}", parent.display()))?;
    let snapshot = staging.path().join(DATABASE);

    let db = Database::connect(&settings.database()).await?;
    let vacuum = atlas_db::sqlx::query("VACUUM INTO ?")
        .bind(snapshot.display().to_string())
        .execute(db.writer())
        .await;
    db.close().await;
    vacuum.with_context(|| format!("snapshot of {} failed", db_path.display()))?;

    let mut entries = vec![(DATABASE.to_string(), snapshot)];
    for name in DATA_FILES {
        let path = settings.data_dir.join(name);
        if path.is_file() {
            entries.push((format!("data/{name}"), path));
        }
    }
    let mut files = serde_json::Map::new();
    for (name, path) in &entries {
        let (size, sha256) = digest(path)?;
        files.insert(name.clone(), json!({"size": size, "sha256": sha256}));
    }
    let manifest = json!({
        "format": FORMAT,
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "atlas_version": env!("CARGO_PKG_VERSION"),
        "search_index": "rebuilt on restore",
        "files": files,
    });

    let partial = staging.path().join("archive.tar.gz");
    write_archive(&partial, &serde_json::to_vec_pretty(&manifest)?, &entries)?;
    let bytes = std::fs::metadata(&partial)?.len();
    std::fs::rename(&partial, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(BackupReport {
        path: out.to_path_buf(),
        bytes,
        database_bytes: files[DATABASE]["size"].as_u64().unwrap_or_default(),
        data_files: entries
            .iter()
            .skip(1)
            .map(|(name, _)| name.trim_start_matches("data/").to_string())
            .collect(),
    })
}

fn write_archive(path: &Path, manifest: &[u8], entries: &[(String, PathBuf)]) -> anyhow::Result<()> {
    let file = create_private(path)?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()));
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, manifest)?;
    for (name, source) in entries {
        let mut f = File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
        tar.append_file(name, &mut f)?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    let file = gz.finish()?;
    file.sync_all()?;
    Ok(())
}

/// What [`restore`] did.
pub struct RestoreReport {
    pub created_at: String,
    pub database: PathBuf,
    pub data_files: Vec<String>,
}

/// Unpack `archive` into the configured (empty, unless `force`) data
/// directory. The search index is rebuilt by the caller.
pub fn restore(settings: &Settings, archive: &Path, force: bool) -> anyhow::Result<RestoreReport> {
    let Some(db_path) = settings.sqlite_path() else {
        bail!(
            "`atlas restore` restores embedded mode (SQLite); this configuration uses PostgreSQL. \
             Restore it with pg_restore as described under \"Back up and restore\" in docs/runbook.md"
        );
    };
    let data_dir = &settings.data_dir;
    let occupied = [data_dir.as_path(), db_path.as_path()]
        .iter()
        .any(|p| p.is_file() || std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some()));
    if occupied && !force {
        bail!(
            "{} is not empty: restore into a fresh data directory (data_dir), or pass --force to replace its database, secrets and search index",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".atlas-restore-")
        .tempdir_in(data_dir)
        .with_context(|| format!("cannot create a staging directory in {}", data_dir.display()))?;

    // Unpack entry by entry: only the names a backup holds, no paths of the
    // archive's choosing.
    let input = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(input));
    let mut manifest: Option<serde_json::Value> = None;
    let mut unpacked = Vec::new();
    for entry in tar.entries().context("not a backup archive (expected .tar.gz)")? {
        let mut entry = entry.context("the archive is damaged")?;
        let name = entry.path()?.to_string_lossy().to_string();
        if name == MANIFEST {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            manifest = Some(serde_json::from_str(&text).context("the manifest is not JSON")?);
            continue;
        }
        let known = name == DATABASE || DATA_FILES.iter().any(|f| name == format!("data/{f}"));
        if !known {
            bail!("unexpected entry `{name}` in the archive");
        }
        let target = staging.path().join(name.replace('/', "_"));
        let mut out = create_private(&target)?;
        std::io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
        unpacked.push((name, target));
    }
    let manifest = manifest.context("not an Atlas backup: the archive has no manifest.json")?;
    if manifest["format"] != FORMAT {
        bail!(
            "unsupported backup format {} (this atlas reads {FORMAT})",
            manifest["format"]
        );
    }
    let files = manifest["files"].as_object().context("the manifest lists no files")?;
    for (name, expected) in files {
        let (_, path) = unpacked
            .iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("the archive lacks `{name}`, which its manifest lists"))?;
        let (size, sha256) = digest(path)?;
        if Some(size) != expected["size"].as_u64() || Some(sha256.as_str()) != expected["sha256"].as_str() {
            bail!("`{name}` in the archive does not match its manifest checksum: the backup is damaged");
        }
    }

    // Replace: the database (and its WAL and shared-memory files, which
    // belong to the old one), the secrets, and the stale search index.
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut old = db_path.clone().into_os_string();
        old.push(suffix);
        remove_if_present(Path::new(&old))?;
    }
    let index = settings.search.dir_in(data_dir);
    if index.exists() {
        std::fs::remove_dir_all(&index).with_context(|| format!("cannot remove {}", index.display()))?;
    }
    if let Some(parent) = db_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut data_files = Vec::new();
    for (name, path) in &unpacked {
        let target = match name.strip_prefix("data/") {
            Some(file) => {
                data_files.push(file.to_string());
                data_dir.join(file)
            }
            None => db_path.clone(),
        };
        std::fs::rename(path, &target).with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(RestoreReport {
        created_at: manifest["created_at"].as_str().unwrap_or("?").to_string(),
        database: db_path,
        data_files,
    })
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Size and SHA-256 (hex) of a file.
fn digest(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// A new file readable by its owner only: archives and secrets alike.
pub(crate) fn create_private(path: &Path) -> anyhow::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// `atlas backup --out FILE`.
pub async fn run_backup(settings: &Settings, out: &Path) -> anyhow::Result<()> {
    let report = backup(settings, out).await?;
    println!(
        "backup written to {} ({} bytes; database {} bytes{})",
        report.path.display(),
        report.bytes,
        report.database_bytes,
        if report.data_files.is_empty() {
            String::new()
        } else {
            format!(", with {}", report.data_files.join(", "))
        }
    );
    println!("the search index is not in the archive: atlas restore rebuilds it");
    let configured: Vec<String> = [
        ("auth.jwt_secret_file", &settings.auth.jwt_secret_file),
        ("audit.signing_key_file", &settings.audit.signing_key_file),
    ]
    .into_iter()
    .filter_map(|(key, file)| file.as_ref().map(|f| format!("{key} = {}", f.display())))
    .collect();
    if !configured.is_empty() {
        println!(
            "configured secrets are not in the archive either; keep them with your other secrets: {}",
            configured.join(", ")
        );
    }
    Ok(())
}

/// `atlas restore FILE [--force]`: unpack, then rebuild the search index.
pub async fn run_restore(settings: &Settings, archive: &Path, force: bool) -> anyhow::Result<()> {
    let report = restore(settings, archive, force)?;
    println!(
        "restored the database of {} to {}{}",
        report.created_at,
        report.database.display(),
        if report.data_files.is_empty() {
            String::new()
        } else {
            format!(
                ", and {} to {}",
                report.data_files.join(", "),
                settings.data_dir.display()
            )
        }
    );
    #[cfg(feature = "search")]
    {
        let db = Database::connect(&settings.database()).await?;
        let rebuilt = atlas_search::reindex_all(settings, &db).await;
        db.close().await;
        let r = rebuilt
            .context("the database is restored, but rebuilding the search index failed (run `atlas search reindex`)")?;
        println!("search index rebuilt: {} items indexed", r.documents);
    }
    Ok(())
}
