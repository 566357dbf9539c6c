//! Test harness: a real OpenLDAP `slapd` on a free loopback port, with its own
//! configuration and data in a temporary directory, killed on drop.
//!
//! The standard library, plus the workspace's own test helpers for a free
//! port, certificates and a SIGSTOP that took effect, which the including
//! crate's root provides as `free_port`, `Ca` and `wait_stopped`
//! (tests/common/port.rs, pki.rs and stopped.rs: the server's
//! black-box tests have them from `use common::*` and include this file
//! with `#[path = "../ldap-worker/tests/slapd/mod.rs"] mod slapd;`;
//! ldap-worker's own tests include those two files by path).
//!
//! Needs the Debian package `slapd` (slapd, slapadd, the schema files and
//! `back_mdb`). The `ldaps://` listener has a throw-away CA and server
//! certificate made at start.
//!
//! The directory (suffix `dc=example,dc=org`):
//! - `uid=alice,ou=people,...`, password `alicepw` (cleartext userPassword),
//!   member of `cn=admins,ou=groups,...` and `cn=devs,ou=groups,...`
//! - `uid=bob,ou=people,...`, password `bobpw` (stored `{SSHA}`), member of devs
//! - `uid=carol,ou=people,...`, password `carolpw`, in no group
//! - `uid=comma\,user,ou=people,...` (user name `comma,user`), password
//!   `commapw`, in no group
//! - `cn=admin,dc=example,dc=org` / `adminpw` is the rootdn.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const SUFFIX: &str = "dc=example,dc=org";
pub const USER_DN: &str = "uid=%s,ou=people,dc=example,dc=org";
pub const MEMBER_PATTERN: &str = "(member=uid=%s,ou=people,dc=example,dc=org)";
pub const UID_PATTERN: &str = "(uid=%s)";
pub const ADMINS: &str = "cn=admins,ou=groups,dc=example,dc=org";
pub const DEVS: &str = "cn=devs,ou=groups,dc=example,dc=org";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
pub const ROOT_PW: &str = "adminpw";
/// (user name, password, DN) of the people in the directory.
pub const USERS: &[(&str, &str, &str)] = &[
    ("alice", "alicepw", "uid=alice,ou=people,dc=example,dc=org"),
    ("bob", "bobpw", "uid=bob,ou=people,dc=example,dc=org"),
    ("carol", "carolpw", "uid=carol,ou=people,dc=example,dc=org"),
    (
        "comma,user",
        "commapw",
        "uid=comma\\,user,ou=people,dc=example,dc=org",
    ),
];

/// How long `start` waits for slapd to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

const DATA_LDIF: &str = "\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell
userPassword: alicepw

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder
userPassword: {SSHA}ePBnkGg1ULqRmOfID4JynEDX3lQ8Sz9t

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: Singer
userPassword: carolpw

dn: uid=comma\\,user,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: comma,user
cn: Comma
sn: User
userPassword: commapw

dn: cn=admins,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: admins
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=devs,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: devs
member: uid=alice,ou=people,dc=example,dc=org
member: uid=bob,ou=people,dc=example,dc=org
";

/// A running slapd. Killed (SIGKILL, immediate) and its directory removed on drop.
pub struct Slapd {
    /// `ldap://127.0.0.1:PORT`
    pub uri: String,
    /// `ldaps://127.0.0.1:PORT`, when its certificate could be written.
    pub ldaps_uri: Option<String>,
    /// The CA that signed the `ldaps://` certificate (PEM).
    pub ca_file: Option<PathBuf>,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Slapd {
    /// Configure, load and start a fresh slapd. Panics with a useful message on
    /// failure (this is test code).
    pub fn start() -> Slapd {
        let dir = unique_dir();
        fs::create_dir_all(dir.join("db")).expect("create slapd temp dir");
        let tls = make_tls(&dir);
        let conf = dir.join("slapd.conf");
        fs::write(&conf, slapd_conf(&dir, tls.is_some())).expect("write slapd.conf");
        let ldif = dir.join("data.ldif");
        fs::write(&ldif, DATA_LDIF).expect("write data.ldif");
        let out = Command::new(tool("slapadd"))
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif)
            .output()
            .unwrap_or_else(|e| panic!("cannot run slapadd ({e}): apt-get install slapd"));
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A port taken between our probe and slapd's bind makes slapd exit: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = super::free_port();
            let tls_port = tls.as_ref().map(|_| super::free_port());
            let mut urls = format!("ldap://127.0.0.1:{port}/");
            if let Some(p) = tls_port {
                urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
            }
            let log = dir.join("slapd.log");
            let log_file = fs::File::create(&log).expect("create slapd.log");
            let child = Command::new(tool("slapd"))
                .arg("-d")
                .arg("0")
                .arg("-h")
                .arg(&urls)
                .arg("-f")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run slapd ({e}): apt-get install slapd"));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut slapd = Slapd {
                uri: format!("ldap://127.0.0.1:{port}"),
                ldaps_uri: tls_port.map(|p| format!("ldaps://127.0.0.1:{p}")),
                ca_file: tls.clone(),
                dir: dir.clone(),
                addr,
                child: Some(child),
            };
            let mut ports = vec![port];
            ports.extend(tls_port);
            match slapd.wait_ready(&ports) {
                Ok(()) => return slapd,
                Err(e) => {
                    slapd.stop();
                    let mut text = String::new();
                    if let Ok(mut f) = fs::File::open(&log) {
                        let _ = f.read_to_string(&mut text);
                    }
                    last_error = format!("{e}; slapd said: {text}");
                    // Keep the directory for the next attempt.
                    slapd.dir = PathBuf::new();
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("slapd did not start: {last_error}");
    }

    /// Waits until this slapd has bound its ports. A port that accepts is
    /// not enough: when slapd lost the race for it, the listener is another
    /// test's (seen: a test's "hung" slapd was a zombie while another
    /// slapd answered on its port). slapd writes its pid file only after it
    /// has bound every listener, so that file must name our child first.
    fn wait_ready(&mut self, ports: &[u16]) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let ours = self.pid();
        let pid_file = self.dir.join("slapd.pid");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("slapd exited: {status}"));
                }
            }
            let written = fs::read_to_string(&pid_file).ok();
            if written.and_then(|p| p.trim().parse().ok()) == ours {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("no pid file after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for &port in ports {
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            loop {
                if let Some(child) = self.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("slapd exited: {status}"));
                    }
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("port {port} not accepting after {START_TIMEOUT:?}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The slapd process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops slapd (SIGSTOP) and returns once the kernel says every thread
    /// of it is stopped: connections are still accepted by the kernel, and
    /// none is answered.
    pub fn pause(&self) {
        let pid = self.pid().expect("slapd runs");
        let ok = Command::new("kill")
            .arg("-STOP")
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid}");
        super::wait_stopped(pid);
    }

    /// Kill slapd now (SIGKILL) and reap it; the port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn slapd_conf(dir: &Path, tls: bool) -> String {
    let d = dir.display();
    let mut conf = String::new();
    for schema in ["core", "cosine", "inetorgperson", "nis"] {
        conf.push_str(&format!("include /etc/ldap/schema/{schema}.schema\n"));
    }
    conf.push_str(&format!(
        "modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         pidfile {d}/slapd.pid\n\
         argsfile {d}/slapd.args\n"
    ));
    if tls {
        conf.push_str(&format!(
            "TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n"
        ));
    }
    conf.push_str(&format!(
        "database mdb\n\
         maxsize 10485760\n\
         suffix \"{SUFFIX}\"\n\
         rootdn \"{ROOT_DN}\"\n\
         rootpw {ROOT_PW}\n\
         directory {d}/db\n\
         access to attrs=userPassword by anonymous auth by * none\n\
         access to * by * read\n"
    ));
    conf
}

/// A CA (`ca.pem`, returned) and a server certificate for 127.0.0.1
/// (`server.pem`, `server.key`) in `dir`; `None` if they cannot be written.
fn make_tls(dir: &Path) -> Option<PathBuf> {
    let ca = super::Ca::new("slapd");
    let (cert, key) = ca.leaf();
    fs::write(dir.join("ca.pem"), &ca.pem).ok()?;
    fs::write(dir.join("server.pem"), cert).ok()?;
    fs::write(dir.join("server.key"), key).ok()?;
    Some(dir.join("ca.pem"))
}

fn tool(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

fn unique_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "pubsubd-slapd-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}
