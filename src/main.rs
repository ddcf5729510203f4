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
    /// Hand the first-boot admin bundle out once, for a one-time code shown on the console.
    Enrol(butler_edge::appliance::enrol::EnrolArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Init(args)) => match butler_edge::init::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("butler-edge init: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Some(Command::Provision(args)) => match butler_edge::appliance::provision::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("butler-edge provision: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
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
        None => serve(cli.config, cli.data_dir, cli.user),
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
