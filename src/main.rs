//! The `pubsubd` command: arguments, logging, configuration, signals,
//! binding the listeners, exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use log::{error, info, warn};
use pubsubd::{AclFile, Config, Control, Server, StartError};

const USAGE: &str = "\
pubsubd - a pub/sub server compatible with Apache PyPubSub

Usage: pubsubd [--config FILE] [--acl FILE]

Options:
  --config FILE   configuration (default: pypubsub.yaml; built-in defaults
                  when the default file does not exist)
  --acl FILE      access control list (default: pypubsub_acl.yaml)
  -h, --help      show this help
  -V, --version   show the version

Logging: server.log_level in the config, or RUST_LOG (e.g. RUST_LOG=debug).
";

struct Args {
    config: Option<PathBuf>,
    acl: PathBuf,
}

enum Command {
    Run(Args),
    Exit(&'static str),
}

fn parse_args() -> Result<Command, String> {
    let mut args = Args {
        config: None,
        acl: PathBuf::from("pypubsub_acl.yaml"),
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_string_lossy().into_owned();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<PathBuf, String> {
            match inline.clone() {
                Some(v) => Ok(PathBuf::from(v)),
                None => it
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{name} needs a file name")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Exit(USAGE)),
            "-V" | "--version" => {
                return Ok(Command::Exit(concat!(
                    "pubsubd ",
                    env!("CARGO_PKG_VERSION"),
                    "\n"
                )))
            }
            "--config" => args.config = Some(value("--config")?),
            "--acl" => args.acl = value("--acl")?,
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }
    Ok(Command::Run(args))
}

/// Reads the config file; the default file may be missing, a named one not.
fn load_config(path: Option<&Path>) -> Result<(Config, Vec<String>, String), StartError> {
    let (path, explicit) = match path {
        Some(p) => (p, true),
        None => (Path::new("pypubsub.yaml"), false),
    };
    if !explicit && !path.exists() {
        return Ok((
            Config::default(),
            Vec::new(),
            "no pypubsub.yaml found: using the built-in default configuration \
             (port 2069, publishing from loopback only)"
                .into(),
        ));
    }
    let (config, warnings) = Config::load(path)?;
    Ok((
        config,
        warnings,
        format!("configuration from {}", path.display()),
    ))
}

fn init_logging(level: Option<&str>) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info);
    if let Some(level) = level {
        builder.parse_filters(level);
    }
    if let Ok(env) = std::env::var("RUST_LOG") {
        builder.parse_filters(&env);
    }
    builder.init();
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Command::Run(args)) => args,
        Ok(Command::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pubsubd: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (config, warnings, origin) = match load_config(args.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            init_logging(None);
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.server.log_level.as_deref());
    info!("{origin}");
    for w in warnings {
        warn!("{w}");
    }
    raise_fd_limit();
    match serve(config, args.acl) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Signals, the ACL, the listeners, then the server until it is stopped.
fn serve(config: Config, acl: PathBuf) -> Result<(), StartError> {
    let control = Control::new();
    handle_signals(&control).map_err(StartError::Io)?;
    let acl = AclFile::load(acl)?;
    let listeners = pubsubd::bind_configured(&config)?;
    let server = Server::new(config, acl, listeners, control)?;
    // Announced once signals are handled and everything has started, so a
    // SIGTERM sent by whoever waited for this line ends the server cleanly.
    for (addr, tls) in server.local_addrs() {
        if tls {
            info!("pubsubd listening for TLS on {addr}");
        } else {
            info!("pubsubd listening on {addr}");
        }
    }
    server.run().map_err(StartError::Io)
}

/// SIGTERM/SIGINT stop the server, SIGUSR2 reloads the ACL file, SIGHUP the
/// TLS certificate; a thread of their own turns them into `Control` calls.
fn handle_signals(control: &Control) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGUSR2, SIGHUP])?;
    let control = control.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGTERM | SIGINT => control.shutdown(),
                    SIGUSR2 => control.reload_acl(),
                    SIGHUP => control.reload_tls(),
                    _ => {}
                }
            }
        })?;
    Ok(())
}

/// Lifts the soft open-files limit to the hard one: every subscriber is a
/// file descriptor.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                warn!("could not raise the open-files limit");
            }
        }
    }
}
