use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use atlas_db::{Database, Migrator};
use atlas_kernel::{Atlas, ModuleRegistry, Role, Settings, SettingsSource};
use clap::{Parser, Subcommand};

/// Atlas: collections of items with role-based sharing, events, audit,
/// search, jobs and rules, in one binary.
#[derive(Parser, Debug)]
#[command(name = "atlas", version, about)]
struct Cli {
    /// Configuration file (default: ./atlas.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Profile: local, staging or production (also ATLAS_PROFILE).
    #[arg(long, global = true)]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve {
        /// What this process runs.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        bind: Option<String>,
    },
    /// Database migrations.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Dead letters: events a consumer gave up on.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The event log.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The audit trail: verify it, export it, check an export offline.
    #[cfg(feature = "audit")]
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Background jobs: list, inspect, retry dead ones, cancel.
    #[cfg(feature = "jobs")]
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Rules: check rule files.
    #[cfg(feature = "rules")]
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// The search index of this node.
    #[cfg(feature = "search")]
    Search {
        #[command(subcommand)]
        command: SearchCommand,
    },
    /// Write atlas.toml and generated secrets for a new deployment
    /// (asks for each answer unless --non-interactive).
    Init(crate::init::InitArgs),
    /// Back up an embedded deployment (database snapshot and generated
    /// secrets) to one .tar.gz file while it runs.
    Backup {
        /// The archive to write; must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore a backup into an empty data directory and rebuild the search
    /// index (stop any server using that directory first).
    Restore {
        file: PathBuf,
        /// Replace the database, secrets and index of a non-empty data directory.
        #[arg(long)]
        force: bool,
    },
    /// Manage users.
    #[cfg(feature = "identity")]
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    All,
    Api,
    Worker,
}

#[derive(Subcommand, Debug)]
enum MigrateCommand {
    /// List pending migrations.
    Plan,
    /// Apply pending migrations.
    Up,
    /// Create a new migration for a module, in both SQL dialects.
    Generate { module: String, name: String },
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Deliver dead letters again (embedded: the running server's consumers
    /// pick them up; nats: they go back to their consumer's stream at once).
    Replay {
        /// The dead letter's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter not replayed yet.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters.
    Purge {
        #[arg(long)]
        consumer: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum EventsCommand {
    /// Print envelopes (one JSON line each) as they commit, until interrupted.
    Tail {
        /// Only events of this type, e.g. ItemCreated.
        #[arg(long = "type")]
        event_type: Option<String>,
    },
}

#[cfg(feature = "rules")]
#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Check rule files as the server loads them: YAML, fields, event
    /// types, CEL conditions, templates, job and workflow types. Prints each
    /// problem as `FILE:LINE:COLUMN: message`; exit status 1 when there is one.
    Check {
        /// Rule files (YAML: one rule or a list).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Check as a collection's rules (item jobs only; webhook secrets
        /// limited to `rules.collection_secret_envs`).
        #[arg(long)]
        collection: bool,
    },
}

#[cfg(feature = "search")]
#[derive(Subcommand, Debug)]
enum SearchCommand {
    /// Rebuild this node's index from the database without downtime: a new
    /// index is built beside the live one, then replaces it (a running
    /// server switches to it within a second).
    Reindex {
        /// Only re-index this collection's items, in place, in one commit.
        #[arg(long, value_name = "ID")]
        collection: Option<String>,
    },
}

#[cfg(feature = "audit")]
#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Walk the chain and its checkpoints and name the first bad row (exit status 1 when one is found).
    Verify {
        /// Also trust checkpoints signed by this public key (base64, or a file holding it or its PEM).
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an NDJSON bundle of audit rows with the signed checkpoints that cover them.
    Export {
        /// Rows whose occurred_at is at or after this instant (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Rows whose occurred_at is before this instant (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Only this collection's rows carry their data; others in between are elided.
        #[arg(long)]
        collection: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check an exported bundle with the node's public key; needs no database.
    VerifyBundle {
        file: PathBuf,
        /// The node's public key (base64, or a file holding it or its PEM); see `atlas audit public-key`.
        #[arg(long, value_name = "KEY")]
        public_key: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the public key checkpoints are signed with.
    PublicKey,
}

#[cfg(feature = "jobs")]
#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// queued, running, succeeded, failed, dead or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// A job type, e.g. ENRICH_URL.
        #[arg(long = "type")]
        job_type: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Print one job as JSON.
    Show { id: String },
    /// Run a dead job again from its first attempt.
    Retry { id: String },
    /// Cancel a queued job, or ask a running one to stop.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    Show,
}

#[cfg(feature = "identity")]
#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user; the password is read from stdin or prompted for.
    Create {
        email: String,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Set a new password (read from stdin or prompted for) and end every
    /// sign-in of the user: refresh tokens are revoked, so each session ends
    /// when its access token expires (`auth.access_token_ttl_secs`).
    ResetPassword { email: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text
/// the message already holds (many errors quote their source in their own
/// message, and it would otherwise print twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn load_settings(cli: &Cli, overrides: Vec<(&str, String)>) -> anyhow::Result<Settings> {
    let mut source = SettingsSource::from_process();
    source.config_file = cli.config.clone();
    if let Some(p) = &cli.profile {
        source = source.with_override("profile", p.clone());
    }
    for (k, v) in overrides {
        source = source.with_override(k, v);
    }
    Ok(Settings::load(&source)?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve { role, bind } => {
            let mut overrides = Vec::new();
            if let Some(r) = role {
                let r = match r {
                    RoleArg::All => "all",
                    RoleArg::Api => "api",
                    RoleArg::Worker => "worker",
                };
                overrides.push(("server.role", r.to_string()));
            }
            if let Some(b) = bind {
                overrides.push(("server.bind", b.clone()));
            }
            let settings = load_settings(&cli, overrides)?;
            atlas_telemetry::init_logging(&settings.telemetry)?;
            let served = serve(settings).await;
            // Export the spans still buffered (the exporter blocks on I/O).
            let _ = tokio::task::spawn_blocking(atlas_telemetry::shutdown_tracing).await;
            served
        }
        Command::Migrate { command } => {
            if let MigrateCommand::Generate { module, name } = command {
                return generate_migration(Path::new("."), module, name);
            }
            let settings = load_settings(&cli, Vec::new())?;
            init_cli_logging();
            let registry = ModuleRegistry::discover()?;
            let migrations = registry.migrations()?;
            let db = Database::connect(&settings.database()).await?;
            let migrator = Migrator::new(&db);
            match command {
                MigrateCommand::Plan => {
                    let pending = migrator.plan(&migrations).await?;
                    if pending.is_empty() {
                        println!("up to date ({} migrations applied)", migrations.len());
                    }
                    for m in pending {
                        println!("pending  {:<12} {} {}", m.module, m.version, m.name);
                    }
                }
                MigrateCommand::Up => {
                    let applied = migrator.up(&migrations).await?;
                    if applied.is_empty() {
                        println!("up to date ({} migrations applied)", migrations.len());
                    }
                    for m in applied {
                        println!("applied  {:<12} {} {}", m.module, m.version, m.name);
                    }
                }
                MigrateCommand::Generate { .. } => {}
            }
            db.close().await;
            Ok(())
        }
        Command::Dlq { command } => {
            let settings = load_settings(&cli, Vec::new())?;
            init_cli_logging();
            let db = Database::connect(&settings.database()).await?;
            let store = atlas_events::dlq::DeadLetterStore::open(&db, &settings.events).await?;
            match command {
                DlqCommand::List { consumer } => {
                    let letters = store.list(consumer.as_deref()).await?;
                    if letters.is_empty() {
                        println!("no dead letters");
                    }
                    for d in letters {
                        let state = match (&d.replayed_at, &d.replay_requested_at) {
                            (Some(_), _) => "replayed",
                            (None, Some(_)) => "replay-requested",
                            _ => "dead",
                        };
                        println!(
                            "{}  {:<16} {:<16} {:<22} seq={} attempts={} {}  error: {}",
                            d.id, state, d.consumer, d.event_type, d.sequence, d.attempts, d.created_at, d.last_error
                        );
                    }
                }
                DlqCommand::Replay { id, all } => {
                    let n = store.replay(if *all { None } else { id.as_deref() }).await?;
                    if n == 0 && !*all {
                        bail!(
                            "no dead letter {} waiting for replay",
                            id.as_deref().unwrap_or_default()
                        );
                    }
                    match store {
                        atlas_events::dlq::DeadLetterStore::Table(_) => {
                            println!("{n} dead letter(s) queued for replay")
                        }
                        atlas_events::dlq::DeadLetterStore::Stream(_) => {
                            println!("{n} dead letter(s) sent back to their consumer")
                        }
                    }
                }
                DlqCommand::Purge { consumer } => {
                    let n = store.purge(consumer.as_deref()).await?;
                    println!("{n} dead letter(s) deleted");
                }
            }
            db.close().await;
            Ok(())
        }
        Command::Events {
            command: EventsCommand::Tail { event_type },
        } => {
            let settings = load_settings(&cli, Vec::new())?;
            init_cli_logging();
            let db = Database::connect(&settings.database()).await?;
            tail_events(&db, event_type.as_deref()).await?;
            db.close().await;
            Ok(())
        }
        #[cfg(feature = "audit")]
        Command::Audit { command } => audit_command(&cli, command).await,
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            let settings = load_settings(&cli, Vec::new())?;
            print!("{}", settings.to_redacted_toml());
            Ok(())
        }
        Command::Openapi => {
            let dir = tempdir_for("openapi")?;
            let mut settings = load_settings(&cli, Vec::new())?;
            settings.data_dir = dir.clone();
            settings.database.url = Some(atlas_kernel::Secret::new(format!(
                "sqlite://{}",
                dir.join("openapi.db").display()
            )));
            settings.server.role = Role::All;
            let atlas = Atlas::build(settings, ModuleRegistry::discover()?).await?;
            let (_, doc) = atlas.router();
            let text = doc.to_pretty_json().context("serializing the OpenAPI document")?;
            atlas.context().db().close().await;
            let _ = std::fs::remove_dir_all(&dir);
            println!("{text}");
            Ok(())
        }
        #[cfg(feature = "jobs")]
        Command::Jobs { command } => {
            let settings = load_settings(&cli, Vec::new())?;
            init_cli_logging();
            let db = Database::connect(&settings.database()).await?;
            let queue = atlas_jobs::JobQueue::new(
                db.clone(),
                settings.jobs.clone(),
                std::sync::Arc::new(atlas_jobs::WorkflowTypes::builtin()),
            );
            let result = jobs_command(&queue, command).await;
            db.close().await;
            result
        }
        #[cfg(feature = "rules")]
        Command::Rules {
            command: RulesCommand::Check { files, collection },
        } => {
            let secret_envs = if *collection {
                load_settings(&cli, Vec::new())?.rules.collection_secret_envs
            } else {
                Vec::new()
            };
            let failed = atlas_rules::check_files(files, *collection, &secret_envs);
            for (file, issues) in &failed {
                for i in issues {
                    println!("{file}:{}:{}: {}", i.line, i.column, i.message);
                }
            }
            let problems: usize = failed.iter().map(|(_, i)| i.len()).sum();
            if problems > 0 {
                bail!("{problems} problem(s) in {} of {} file(s)", failed.len(), files.len());
            }
            println!("{} file(s): valid", files.len());
            Ok(())
        }
        #[cfg(feature = "search")]
        Command::Search {
            command: SearchCommand::Reindex { collection },
        } => {
            let settings = load_settings(&cli, Vec::new())?;
            init_cli_logging();
            let db = Database::connect(&settings.database()).await?;
            let result = match collection {
                None => atlas_search::reindex_all(&settings, &db).await.map(|r| {
                    println!(
                        "indexed {} items in {:.1} s ({:.0} items/s); index {} is live, following the log from position {}",
                        r.documents,
                        r.seconds,
                        r.documents as f64 / r.seconds.max(1e-9),
                        r.generation,
                        r.position
                    );
                }),
                Some(c) => atlas_search::reindex_collection(&settings, &db, c).await.map(|r| match r {
                    atlas_search::CollectionReindex::Done(n) => {
                        println!("re-indexed {n} items of collection {c}")
                    }
                    atlas_search::CollectionReindex::Requested => println!(
                        "a running server holds the index: it re-indexes collection {c} within a second"
                    ),
                }),
            };
            db.close().await;
            result.map_err(Into::into)
        }
        Command::Init(args) => crate::init::run(args, cli.profile.as_deref()),
        Command::Backup { out } => {
            let settings = load_settings(&cli, Vec::new())?;
            init_cli_logging();
            crate::backup::run_backup(&settings, out).await
        }
        Command::Restore { file, force } => {
            let settings = load_settings(&cli, Vec::new())?;
            init_cli_logging();
            crate::backup::run_restore(&settings, file, *force).await
        }
        #[cfg(feature = "identity")]
        Command::User { command } => {
            let settings = load_settings(&cli, Vec::new())?;
            init_cli_logging();
            let atlas = Atlas::build(settings, ModuleRegistry::discover()?).await?;
            let users = atlas_identity::UserAdmin::new(atlas.context())?;
            match command {
                UserCommand::Create {
                    email,
                    admin,
                    display_name,
                } => {
                    let password = read_password("password for the new user")?;
                    let user = users
                        .create_user(email, &password, display_name.as_deref(), *admin)
                        .await?;
                    println!(
                        "created user {} <{}>{}",
                        user.id,
                        user.email,
                        if user.is_admin { " (admin)" } else { "" }
                    );
                }
                UserCommand::ResetPassword { email } => {
                    let password = read_password("new password")?;
                    users.reset_password(email, &password).await?;
                    println!(
                        "password of <{}> reset; its refresh tokens are revoked (access tokens already issued stay valid until they expire)",
                        email.trim().to_lowercase()
                    );
                }
            }
            atlas.context().db().close().await;
            Ok(())
        }
    }
}

#[cfg(feature = "audit")]
async fn audit_command(cli: &Cli, command: &AuditCommand) -> anyhow::Result<()> {
    use atlas_audit::{AuditStore, NodeKey, PublicKey, TrustedKeys};
    if let AuditCommand::VerifyBundle { file, public_key, json } = command {
        // Offline: no configuration, no database.
        let key = PublicKey::resolve(public_key)?;
        let input = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let report = atlas_audit::verify_bundle(std::io::BufReader::new(input), &key)?;
        if *json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("{}", atlas_audit::bundle::describe(&report));
        }
        if !report.report.ok {
            bail!("the bundle does not verify");
        }
        return Ok(());
    }
    let settings = load_settings(cli, Vec::new())?;
    init_cli_logging();
    let node_key = NodeKey::load(&settings.audit, &settings.data_dir, false)?.map(|(key, _)| key);
    if let AuditCommand::PublicKey = command {
        let key = node_key.context(
            "no audit signing key: configure audit.signing_key, or start `atlas serve` once to generate one",
        )?;
        println!("key_id:     {}", key.key_id());
        println!("public_key: {}", key.public().to_base64());
        print!("{}", key.public().to_pem()?);
        return Ok(());
    }
    let db = Database::connect(&settings.database()).await?;
    let store = AuditStore::new(db.clone());
    let outcome = match command {
        AuditCommand::Verify { public_key, json } => {
            let mut trusted = TrustedKeys::from_settings(&settings.audit, node_key.as_ref().map(|k| k.public()))?;
            if let Some(k) = public_key {
                trusted.add(PublicKey::resolve(k)?);
            }
            let report = atlas_audit::verify_database(&store, &trusted).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", atlas_audit::verify::describe(&report));
            }
            if report.ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the audit chain does not verify"))
            }
        }
        AuditCommand::Export {
            from,
            to,
            collection,
            output,
        } => {
            let instant = |name: &str, v: &Option<String>| -> anyhow::Result<_> {
                v.as_deref()
                    .map(|t| {
                        chrono::DateTime::parse_from_rfc3339(t)
                            .map(|t| t.with_timezone(&chrono::Utc))
                            .with_context(|| {
                                format!("--{name} must be an RFC 3339 timestamp, e.g. 2026-11-23T00:00:00Z")
                            })
                    })
                    .transpose()
            };
            let filter = atlas_audit::ExportFilter {
                from: instant("from", from)?,
                to: instant("to", to)?,
                collection_id: collection.clone(),
            };
            let mut out: Box<dyn std::io::Write> = match output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let summary = atlas_audit::export(&store, &filter, node_key.as_ref(), &mut out).await?;
            eprintln!(
                "exported sequences {}..={}: {} rows, {} elided, {} checkpoints",
                summary.first_sequence, summary.last_sequence, summary.rows, summary.elided, summary.checkpoints
            );
            Ok(())
        }
        AuditCommand::VerifyBundle { .. } | AuditCommand::PublicKey => Ok(()),
    };
    db.close().await;
    outcome
}

#[cfg(feature = "jobs")]
async fn jobs_command(queue: &atlas_jobs::JobQueue, command: &JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            status,
            job_type,
            limit,
        } => {
            let status = status
                .as_deref()
                .map(|s| atlas_jobs::JobStatus::parse(s).with_context(|| format!("unknown status `{s}`")))
                .transpose()?;
            let filter = atlas_jobs::JobFilter {
                status,
                job_type: job_type.clone(),
                limit: (*limit).clamp(1, 10_000),
                ..Default::default()
            };
            let jobs = queue.list(&filter).await?;
            if jobs.is_empty() {
                println!("no jobs");
            }
            for j in jobs {
                println!(
                    "{}  {:<10} {:<20} attempts={}/{} run_at={}{}",
                    j.id,
                    j.status.as_str(),
                    j.job_type,
                    j.attempts,
                    j.max_attempts,
                    j.run_at,
                    j.last_error.map(|e| format!("  error: {e}")).unwrap_or_default()
                );
            }
        }
        JobsCommand::Show { id } => {
            let job = queue.get(id).await?.with_context(|| format!("no job {id}"))?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCommand::Retry { id } => {
            let job = queue.retry(id).await?;
            println!("job {} queued again (a running server picks it up)", job.id);
        }
        JobsCommand::Cancel { id } => {
            let job = queue.cancel(id).await?;
            match job.status {
                atlas_jobs::JobStatus::Cancelled => println!("job {} cancelled", job.id),
                _ => println!("job {} is running; its worker stops it at the next heartbeat", job.id),
            }
        }
    }
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.server.bind;
    let atlas = Atlas::build(settings, ModuleRegistry::discover()?).await?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (server.bind)"))?;
    atlas.run(listener, atlas_kernel::shutdown_signal()).await?;
    Ok(())
}

/// Follow the outbox from its current end, printing each new envelope.
async fn tail_events(db: &Database, event_type: Option<&str>) -> anyhow::Result<()> {
    use atlas_db::sqlx::{self, Row};
    use std::io::Write;
    let head: Option<i64> = sqlx::query("SELECT MAX(sequence) FROM outbox")
        .fetch_one(db.reader())
        .await?
        .try_get(0)?;
    let mut after = head.unwrap_or(0);
    let mut stdout = std::io::stdout();
    let stop = atlas_kernel::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let mut conn = db.reader().acquire().await?;
        let batch = atlas_events::read_after(&mut conn, after, 500).await?;
        drop(conn);
        for envelope in &batch {
            after = envelope.sequence.unwrap_or(after);
            if event_type.is_none_or(|t| t == envelope.event_type) {
                writeln!(stdout, "{}", serde_json::to_string(envelope)?)?;
            }
        }
        stdout.flush()?;
        if batch.is_empty() {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        }
    }
}

fn init_cli_logging() {
    let settings = atlas_telemetry::TelemetrySettings {
        log_level: "warn".into(),
        ..Default::default()
    };
    let _ = atlas_telemetry::init_logging(&settings);
}

#[cfg(feature = "identity")]
fn read_password(prompt: &str) -> anyhow::Result<String> {
    use std::io::{IsTerminal, Read};
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("{prompt}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        first
    } else {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.trim_end_matches(['\n', '\r']).to_string()
    };
    Ok(password)
}

fn tempdir_for(what: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "atlas-{what}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Create `<root>/{modules,crates}/<module>/migrations/{sqlite,postgres}/<UTC timestamp>_<name>.sql`.
fn generate_migration(root: &Path, module: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        bail!("migration name `{name}` must be lowercase letters, digits and underscores");
    }
    let dir = ["modules", "crates"]
        .iter()
        .map(|base| root.join(base).join(module))
        .find(|d| d.join("Cargo.toml").is_file())
        .with_context(|| format!("no module `{module}` under modules/ or crates/ (run this from the workspace root)"))?
        .join("migrations");
    let version = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    for dialect in ["sqlite", "postgres"] {
        let d = dir.join(dialect);
        std::fs::create_dir_all(&d)?;
        if let Some(existing) = std::fs::read_dir(&d)?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&version))
        {
            bail!(
                "{} already exists for this second; try again",
                existing.path().display()
            );
        }
        let file = d.join(format!("{version}_{name}.sql"));
        std::fs::write(&file, format!("-- {module}: {name} ({dialect})\n"))?;
        println!("created {}", file.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("module `m` failed to start: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn a_cause_quoted_by_its_error_prints_once() {
        let quoting = anyhow::Error::new(Quoting(std::io::Error::other("relation \"x\" does not exist")));
        assert_eq!(
            error_chain(&quoting),
            "module `m` failed to start: relation \"x\" does not exist"
        );
        let wrapped = anyhow::Error::new(std::io::Error::other("disk full")).context("writing the backup");
        assert_eq!(error_chain(&wrapped), "writing the backup: disk full");
    }
}
