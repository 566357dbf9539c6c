//! Real `redis-server` processes for the cluster tests: a server on a free
//! loopback port in a directory of the test's own, with the append-only
//! file fsynced on every write (`--appendonly yes --appendfsync always`),
//! so a `kill -9` loses nothing that was acknowledged; Sentinels too.
//!
//! Invariants: only 127.0.0.1; every process is stopped by its PID
//! (SIGKILL) on drop; every wait is bounded. `redis-cli` is the client.
//!
//! Included beside the harness (`mod common; use common::*;` then
//! `#[path = "common/redis.rs"] mod redis;`): its ports and waits are the
//! harness's (`super::free_port`, `super::wait_until`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// True when `redis-server` and `redis-cli` are installed (`.ci/run`
/// installs them); tests skip with a message otherwise.
pub fn available() -> bool {
    let ok = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok("redis-server") && ok("redis-cli")
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    extra: Vec<String>,
}

impl Redis {
    /// Starts a server in `dir` (created if needed) on a free port.
    pub fn start(dir: &Path) -> Redis {
        Redis::start_with(dir, super::free_port(), &[])
    }

    /// Starts a server in `dir` on `port` with extra arguments.
    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Redis {
        std::fs::create_dir_all(dir).expect("redis dir");
        let mut r = Redis {
            child: None,
            port,
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let up = super::wait_until(Duration::from_secs(10), || {
            self.cli(&["PING"]).is_some_and(|o| o.trim() == "PONG")
        });
        assert!(
            up,
            "redis-server on {} did not start; log:\n{}",
            self.port,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli -p PORT args...` (with the `--requirepass` password, if
    /// any): its output, `None` if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let password = self
            .extra
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.extra.get(i + 1));
        match password {
            Some(pw) => {
                let mut all = vec!["--no-auth-warning", "-a", pw.as_str()];
                all.extend_from_slice(args);
                cli(self.port, &all)
            }
            None => cli(self.port, args),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal to the server by its PID.
    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status();
            if sig == "STOP" {
                super::wait_stopped(pid);
            }
        }
    }

    /// `kill -9`, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and directory (after `kill9`).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts again on the same port with an empty directory.
    pub fn restart_empty(&mut self) {
        self.kill9();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("appendonly") || name.ends_with(".rdb") {
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill9();
    }
}

/// `redis-cli -p port args...` with a bound on its run time.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let mut child = Command::new("timeout")
        .args(["5", "redis-cli", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let _ = child.stdin.take();
    let out: Output = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.starts_with("Could not connect") || text.starts_with("ERR") {
        return None;
    }
    Some(text)
}

/// A Sentinel (`redis-server --sentinel`) watching `master` at
/// 127.0.0.1:`master_port`, quorum 2, quick to declare it down.
pub struct Sentinel {
    child: Option<Child>,
    pub port: u16,
}

impl Sentinel {
    pub fn start(dir: &Path, name: &str, master_port: u16) -> Sentinel {
        Sentinel::start_with(dir, name, master_port, "", None)
    }

    /// With `extra` lines in its configuration (`sentinel auth-pass …`,
    /// `requirepass …`) and the `password` it then asks of its clients.
    pub fn start_with(
        dir: &Path,
        name: &str,
        master_port: u16,
        extra: &str,
        password: Option<&str>,
    ) -> Sentinel {
        let port = super::free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\nlogfile {}\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n{extra}",
                dir.join(format!("sentinel-{port}.log")).display()
            ),
        )
        .expect("sentinel conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis sentinel");
        let s = Sentinel {
            child: Some(child),
            port,
        };
        let ping = match password {
            Some(pw) => vec!["--no-auth-warning", "-a", pw, "PING"],
            None => vec!["PING"],
        };
        let up = super::wait_until(Duration::from_secs(10), || {
            cli(port, &ping).is_some_and(|o| o.trim() == "PONG")
        });
        assert!(up, "sentinel on {port} did not start");
        s
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `redis-cli -h host -p port args...` with a bound on its run time.
pub fn cli_at(host: &str, port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("timeout")
        .args(["5", "redis-cli", "-h", host, "-p"])
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// A network namespace of the test's own joined to the host by a veth
/// pair (`host_ip` here, `ns_ip` there); removed on drop. Needs root and
/// `ip`; `None` otherwise.
pub struct Netns {
    pub name: String,
    host_if: String,
    pub host_ip: String,
    pub ns_ip: String,
}

impl Netns {
    pub fn create() -> Option<Netns> {
        let pid = std::process::id();
        let name = format!("pubsubd-t{pid}");
        let host_if = format!("vpsh{}", pid % 100_000);
        let ns_if = format!("vpsn{}", pid % 100_000);
        let (a, b) = (200 + (pid / 256) % 50, pid % 256);
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: format!("10.{a}.{b}.1"),
            ns_ip: format!("10.{a}.{b}.2"),
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                host_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                ns_if.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                ns_if.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{}/30", ns.host_ip),
                "dev".into(),
                host_if.clone(),
            ],
            vec!["link".into(), "set".into(), host_if.clone(), "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/30", ns.ns_ip),
                "dev".into(),
                ns_if.clone(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                ns_if,
                "up".into(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for step in steps {
            let ok = Command::new("ip")
                .args(&step)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None; // dropped: whatever was made is removed
            }
        }
        Some(ns)
    }

    /// Cuts (false) or restores (true) the link.
    pub fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let ok = Command::new("ip")
            .args(["link", "set", &self.host_if, state])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link set {} {state}", self.host_if);
    }

    /// Starts `redis-server` inside the namespace on `ns_ip:port` (AOF,
    /// fsync always); `ip netns exec` execs it, so the PID is Redis's.
    /// A `redis-server` in the namespace, killed by its PID when the
    /// guard drops (a failing test included).
    pub fn redis(&self, dir: &Path, port: u16) -> KillOnDrop {
        std::fs::create_dir_all(dir).expect("redis dir");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, "redis-server", "--port"])
            .arg(port.to_string())
            .args(["--bind", &self.ns_ip, "--protected-mode", "no", "--dir"])
            .arg(dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server in the namespace");
        let up = super::wait_until(Duration::from_secs(10), || {
            cli_at(&self.ns_ip, port, &["PING"]).is_some_and(|o| o.trim() == "PONG")
        });
        let child = KillOnDrop(child);
        assert!(up, "redis-server in {} did not start", self.name);
        child
    }
}

/// A child process stopped (SIGKILL by PID, then reaped) on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
