//! The `butler-edge` command: run the service, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use butler_edge::app::{self, StartupError};
use butler_edge::config::Config;
use butler_edge::{logging, privileges, systemd};

/// Exit status for an unusable configuration (as `check-config` promises).
const EXIT_CONFIG: u8 = 2;
/// Exit status for a failure to start or run.
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "butler-edge",
    version,
    about = "Butler-compatible REST appliance for Qlik Sense"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// Butler YAML config file; without it the embedded default config is used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the key-value database lives (overrides ButlerEdge.dataDir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// When started as root: the unprivileged user to become once the listener is bound.
    /// Without it, root is refused outside systemd.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print what would run; exit 0 if valid, 2 if not.
    CheckConfig {
        /// The Butler YAML config file to check.
        file: PathBuf,
    },
    /// Create the appliance PKI (first boot): CA, server certificate, admin client bundle.
    Init(butler_edge::init::InitArgs),
    /// Apply a provisioning medium (appliance boot unit): validate it all, then switch to it,
    /// or change nothing; exit 0 if applied or unchanged, 1 if refused.
    Provision(butler_edge::appliance::provision::ProvisionArgs),
    /// Show the appliance's state on a console, refreshed (appliance console unit).
    Console(butler_edge::appliance::console::ConsoleArgs),
    /// API tokens for callers that cannot present a client certificate.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Hand the first-boot admin bundle out once, for a one-time code shown on the console.
    Enrol(butler_edge::appliance::enrol::EnrolArgs),
    /// Install the update bundle the service or the medium handed over (root, A/B appliance
    /// unit butler-edge-update.service): RAUC installs it, the answer goes to result.json.
    InstallUpdate(butler_edge::appliance::install_update::InstallUpdateArgs),
    /// Keep the slot just booted once butler-edge is healthy, or give up a failed trial and
    /// reboot into the previous slot (A/B appliance unit butler-edge-confirm-boot.service).
    ConfirmBoot(butler_edge::appliance::confirm_boot::ConfirmBootArgs),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random API token once, and the config lines (with its SHA-256 only) for
    /// the client NAME.
    New {
        /// The client's name in ButlerEdge.clientAuth.clients (shown in logs and messages).
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Init(args)) => exit("init", butler_edge::init::run(&args)),
        Some(Command::Provision(args)) => exit(
            "provision",
            butler_edge::appliance::provision::run(&args).map(drop),
        ),
        Some(Command::Console(args)) => {
            butler_edge::appliance::console::run(&args);
            ExitCode::SUCCESS
        }
        Some(Command::Enrol(args)) => match butler_edge::appliance::enrol::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("butler-edge enrol: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Some(Command::InstallUpdate(args)) => {
            match butler_edge::appliance::install_update::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("butler-edge install-update: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Some(Command::ConfirmBoot(args)) => {
            match butler_edge::appliance::confirm_boot::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("butler-edge confirm-boot: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Some(Command::Token(TokenCommand::New { name })) => token_new(&name),
        None => serve(cli.config, cli.data_dir, cli.user),
    }
}

/// A subcommand's exit status: 0, or 1 with its error on stderr.
fn exit<E: std::fmt::Display>(subcommand: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("butler-edge {subcommand}: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let loaded = match path {
        Some(path) => Config::load(path),
        None => Config::embedded(),
    };
    loaded.map_err(|e| {
        eprintln!("butler-edge: config error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn serve(
    config_path: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    user: Option<String>,
) -> ExitCode {
    let config = match load(config_path.as_ref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    logging::init(config.log_level);
    let drop_to = match privileges::plan(user.as_deref(), systemd::under_systemd()) {
        Ok(target) => target,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("butler-edge: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let data_dir = config.data_dir(data_dir.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("butler-edge: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(start(config, data_dir, drop_to)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("butler-edge: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Installs the signal handlers, prepares the service (TLS files, database), binds the
/// listener, then runs the service with them.
async fn start(
    config: Config,
    data_dir: PathBuf,
    drop_to: Option<privileges::Target>,
) -> Result<(), StartupError> {
    let (shutdown, reloads) = app::signals::install().map_err(StartupError::Signals)?;
    let rest = config.rest.clone();
    let service = app::prepare(config, &data_dir).await?;
    let listener = app::bind(&rest).await?;
    service
        .run(listener, drop_to.as_ref(), shutdown, reloads)
        .await
}

fn check_config(file: &PathBuf) -> ExitCode {
    let config = match load(Some(file)) {
        Ok(config) => config,
        Err(code) => return code,
    };
    print!("{}", butler_edge::check::report(&config));
    ExitCode::SUCCESS
}

/// `token new NAME`: the token goes to stdout once and is not stored anywhere; the config
/// gets only its digest.
fn token_new(name: &str) -> ExitCode {
    let (token, digest) = match butler_edge::authz::new_token() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("butler-edge token new: {e}; no token was created");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let name = serde_json::to_string(name).unwrap_or_default();
    print!(
        "API token for client {name} (shown once; store it in the caller, e.g. the Qlik REST \
         connection's header, and nowhere else):\n\n  {token}\n\n\
         The caller sends it as `Authorization: Bearer {token}` (or `X-Api-Key: {token}`), over \
         HTTPS only.\n\n\
         Add this entry under ButlerEdge.clientAuth.clients (set ButlerEdge.clientAuth.mode to \
         certificateOrToken or token), with the endpoints it needs; then reload (SIGHUP):\n\n\
         \x20     - name: {name}\n\
         \x20       tokenSha256: [{digest}]\n\
         \x20       endpoints: [ping, kvRead, kvWrite, startTask]\n\n\
         To rotate, add the new digest to the existing entry's tokenSha256 list (two may be \
         valid at once), move the caller to the new token, then remove the old digest.\n"
    );
    ExitCode::SUCCESS
}
