//! Servers under test: how to configure and start each (pinned to CPU 0
//! with `taskset`), how to read its memory and CPU from /proc, and how to
//! stop it by PID.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proto::Proto;

#[derive(Debug, Clone)]
pub enum Kind {
    /// `pubsubd --config FILE`; the config is written per scenario.
    Pubsubd { bin: PathBuf },
    /// nginx with the nchan module, one worker process.
    Nchan { nginx: PathBuf, module: PathBuf },
    /// mosquitto: QoS 0, one listener on loopback, no persistence.
    Mosquitto { bin: PathBuf },
    /// Pushpin (its runner and every process it starts), with an nginx
    /// origin that answers every request with a GRIP stream hold; see
    /// `pushpin_conf` for the ports.
    Pushpin { bin: PathBuf, nginx: PathBuf },
    /// Any command (run by `sh -c`); `{port}` is replaced by the port and
    /// `{dir}` by a fresh working directory (its current directory too).
    Cmd { cmd: String },
}

/// Pushpin's ports after its HTTP port: the publish (control) API, the
/// origin, and three ZeroMQ sockets of its handler.
const PUSHPIN_PUBLISH: u16 = 1;
const PUSHPIN_ORIGIN: u16 = 2;
const PUSHPIN_ZMQ: [u16; 3] = [3, 4, 5];

impl Spec {
    /// Where publishers connect (Pushpin: its control API).
    pub fn pub_port(&self) -> u16 {
        match self.kind {
            Kind::Pushpin { .. } => self.port + PUSHPIN_PUBLISH,
            _ => self.port,
        }
    }

    /// Every port the server (and its helpers) will listen on.
    fn ports(&self) -> Vec<u16> {
        match self.kind {
            Kind::Pushpin { .. } => std::iter::once(0)
                .chain([PUSHPIN_PUBLISH, PUSHPIN_ORIGIN])
                .chain(PUSHPIN_ZMQ)
                .map(|o| self.port + o)
                .collect(),
            _ => vec![self.port],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
    pub kind: Kind,
    /// CPU list for `taskset -c`, e.g. "0".
    pub cpu: String,
}

/// Per-scenario settings that change the server's configuration.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// pubsubd `server.max_queued_bytes` (None = the server's default).
    pub max_queued_bytes: Option<u64>,
    /// A second, TLS, port: pubsubd's `server.tls`, or nginx's
    /// `listen PORT ssl` beside nchan's plain port (other kinds ignore it).
    pub tls: Option<ServerTls>,
}

/// The TLS listener: port, certificate chain and key (PEM files).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub port: u16,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// pubsubd's `record_layer` (compact or rustls); `None`: its default.
    pub record_layer: Option<String>,
}

pub struct Running {
    pub pid: u32,
    child: Child,
    pub log: PathBuf,
    pub addr: SocketAddr,
    /// Where publishers connect (the same as `addr` but for Pushpin).
    pub pub_addr: SocketAddr,
    /// A helper that is not part of the server under test and is not
    /// measured (Pushpin's origin), stopped after the server.
    helper: Option<Child>,
    /// The TLS listener, when configured.
    pub tls_addr: Option<SocketAddr>,
    /// Every PID seen in the server's process tree (nginx's worker too).
    seen: Vec<u32>,
}

/// Memory and CPU of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rss_kib: u64,
    pub cpu_ticks: u64,
    /// The kernel's share of `cpu_ticks` (stime).
    pub sys_ticks: u64,
    pub at: Option<Instant>,
    pub procs: usize,
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

impl Sample {
    /// CPU use between two samples, in percent of one core.
    pub fn cpu_percent_since(&self, earlier: &Sample) -> f64 {
        match (self.at, earlier.at) {
            (Some(a), Some(b)) if a > b => {
                let secs = (a - b).as_secs_f64();
                (self.cpu_ticks.saturating_sub(earlier.cpu_ticks)) as f64 / clk_tck() / secs * 100.0
            }
            _ => 0.0,
        }
    }

    /// The kernel's share of the CPU used between two samples (0..=1).
    pub fn sys_share_since(&self, earlier: &Sample) -> f64 {
        let all = self.cpu_ticks.saturating_sub(earlier.cpu_ticks);
        if all == 0 {
            return 0.0;
        }
        self.sys_ticks.saturating_sub(earlier.sys_ticks) as f64 / all as f64
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(p) {
                if let Some(pp) = f.get(1).and_then(|s| s.parse().ok()) {
                    parents.push((p, pp));
                }
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// VmRSS and utime+stime summed over a process tree.
pub fn sample(pid: u32) -> Sample {
    let mut s = Sample {
        at: Some(Instant::now()),
        ..Default::default()
    };
    for p in tree(pid) {
        let Some(f) = stat_fields(p) else { continue };
        let field = |k: usize| -> u64 { f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0) };
        let (utime, stime) = (field(11), field(12));
        s.sys_ticks += stime;
        let ticks = utime + stime;
        s.cpu_ticks += ticks;
        s.rss_kib += rss_kib(p).unwrap_or(0);
        s.procs += 1;
    }
    s
}

/// nginx's TLS listener for nchan: the same certificate and key as
/// pubsubd's, TLS 1.2 and 1.3 like rustls (nginx 1.22's default leaves
/// 1.3 out), nginx's defaults otherwise (ciphers, session tickets on, no
/// session cache).
fn nginx_tls_listen(tls: Option<&ServerTls>) -> String {
    match tls {
        Some(t) => format!(
            "    listen 127.0.0.1:{} ssl backlog=4096;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n",
            t.port,
            t.cert.display(),
            t.key.display()
        ),
        None => String::new(),
    }
}

fn nginx_conf(dir: &Path, port: u16, module: &Path, tls: Option<&ServerTls>) -> String {
    let d = dir.display();
    let tls = nginx_tls_listen(tls);
    format!(
        r#"# Written by pubsub-load: nginx + nchan, one worker, for benchmarks.
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
load_module {module};
events {{
  worker_connections 19990;
  use epoll;
  multi_accept on;
}}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  client_body_buffer_size 16k;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
{tls}    # Publish: POST /pub?id=CHANNEL (nchan's default message buffer).
    location = /pub {{
      nchan_publisher;
      nchan_channel_id $arg_id;
    }}
    # Subscribe: GET /sub/CHANNEL, a streaming response of the message
    # bodies, each followed by "\n" -- like pubsubd's line stream.
    location ~ ^/sub/(\w+)$ {{
      nchan_subscriber http-raw-stream;
      nchan_channel_id $1;
      nchan_subscriber_first_message newest;
    }}
    # Subscribe over WebSocket: GET /ws/CHANNEL, one text frame per message.
    location ~ ^/ws/(\w+)$ {{
      nchan_subscriber websocket;
      nchan_channel_id $1;
      nchan_subscriber_first_message newest;
    }}
  }}
}}
"#,
        module = module.display()
    )
}

/// nginx + nchan in Redis mode (the `cluster` scenario): the same server
/// block as [`nginx_conf`], every channel stored in the Redis on
/// `redis_port` (`nchan_redis_pass` to an upstream of one
/// `nchan_redis_server`), so several instances share their channels.
pub fn nginx_redis_conf(dir: &Path, port: u16, module: &Path, redis_port: u16) -> String {
    nginx_conf(dir, port, module, None)
        .replace(
            "http {\n",
            &format!(
                "http {{\n  upstream redis_bench {{\n    nchan_redis_server redis://127.0.0.1:{redis_port}/0;\n  }}\n"
            ),
        )
        .replace(
            "      nchan_channel_id $arg_id;\n",
            "      nchan_channel_id $arg_id;\n      nchan_redis_pass redis_bench;\n",
        )
        .replace(
            "      nchan_channel_id $1;\n",
            "      nchan_channel_id $1;\n      nchan_redis_pass redis_bench;\n",
        )
        .replace("one worker, for benchmarks.", "one worker, Redis mode, for benchmarks.")
}

fn mosquitto_conf(port: u16) -> String {
    format!(
        "# Written by pubsub-load: mosquitto for benchmarks (QoS 0 traffic).
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest stderr
log_type error
log_type warning
"
    )
}

/// Pushpin's configuration: the Debian defaults (`/etc/pushpin/pushpin.conf`)
/// except for ports and paths, zurl run by the runner (Debian expects a
/// system zurl), and the handler's delivery rate limit lifted.
fn pushpin_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    let [z1, z2, z3] = PUSHPIN_ZMQ.map(|o| port + o);
    format!(
        r#"# Written by pubsub-load: Pushpin for benchmarks.
[global]
include=/usr/lib/pushpin/internal.conf
rundir={d}/run
ipc_prefix=pushpin-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:{port}
logdir={d}/log
log_level=2
client_buffer_size=8192
client_maxconn=50000
condure_bin=condure
zurl_bin=zurl

[proxy]
routesfile={d}/routes
zurl_out_specs=ipc://{d}/run/pushpin-zurl-in
zurl_out_stream_specs=ipc://{d}/run/pushpin-zurl-in-stream
zurl_in_specs=ipc://{d}/run/pushpin-zurl-out
sig_key=changeme
updates_check=off

[handler]
push_in_spec=tcp://127.0.0.1:{z1}
push_in_sub_specs=tcp://127.0.0.1:{z2}
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port={publish}
stats_spec=ipc://{d}/run/pushpin-stats
command_spec=tcp://127.0.0.1:{z3}
# Debian's defaults are message_rate=2500 ("max messages per second") and
# message_hwm=25000 ("max rate-limited messages"), which would cap fan-out.
message_rate=100000000
message_hwm=100000000
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
"#,
        publish = port + PUSHPIN_PUBLISH,
    )
}

/// The smallest origin that answers Pushpin's request with a stream hold:
/// a static nginx location that sets the GRIP headers, with a keep-alive
/// line every 5 s (pubsubd's ping interval; the same JSON line).
fn pushpin_origin_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"# Written by pubsub-load: Pushpin's origin.
worker_processes 1;
daemon off;
pid {d}/origin.pid;
error_log {d}/origin-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      add_header Grip-Hold stream always;
      add_header Grip-Channel bench always;
      add_header Grip-Keep-Alive '{{"stillalive":0}}\\n; format=cstring; timeout=5' always;
      return 200 "";
    }}
  }}
}}
"#
    )
}

/// pubsubd's configuration for one scenario (`cluster` appends its section).
pub fn pubsubd_conf(port: u16, tuning: &Tuning) -> String {
    let mut s = format!(
        "# Written by pubsub-load for benchmarks.\nserver:\n  bind: 127.0.0.1\n  port: {port}\n"
    );
    if let Some(q) = tuning.max_queued_bytes {
        s.push_str(&format!("  max_queued_bytes: {q}\n"));
    }
    if let Some(t) = &tuning.tls {
        // JSON strings are YAML strings.
        let path = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap_or_default();
        let layer = match &t.record_layer {
            Some(layer) => format!(", record_layer: {layer}"),
            None => String::new(),
        };
        s.push_str(&format!(
            "  tls: {{port: {}, cert: {}, key: {}{layer}}}\n",
            t.port,
            path(&t.cert),
            path(&t.key)
        ));
    }
    s.push_str("clients:\n  payloaders: [127.0.0.0/8]\n");
    s
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Starts a server for one scenario in `workdir` and waits until its port
/// accepts connections.
pub fn start(spec: &Spec, label: &str, workdir: &Path, tuning: &Tuning) -> io::Result<Running> {
    let dir = workdir.join(format!("{}-{label}", spec.name));
    fs::create_dir_all(&dir)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let tls_port = match (&spec.kind, &tuning.tls) {
        (Kind::Pubsubd { .. } | Kind::Nchan { .. }, Some(t)) => Some(t.port),
        _ => None,
    };
    for port in spec.ports().into_iter().chain(tls_port) {
        while !port_free(port) {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "port {port} is still in use (another server running?)"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let log = dir.join("server.log");
    let logf = fs::File::create(&log)?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &spec.cpu]);
    let mut helper = None;
    match &spec.kind {
        Kind::Pubsubd { bin } => {
            let conf = dir.join("pypubsub.yaml");
            fs::write(&conf, pubsubd_conf(spec.port, tuning))?;
            cmd.arg(bin).arg("--config").arg(&conf);
        }
        Kind::Nchan { nginx, module } => {
            let conf = dir.join("nginx.conf");
            fs::write(
                &conf,
                nginx_conf(&dir, spec.port, module, tuning.tls.as_ref()),
            )?;
            cmd.arg(nginx).arg("-c").arg(&conf).arg("-p").arg(&dir);
            cmd.arg("-e").arg(dir.join("error.log"));
        }
        Kind::Mosquitto { bin } => {
            let conf = dir.join("mosquitto.conf");
            fs::write(&conf, mosquitto_conf(spec.port))?;
            cmd.arg(bin).arg("-c").arg(&conf);
        }
        Kind::Pushpin { bin, nginx } => {
            let origin = spec.port + PUSHPIN_ORIGIN;
            for sub in ["run", "log"] {
                fs::create_dir_all(dir.join(sub))?;
            }
            fs::write(dir.join("routes"), format!("* 127.0.0.1:{origin}\n"))?;
            let conf = dir.join("pushpin.conf");
            fs::write(&conf, pushpin_conf(&dir, spec.port))?;
            let oconf = dir.join("origin.conf");
            fs::write(&oconf, pushpin_origin_conf(&dir, origin))?;
            let olog = fs::File::create(dir.join("origin.log"))?;
            helper = Some(
                Command::new("taskset")
                    .args(["-c", &spec.cpu])
                    .arg(nginx)
                    .arg("-c")
                    .arg(&oconf)
                    .arg("-p")
                    .arg(&dir)
                    .arg("-e")
                    .arg(dir.join("origin-error.log"))
                    .current_dir(&dir)
                    .stdin(Stdio::null())
                    .stdout(olog.try_clone()?)
                    .stderr(olog)
                    .spawn()?,
            );
            cmd.arg(bin).arg("--config").arg(&conf);
        }
        Kind::Cmd { cmd: c } => {
            cmd.args(["sh", "-c"]).arg(format!(
                "exec {}",
                c.replace("{port}", &spec.port.to_string())
                    .replace("{dir}", &dir.display().to_string())
            ));
        }
    }
    cmd.current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(mut h) = helper {
                stop_child(&mut h);
            }
            return Err(e);
        }
    };
    let addr: SocketAddr = ([127, 0, 0, 1], spec.port).into();
    let pub_addr: SocketAddr = ([127, 0, 0, 1], spec.pub_port()).into();
    let tls_addr = tls_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let mut running = Running {
        pid: child.id(),
        child,
        log,
        addr,
        pub_addr,
        helper,
        tls_addr,
        seen: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(io::Error::other(format!(
                "{} exited at start-up ({status}); see {}",
                spec.name,
                running.log.display()
            )));
        }
        let listening =
            |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok();
        if listening(&addr) && listening(&pub_addr) && tls_addr.as_ref().is_none_or(listening) {
            break;
        }
        if Instant::now() > deadline {
            running.stop();
            return Err(io::Error::other(format!(
                "{} did not listen on {addr} within 15 s",
                spec.name
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a master process start its workers.
    std::thread::sleep(Duration::from_millis(300));
    running.seen = tree(running.pid);
    Ok(running)
}

/// SIGTERM to a child we spawned, SIGKILL after 5 s; reaps it.
fn stop_child(child: &mut Child) -> Option<std::process::ExitStatus> {
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break child.wait().ok();
            }
        }
    }
}

impl Running {
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after 5 s; leftover children by PID too;
    /// then the helper.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let status = stop_child(&mut self.child);
        for &p in &self.seen {
            if p != self.pid && fs::metadata(format!("/proc/{p}")).is_ok() {
                // Only kill it if it is still one of ours (same start).
                // SAFETY: plain kill(2) on a PID from this server's tree.
                unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
            }
        }
        if let Some(mut h) = self.helper.take() {
            let helper_tree = tree(h.id());
            stop_child(&mut h);
            for p in helper_tree.into_iter().skip(1) {
                if fs::metadata(format!("/proc/{p}")).is_ok() {
                    // SAFETY: plain kill(2) on a PID from the helper's tree.
                    unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
                }
            }
        }
        status
    }

    /// Log lines that look like trouble, with counts, and a few examples.
    pub fn log_summary(&self) -> (Vec<(String, u64)>, Vec<String>) {
        let mut text = fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(dir) = self.log.parent() {
            if let Ok(e) = fs::read_to_string(dir.join("error.log")) {
                text.push_str(&e);
            }
            // Pushpin's processes log into log/.
            if let Ok(logs) = fs::read_dir(dir.join("log")) {
                for l in logs.flatten() {
                    text.push_str(&fs::read_to_string(l.path()).unwrap_or_default());
                }
            }
        }
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        let mut examples = Vec::new();
        for line in text.lines() {
            let l = line.to_ascii_lowercase();
            let key = if l.contains("panick") {
                "panic"
            } else if l.contains("dropping slow subscriber") {
                "dropped slow subscriber"
            } else if l.contains("refusing") {
                "refused connection"
            } else if l.contains("[emerg]") || l.contains("[alert]") || l.contains("[crit]") {
                "nginx critical"
            } else if l.contains(" error") || l.contains("[error]") {
                "error"
            } else if l.contains(" warn") || l.contains("[warn]") {
                "warning"
            } else {
                continue;
            };
            *counts.entry(key.into()).or_insert(0) += 1;
            if examples.len() < 5 && key != "dropped slow subscriber" {
                examples.push(line.chars().take(300).collect());
            }
        }
        (counts.into_iter().collect(), examples)
    }
}
