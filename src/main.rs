//! The `lb` command: parses the command line, loads the configuration, sets up logging and starts the
//! configured engine.

use lb::config::{Config, Engine};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
Usage: lb [OPTIONS] [CONFIG]

An HTTP/1.1 load balancer.

Arguments:
  [CONFIG]            configuration file [default: lb.toml]

Options:
      --check         validate the configuration and exit (status 0 when valid, 1 otherwise)
      --engine ENGINE override the configured engine: event_loop | threaded
  -h, --help          print this help
  -V, --version       print the version
";

struct Args {
    config: PathBuf,
    check: bool,
    engine: Option<Engine>,
}

enum Command {
    Run(Args),
    Help,
    Version,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config: Option<PathBuf> = None;
    let mut check = false;
    let mut engine = None;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--check" => check = true,
            "--engine" => {
                let value = args
                    .next()
                    .ok_or("--engine needs a value: event_loop | threaded")?;
                engine = Some(value.parse()?);
            }
            _ if arg.starts_with("--engine=") => engine = Some(arg["--engine=".len()..].parse()?),
            _ if arg.starts_with('-') && arg != "-" => return Err(format!("unknown option {arg}")),
            _ if config.is_some() => {
                return Err(format!("unexpected argument {arg}: only one config file"));
            }
            _ => config = Some(PathBuf::from(arg)),
        }
    }
    Ok(Command::Run(Args {
        config: config.unwrap_or_else(|| PathBuf::from("lb.toml")),
        check,
        engine,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("lb {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("lb: {message}\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("lb: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(engine) = args.engine {
        config.engine = engine;
    }
    if args.check {
        for warning in &config.warnings {
            eprintln!("lb: warning: {warning}");
        }
        println!(
            "{}: configuration is valid ({} backends)",
            args.config.display(),
            config.backends.len()
        );
        return ExitCode::SUCCESS;
    }
    let logger = simple_logger::SimpleLogger::new()
        .with_level(config.log_level.to_filter())
        .env();
    if let Err(e) = logger.init() {
        eprintln!("lb: cannot start logging: {e}");
    }
    lb::fault::log_panics();
    match lb::run(config, &args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
