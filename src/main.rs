//! The `pubsubd` command: arguments, logging, configuration, signals,
//! binding the listeners, readiness (systemd's notify socket and the
//! `--ready-file`), exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use log::{error, info, warn};
use pubsubd::{AclFile, Config, Control, ListenerKind, Server, StartError};

const USAGE: &str = "\
pubsubd - a pub/sub server compatible with Apache PyPubSub

Usage: pubsubd [--config FILE] [--acl FILE] [--ready-file FILE] [--check-config]

Options:
  --config FILE      configuration (default: pypubsub.yaml; built-in
                     defaults when the default file does not exist)
  --acl FILE         access control list (default: pypubsub_acl.yaml)
  --ready-file FILE  once listening, write the process ID and every bound
                     address there as JSON (atomically; replaced if it
                     exists, removed on a clean exit; exit 1 before
                     serving if it cannot be written)
  --check-config     load and check the configuration, the ACL file and
                     the TLS files without starting (exit 0 if usable,
                     else 1)
  -h, --help       show this help
  -V, --version    show the version

Signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration (and TLS
files), SIGUSR2 reloads the ACL file.
Logging: server.log_level in the config, or RUST_LOG (e.g. RUST_LOG=debug).
";

struct Args {
    config: Option<PathBuf>,
    acl: PathBuf,
    ready_file: Option<PathBuf>,
    check: bool,
}

enum Command {
    Run(Args),
    Exit(&'static str),
}

fn parse_args() -> Result<Command, String> {
    let mut args = Args {
        config: None,
        acl: PathBuf::from("pypubsub_acl.yaml"),
        ready_file: None,
        check: false,
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
            "--ready-file" => args.ready_file = Some(value("--ready-file")?),
            "--check-config" => args.check = true,
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }
    Ok(Command::Run(args))
}

/// A configuration and where it came from.
struct Loaded {
    config: Config,
    warnings: Vec<String>,
    /// The file, or `None` for the embedded default.
    file: Option<PathBuf>,
}

/// Reads the config file; the default file may be missing (then the
/// embedded default applies), a named one not.
fn load_config(path: Option<&Path>) -> Result<Loaded, StartError> {
    let (path, explicit) = match path {
        Some(p) => (p, true),
        None => (Path::new("pypubsub.yaml"), false),
    };
    if !explicit && !path.exists() {
        return Ok(Loaded {
            config: Config::embedded(),
            warnings: Vec::new(),
            file: None,
        });
    }
    let (config, warnings) = Config::load(path)?;
    Ok(Loaded {
        config,
        warnings,
        file: Some(path.to_owned()),
    })
}

impl Loaded {
    fn origin(&self) -> String {
        match &self.file {
            Some(path) => format!("configuration from {}", path.display()),
            None => "no pypubsub.yaml found: using the built-in default configuration \
                     (port 2069, publishing from loopback only, admin on 127.0.0.1:2099)"
                .into(),
        }
    }
}

/// Everything passes through the `log` crate; `server.log_level` (which
/// SIGHUP may change) sets the level unless RUST_LOG takes over.
fn init_logging(level: Option<&str>) {
    let mut builder = env_logger::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(env) => {
            builder.filter_level(log::LevelFilter::Info);
            if let Some(level) = level {
                builder.parse_filters(level);
            }
            builder.parse_filters(&env);
            builder.init();
        }
        Err(_) => {
            // The filter lets everything through; the global maximum,
            // which a reload can move, decides.
            builder.filter_level(log::LevelFilter::Trace);
            builder.init();
            pubsubd::set_log_level(level);
        }
    }
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
    if args.check {
        return check_config(&args);
    }
    let loaded = match load_config(args.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            init_logging(None);
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(loaded.config.server.log_level.as_deref());
    info!("{}", loaded.origin());
    for w in &loaded.warnings {
        warn!("{w}");
    }
    raise_fd_limit();
    match serve(loaded, args.acl, args.ready_file.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: everything a start would load, nothing it would
/// connect to or bind; a summary on stdout, or `file: key: what is wrong`.
fn check_config(args: &Args) -> ExitCode {
    let report = || -> Result<Vec<String>, StartError> {
        let loaded = load_config(args.config.as_deref())?;
        let mut lines = vec![loaded.origin()];
        lines.extend(loaded.warnings.iter().map(|w| format!("warning: {w}")));
        let acl = AclFile::load(args.acl.clone())?;
        lines.push(format!(
            "ACL: {} users from {}",
            acl.acl.len(),
            args.acl.display()
        ));
        lines.extend(pubsubd::check(&loaded.config)?);
        Ok(lines)
    };
    match report() {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Signals, the ACL, the listeners, then the server until it is stopped.
fn serve(loaded: Loaded, acl: PathBuf, ready_file: Option<&Path>) -> Result<(), StartError> {
    let control = Control::new();
    handle_signals(&control).map_err(StartError::Io)?;
    let acl = AclFile::load(acl)?;
    let embedded = loaded.file.is_none();
    let listeners = pubsubd::bind_configured(&loaded.config, embedded)?;
    let reload_from = loaded
        .file
        .unwrap_or_else(|| PathBuf::from("pypubsub.yaml"));
    let server =
        Server::new(loaded.config, acl, listeners, control)?.reload_config_from(reload_from);
    // Announced once signals are handled and everything has started, so a
    // SIGTERM sent by whoever waited for this ends the server cleanly. The
    // ready file first: a server that cannot tell its starter where it is
    // stops here, before it serves or tells systemd it is ready, as it
    // would for a port it cannot bind.
    let addrs = server.local_addrs();
    if let Some(path) = ready_file {
        pubsubd::ready_file::write(path, &addrs).map_err(|source| StartError::ReadyFile {
            path: path.to_owned(),
            source,
        })?;
    }
    for &(addr, kind) in &addrs {
        match kind {
            ListenerKind::Plain => info!("pubsubd listening on {addr}"),
            ListenerKind::Tls => info!("pubsubd listening for TLS on {addr}"),
            ListenerKind::Admin => info!(
                "pubsubd admin listener on http://{addr}/ (status page, /metrics, /healthz, /readyz)"
            ),
        }
    }
    notify_systemd("READY=1");
    let result = server.run();
    notify_systemd("STOPPING=1");
    // Like a PID file: gone once the process is, unless another server
    // has written it since (a kill -9 leaves it, its pid naming no process).
    if let Some(path) = ready_file {
        if let Err(e) = pubsubd::ready_file::remove_if_ours(path, &addrs) {
            warn!("could not remove the ready file {}: {e}", path.display());
        }
    }
    result.map_err(StartError::Io)
}

/// SIGTERM/SIGINT stop the server, SIGHUP reloads the configuration,
/// SIGUSR2 the ACL file; a thread of their own turns them into `Control`
/// calls.
///
/// They are blocked in this (the main) thread before any other thread is
/// started, so every thread started later inherits the mask and only the
/// signals thread takes them. Otherwise the kernel may hand one to a
/// helper thread blocked in a socket read with a timeout (the Redis,
/// LDAP and SQS clients), which fails with EINTR whatever SA_RESTART says
/// and costs a reconnect (or an append of unknown outcome).
fn handle_signals(control: &Control) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
    const HANDLED: [i32; 4] = [SIGTERM, SIGINT, SIGUSR2, SIGHUP];
    let mut signals = signal_hook::iterator::Signals::new(HANDLED)?;
    mask_signals(libc::SIG_BLOCK, &HANDLED)?;
    let control = control.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Err(e) = mask_signals(libc::SIG_UNBLOCK, &HANDLED) {
                error!("cannot take signals: {e}");
            }
            for signal in signals.forever() {
                match signal {
                    SIGTERM | SIGINT => control.shutdown(),
                    SIGUSR2 => control.reload_acl(),
                    SIGHUP => control.reload_config(),
                    _ => {}
                }
            }
        })?;
    Ok(())
}

/// Blocks or unblocks `signals` for the calling thread (`pthread_sigmask`).
fn mask_signals(how: libc::c_int, signals: &[i32]) -> std::io::Result<()> {
    // SAFETY: the set is initialised by sigemptyset before use, and
    // pthread_sigmask only reads it.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut())
    };
    match rc {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// Tells systemd (Type=notify) how the service is doing, if it asked.
fn notify_systemd(state: &str) {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        warn!("could not notify systemd ({state}): {e}");
    }
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
