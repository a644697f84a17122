//! The command line: arguments (clap), logging, error printing and exit
//! codes. Subcommands live one per file.

mod analyze;
mod attach;
mod batch;
mod config;
mod github;
mod minimize;
mod profiles;
mod progress;
mod run;
mod sandbox;
mod summary;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit codes, as documented in `--help` and the README.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_THRESHOLD: u8 = 3;
/// `--verify`: the slim image failed a probe the original passes; nothing
/// was written.
pub const EXIT_VERIFY: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "slim",
    version,
    about = "Make container images small: squash, strip and recompress, no Docker engine needed",
    subcommand_negates_reqs = true,
    after_help = "Examples:
  slim myapp:latest -o myapp:slim     # the image you just built, back into the same engine
  slim oci:fixtures/oci:demo:latest -o oci:/tmp/demo-slim:latest
  docker save myapp | slim docker-archive:- -o docker-archive:slim.tar
  slim registry.example.com/team/api:1.4 -o registry.example.com/team/api:1.4-slim --squash none

Image references:
  NAME[:TAG]                          a short name: the local engine's image if it has one, else Docker Hub's
  HOST/NAME[:TAG][@DIGEST], docker://...   a registry image (Docker Hub rules for docker://NAME)
  oci:PATH[:TAG]                      an OCI image layout directory
  oci-archive:PATH[:TAG]              a tar of an OCI image layout
  docker-archive:PATH[:NAME:TAG]      docker save / docker load format (PATH '-' = stdin/stdout)
  docker-daemon:NAME[:TAG]            an image in the local Docker or Podman engine (DOCKER_HOST=unix://...,
                                      /var/run/docker.sock, or Podman's socket)
When a short name came from the engine, a short -o name is loaded into that engine.

Exit codes: 0 success, 1 failure (also --timeout), 2 usage error (also a probe that fails on the original image),
3 a --fail-if-* threshold not met, 4 --verify: the slim image fails a probe the original passes (nothing written);
130/143 interrupted by SIGINT/SIGTERM (what the run wrote is removed)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: run::RunArgs,

    #[command(flatten)]
    global: GlobalArgs,

    #[command(flatten)]
    config: config::ConfigArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Where an image's bytes go and what slimming would save; writes nothing.
    Analyze(analyze::AnalyzeArgs),
    /// List the built-in strip profiles, or show one.
    Profiles(profiles::ProfilesArgs),
    /// Slim many images, registry to registry, from a job file (idempotent, shardable).
    Batch(batch::BatchArgs),
    /// Run an image, or a command in it, without Docker (needs root and runc); or probe it.
    Run(sandbox::SandboxArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    Manpage,
}

/// Options every command shares.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Reach HOST without TLS verification (and over plain HTTP if it does not speak TLS). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST", global = true)]
    pub insecure_registry: Vec<String>,

    /// Trust this CA certificate (PEM) for registries, in addition to the system roots. Repeatable.
    #[arg(long = "ca-cert", value_name = "FILE", global = true)]
    pub ca_cert: Vec<std::path::PathBuf>,

    /// Print less: errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print more (repeat for debug logs). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Stop the whole run after this long (e.g. 90s, 30m, 2h; 0 = no limit), undoing what it wrote [default: 1h; 24h for batch].
    #[arg(long, value_name = "DURATION", global = true, value_parser = parse_timeout)]
    pub timeout: Option<Timeout>,

    /// Refuse a docker-archive on stdin, or an image exported by the local engine, larger than this (GiB); both are spooled to TMPDIR.
    #[arg(
        long = "max-archive-size",
        value_name = "GIB",
        default_value_t = 64,
        global = true
    )]
    pub max_archive_gib: u64,
}

/// `--timeout`: a limit, or none (`0`).
#[derive(Clone, Copy, Debug)]
pub struct Timeout(pub Option<std::time::Duration>);

fn parse_timeout(s: &str) -> Result<Timeout, String> {
    crate::cleanup::parse_duration(s).map(Timeout)
}

impl GlobalArgs {
    pub fn source_limits(&self) -> crate::transport::SourceLimits {
        crate::transport::SourceLimits {
            max_archive_bytes: self.max_archive_gib.saturating_mul(1 << 30),
        }
    }

    pub fn client(&self) -> anyhow::Result<std::sync::Arc<crate::registry::RegistryClient>> {
        let opts = crate::registry::ClientOptions {
            insecure_hosts: self.insecure_registry.clone(),
            ca_certs: self.ca_cert.clone(),
            ..Default::default()
        };
        Ok(std::sync::Arc::new(crate::registry::RegistryClient::new(
            opts,
        )?))
    }
}

/// Prints to stdout; a reader that went away (`slim profiles | head`) ends
/// the output quietly instead of panicking.
pub fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// An error that is the user's to fix in the command line (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = <Cli as clap::CommandFactory>::command()
        .try_get_matches_from(&argv)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m).map(|c| (c, m)));
    let (mut cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The project config file holds defaults for the main command's flags.
    if cli.command.is_none() {
        match config::apply(cli, &matches, argv) {
            Ok((c, path)) => {
                cli = c;
                cli.run.config_file = path;
            }
            Err(e) => {
                print_error(&e);
                return ExitCode::from(EXIT_USAGE);
            }
        }
    } else if ["config", "no_config"]
        .iter()
        .any(|id| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
    {
        eprintln!("error: --config and --no-config apply to slim SOURCE -o DEST only");
        return ExitCode::from(EXIT_USAGE);
    }
    init_tracing(&cli.global);
    let default_timeout = match cli.command {
        Some(Command::Batch(_)) => Some(std::time::Duration::from_secs(24 * 3600)),
        // Like `docker run`: a server runs until it is stopped.
        Some(Command::Run(_)) => None,
        _ => Some(std::time::Duration::from_secs(3600)),
    };
    crate::cleanup::install(
        cli.global.timeout.map_or(default_timeout, |t| t.0),
        // A progress bar may hold the cursor mid-line.
        |message| eprintln!("\nerror: {message}"),
    );
    let result = match cli.command {
        None => run::run(cli.run, &cli.global),
        Some(Command::Profiles(a)) => profiles::run(a),
        Some(Command::Batch(a)) => batch::run(a, &cli.global),
        Some(Command::Analyze(a)) => analyze::run(a, &cli.global),
        Some(Command::Run(a)) => sandbox::run(a, &cli.global),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "slim",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Some(Command::Manpage) => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .map(|_| 0)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print_error(&e);
            let usage = e.chain().any(|c| {
                c.is::<UsageError>()
                    || c.is::<crate::reference::ReferenceError>()
                    || c.is::<crate::settings::SettingsError>()
                    || c.is::<crate::sandbox::verify::ProbeFailedOnOriginal>()
            });
            let verify = e
                .chain()
                .any(|c| c.is::<crate::sandbox::verify::SlimFailedProbes>());
            ExitCode::from(if verify {
                EXIT_VERIFY
            } else if usage {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            })
        }
    }
}

fn init_tracing(g: &GlobalArgs) {
    let default = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "slim={default},rustls_platform_verifier=off,warn"
        ))
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// `error: …` then one `Caused by:` line per cause. Each error in the
/// chain describes only its own layer and leaves its cause to `source`, so
/// the chain says each thing once as it is.
fn print_error(e: &anyhow::Error) {
    let mut chain = e.chain();
    if let Some(top) = chain.next() {
        eprintln!("error: {top}");
    }
    for cause in chain {
        eprintln!("  Caused by: {cause}");
    }
    if std::env::var("RUST_BACKTRACE").is_ok_and(|v| v != "0") {
        eprintln!("{}", e.backtrace());
    }
}

/// Where a short name or an engine reference was read from, or why a short
/// name went to the registry. Shared by `slim`, `slim analyze` and `slim run`.
pub fn say_where(source: &crate::transport::resolve::Resolved) {
    if let Some(note) = &source.note {
        eprintln!("note: {note}");
    } else if source.engine().is_some() {
        eprintln!("{}: from {}", source.typed, source.describe());
    }
}
