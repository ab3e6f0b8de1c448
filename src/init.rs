//! `atlas init`: write an `atlas.toml` and the secrets it names for a new
//! deployment, embedded (SQLite, in-database event log) or cluster
//! (PostgreSQL and NATS JetStream).
//!
//! Secrets are generated here, each into its own file under `secrets/`
//! (mode 0600, the directory 0700), and the configuration names them with
//! `…_file` keys, so the same layout works with mounted Kubernetes or Vault
//! secrets: the JWT secret (HS256; it also keys the MACs of list cursors)
//! and the audit signing key (Ed25519, PKCS#8 PEM). A cluster's database URL
//! goes to a secrets file too, since it usually carries a password.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::RngCore;

/// `atlas init` flags.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Ask nothing: take the flags and defaults.
    #[arg(long)]
    pub non_interactive: bool,
    /// Replace an existing atlas.toml and secrets files.
    #[arg(long)]
    pub force: bool,
    /// Where to write atlas.toml and secrets/ (atlas runs from there).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// embedded (SQLite, one process) or cluster (PostgreSQL and NATS).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Address the server listens on.
    #[arg(long)]
    pub bind: Option<String>,
    /// Data directory (database in embedded mode, search index in both).
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<String>,
    /// cluster: the PostgreSQL URL (written to secrets/database.url).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// cluster: the NATS server URL(s), comma-separated.
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Cluster,
}

/// Answers, from flags or prompts.
struct Plan {
    mode: Mode,
    profile: String,
    bind: String,
    data_dir: String,
    database_url: Option<String>,
    nats_url: String,
}

/// Run `atlas init`; `profile` is the global `--profile`, if given.
pub fn run(args: &InitArgs, profile: Option<&str>) -> anyhow::Result<()> {
    let plan = if args.non_interactive {
        plan_from_flags(args, profile)?
    } else {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        plan_interactively(args, profile, &mut input, &mut std::io::stderr())?
    };
    let written = write(&args.dir, &plan, args.force)?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "wrote {} ({} mode, profile {})",
        written[0].display(),
        mode_name(plan.mode),
        plan.profile
    )?;
    for file in &written[1..] {
        writeln!(out, "wrote {} (secret, mode 0600)", file.display())?;
    }
    writeln!(out, "next:")?;
    writeln!(
        out,
        "  atlas config show   # the effective configuration, secrets redacted"
    )?;
    if plan.mode == Mode::Cluster {
        writeln!(out, "  atlas migrate up    # once, before the first serve")?;
    }
    writeln!(out, "  atlas serve")?;
    writeln!(
        out,
        "keep secrets/ out of version control; back up secrets/audit-signing.key: checkpoints signed with it verify only with its public key"
    )?;
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Embedded => "embedded",
        Mode::Cluster => "cluster",
    }
}

fn default_profile(mode: Mode, profile: Option<&str>) -> String {
    profile
        .map(str::to_string)
        .unwrap_or_else(|| if mode == Mode::Cluster { "production" } else { "local" }.to_string())
}

fn plan_from_flags(args: &InitArgs, profile: Option<&str>) -> anyhow::Result<Plan> {
    let mode = args.mode.unwrap_or(Mode::Embedded);
    if mode == Mode::Cluster && args.database_url.is_none() {
        bail!("--mode cluster needs --database-url postgres://…");
    }
    let plan = Plan {
        mode,
        profile: default_profile(mode, profile),
        bind: args.bind.clone().unwrap_or_else(|| "127.0.0.1:8080".into()),
        data_dir: args.data_dir.clone().unwrap_or_else(|| "atlas-data".into()),
        database_url: args.database_url.clone(),
        nats_url: args.nats_url.clone().unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
    };
    check(&plan)?;
    Ok(plan)
}

/// Ask for each answer not given as a flag; an empty line takes the default.
fn plan_interactively(
    args: &InitArgs,
    profile: Option<&str>,
    input: &mut dyn BufRead,
    prompt: &mut dyn Write,
) -> anyhow::Result<Plan> {
    if std::io::stdin().is_terminal() {
        writeln!(prompt, "Atlas setup: press Enter to take the value in brackets.")?;
    }
    let mut ask = |question: &str, default: &str| -> anyhow::Result<String> {
        if default.is_empty() {
            write!(prompt, "{question}: ")?;
        } else {
            write!(prompt, "{question} [{default}]: ")?;
        }
        prompt.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            bail!("no answer to \"{question}\" (use --non-interactive with flags to script atlas init)");
        }
        let line = line.trim();
        Ok(if line.is_empty() {
            default.to_string()
        } else {
            line.to_string()
        })
    };
    let mode = match args.mode {
        Some(m) => m,
        None => match ask(
            "mode: embedded (SQLite, one process) or cluster (PostgreSQL + NATS)",
            "embedded",
        )?
        .as_str()
        {
            "embedded" => Mode::Embedded,
            "cluster" => Mode::Cluster,
            other => bail!("unknown mode `{other}`: embedded or cluster"),
        },
    };
    let profile = match profile {
        Some(p) => p.to_string(),
        None => ask("profile: local, staging or production", &default_profile(mode, None))?,
    };
    let bind = match &args.bind {
        Some(b) => b.clone(),
        None => ask("listen address", "127.0.0.1:8080")?,
    };
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => ask("data directory", "atlas-data")?,
    };
    let (database_url, nats_url) = if mode == Mode::Cluster {
        let database = match &args.database_url {
            Some(u) => u.clone(),
            None => ask("PostgreSQL URL (postgres://user:password@host/db)", "")?,
        };
        let nats = match &args.nats_url {
            Some(u) => u.clone(),
            None => ask("NATS URL", "nats://127.0.0.1:4222")?,
        };
        (Some(database), nats)
    } else {
        (None, String::new())
    };
    let plan = Plan {
        mode,
        profile,
        bind,
        data_dir,
        database_url,
        nats_url,
    };
    check(&plan)?;
    Ok(plan)
}

fn check(plan: &Plan) -> anyhow::Result<()> {
    if !["local", "staging", "production"].contains(&plan.profile.as_str()) {
        bail!("unknown profile `{}`: local, staging or production", plan.profile);
    }
    plan.bind
        .parse::<std::net::SocketAddr>()
        .with_context(|| format!("`{}` is not a listen address like 127.0.0.1:8080", plan.bind))?;
    if let Some(url) = &plan.database_url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("cluster mode needs a postgres:// database URL");
        }
    }
    if plan.data_dir.contains('"') || plan.nats_url.contains('"') {
        bail!("paths and URLs cannot contain `\"`");
    }
    Ok(())
}

/// Write atlas.toml and the secrets; returns the files, atlas.toml first.
fn write(dir: &Path, plan: &Plan, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let config = dir.join("atlas.toml");
    let secrets = dir.join("secrets");
    let mut files: Vec<(PathBuf, String)> = vec![(secrets.join("jwt.secret"), random_hex(32))];
    #[cfg(feature = "audit")]
    files.push((
        secrets.join("audit-signing.key"),
        atlas_audit::NodeKey::generate().to_pkcs8_pem()?,
    ));
    if let Some(url) = &plan.database_url {
        files.push((secrets.join("database.url"), url.clone()));
    }
    if !force {
        if let Some(existing) = std::iter::once(&config)
            .chain(files.iter().map(|(p, _)| p))
            .find(|p| p.exists())
        {
            bail!(
                "{} already exists; pass --force to replace it (and every file atlas init writes)",
                existing.display()
            );
        }
    }
    std::fs::create_dir_all(&secrets).with_context(|| format!("cannot create {}", secrets.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))?;
    }
    for (path, content) in &files {
        if force && path.exists() {
            std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
        }
        let mut f = crate::backup::create_private(path)?;
        f.write_all(content.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::write(&config, config_text(plan)).with_context(|| format!("cannot write {}", config.display()))?;
    let mut written = vec![config];
    written.extend(files.into_iter().map(|(p, _)| p));
    Ok(written)
}

/// `bytes` random bytes from the OS generator, as hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

fn config_text(plan: &Plan) -> String {
    let mut t = format!(
        "# Atlas configuration ({mode} mode), written by `atlas init`.\n\
         # Every key is described in docs/configuration.md; ATLAS_* environment\n\
         # variables override it (ATLAS_SERVER__BIND=…). Paths are relative to\n\
         # the directory atlas runs in.\n\
         profile = \"{profile}\"\n\
         data_dir = \"{data_dir}\"\n\
         \n\
         [server]\n\
         bind = \"{bind}\"\n",
        mode = mode_name(plan.mode),
        profile = plan.profile,
        data_dir = plan.data_dir,
        bind = plan.bind,
    );
    if plan.mode == Mode::Cluster {
        t.push_str(
            "# api processes: atlas serve --role api; workers: atlas serve --role worker\n\
             \n\
             [database]\n\
             url_file = \"secrets/database.url\"\n\
             # Migrations run once with `atlas migrate up`, not by every process.\n\
             auto_migrate = false\n",
        );
    }
    t.push_str(
        "\n[auth]\n\
         # HS256 key (also keys list cursors); rotating it signs everyone out.\n\
         jwt_secret_file = \"secrets/jwt.secret\"\n",
    );
    if cfg!(feature = "audit") {
        t.push_str(
            "\n[audit]\n\
             # Ed25519 key signing audit checkpoints. After a rotation, list the old\n\
             # public key (atlas audit public-key) in trusted_public_keys.\n\
             signing_key_file = \"secrets/audit-signing.key\"\n\
             trusted_public_keys = []\n",
        );
    }
    if plan.mode == Mode::Cluster {
        t.push_str(&format!(
            "\n[events]\n\
             broker = \"nats\"\n\
             \n\
             [events.nats]\n\
             url = \"{url}\"\n\
             # TLS and authentication (docs/configuration.md, [events.nats]):\n\
             # tls_ca_file = \"secrets/nats-ca.pem\"\n\
             # tls_cert_file = \"secrets/nats-client.pem\"\n\
             # tls_key_file = \"secrets/nats-client.key\"\n\
             # nkey_seed_file = \"secrets/nats.nkey\"\n\
             # (or user = \"atlas\" with password_file, or creds_file)\n",
            url = plan.nats_url
        ));
    }
    t
}
