//! Who may see what, checked against a model: seeded random ACL files
//! (users with segments and secured publish topics), subscribers (comma
//! lists, prefixes, right/wrong/unknown credentials, signed tokens with
//! their own grant or naming an ACL user, in the header, the cookie or
//! the query, expired or forged tokens, chunked and SSE, replay by time
//! and by cursor), and publishes (public, private, secured topics, from a
//! payloader address or not, with or without credentials or a token),
//! all against the real binary. Every publish's answer and every
//! subscriber's deliveries are compared with a plain model of the rules in
//! PROTOCOL.md, written here independently of the server's code.
//!
//! The same model runs across a cluster: two nodes on one Redis stream,
//! each subscriber on either node, each publish to either node.
//!
//! The seed is printed; `MODEL_SEED=n cargo test --test model` replays a
//! run. `MODEL_ROUNDS` and `MODEL_PUBLISHES` scale it.

mod common;
#[cfg(feature = "cluster")]
#[path = "common/redis.rs"]
mod redis;
#[cfg(feature = "ldap")]
#[path = "../ldap-worker/tests/slapd/mod.rs"]
mod slapd;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Topics events are made of: small, so that subscriptions match often.
const TOPICS: [&str; 5] = ["a", "b", "c", "d", "e"];
/// Secured topics (`clients.secure_topics`).
const SECURE: [&str; 2] = ["s1", "s2"];
/// A payloader address and one outside `clients.payloaders`.
const PAYLOADER_IP: &str = "127.0.0.1";
const STRANGER_IP: &str = "127.0.0.2";

/// xorshift64*: small, seeded, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    /// `k` distinct items of `from`, in random order.
    fn pick<'a>(&mut self, from: &[&'a str], k: usize) -> Vec<&'a str> {
        let mut pool = from.to_vec();
        let mut out = Vec::new();
        while out.len() < k && !pool.is_empty() {
            out.push(pool.swap_remove(self.below(pool.len())));
        }
        out
    }
}

// The model

#[derive(Debug, Clone)]
struct User {
    name: String,
    password: String,
    segments: Vec<Vec<String>>,
    publish: Vec<String>,
    /// In the directory (LDAP), not in the ACL file.
    ldap: bool,
}

/// Who a request says it is.
#[derive(Debug, Clone)]
enum Creds {
    None,
    Right(usize),
    WrongPassword(usize),
    Unknown,
    /// A signed token whose `pubsub` claim grants what this user has.
    Token(Box<User>, Carrier),
    /// A signed token without a `pubsub` claim whose `sub` names this
    /// user (of the ACL file, or of the directory: looked up in LDAP).
    TokenSub(usize, Carrier),
    /// An expired or forged token: 401, never a stream.
    BadToken(Carrier),
}

/// Where a request carries its token (`clients.tokens` of the model's
/// server names the cookie and the query parameter).
#[derive(Debug, Clone, Copy)]
enum Carrier {
    Header,
    Cookie,
    Query,
}

/// The model server's HS256 secret.
const TOKEN_SECRET: &str = "the model's secret, 32 bytes or more";

#[cfg(feature = "tokens")]
fn mint_with(secret: &str, claims: &Value) -> String {
    common::jwt::SigningKey::hmac("HS256", secret.as_bytes()).token(claims)
}

#[cfg(not(feature = "tokens"))]
fn mint_with(_: &str, _: &Value) -> String {
    unreachable!("no token is made in a build without tokens")
}

fn mint(claims: &Value) -> String {
    mint_with(TOKEN_SECRET, claims)
}

impl Creds {
    /// Its headers, and what goes after the path (`?access_token=...`).
    fn request_parts(&self, users: &[User]) -> (Vec<(String, String)>, String) {
        let basic = |a: String| (vec![("Authorization".to_owned(), a)], String::new());
        let exp = now_epoch() + 3600.0;
        let (token, carrier) = match self {
            Creds::None => return (Vec::new(), String::new()),
            Creds::Right(u) => return basic(basic_auth(&users[*u].name, &users[*u].password)),
            Creds::WrongPassword(u) => return basic(basic_auth(&users[*u].name, "wrong")),
            Creds::Unknown => return basic(basic_auth("nobody", "x")),
            Creds::Token(user, carrier) => {
                let acl: serde_json::Map<String, Value> = user
                    .segments
                    .iter()
                    .enumerate()
                    .map(|(i, seg)| (format!("seg{i}"), json!(seg)))
                    .collect();
                let claims = json!({"sub": user.name, "exp": exp,
                    "pubsub": {"acl": acl, "topics": user.publish}});
                (mint(&claims), carrier)
            }
            Creds::TokenSub(u, carrier) => {
                (mint(&json!({"sub": users[*u].name, "exp": exp})), carrier)
            }
            Creds::BadToken(carrier) => {
                // Expired, or the oracle's grant signed with another secret.
                let forged = matches!(carrier, Carrier::Header);
                let claims =
                    json!({"sub": "oracle", "exp": if forged { exp } else { exp - 7200.0 }});
                let secret = if forged {
                    "not the model's secret, 32 bytes+"
                } else {
                    TOKEN_SECRET
                };
                (mint_with(secret, &claims), carrier)
            }
        };
        match carrier {
            Carrier::Header => (
                vec![("Authorization".into(), format!("Bearer {token}"))],
                String::new(),
            ),
            Carrier::Cookie => (
                vec![("Cookie".into(), format!("a=b; pubsub_token={token}"))],
                String::new(),
            ),
            Carrier::Query => (Vec::new(), format!("?access_token={token}")),
        }
    }

    /// The user the server must consider authenticated, if any.
    fn user<'a>(&'a self, users: &'a [User]) -> Option<&'a User> {
        match self {
            Creds::Right(u) | Creds::TokenSub(u, _) => Some(&users[*u]),
            Creds::Token(user, _) => Some(user),
            _ => None,
        }
    }

    fn is_bad_token(&self) -> bool {
        matches!(self, Creds::BadToken(_))
    }

    /// What the server makes of these credentials on a publish: a
    /// cookie's token is not looked at there (cross-site forgery).
    fn on_publish(&self) -> Creds {
        match self {
            Creds::Token(_, Carrier::Cookie)
            | Creds::TokenSub(_, Carrier::Cookie)
            | Creds::BadToken(Carrier::Cookie) => Creds::None,
            other => other.clone(),
        }
    }
}

/// An accepted event as the model knows it.
#[derive(Debug, Clone)]
struct Ev {
    n: u64,
    topics: Vec<String>,
    private: bool,
    timestamp: f64,
    timestamp_text: String,
    cursor: String,
}

/// Where a subscriber starts.
#[derive(Debug, Clone)]
enum Start {
    Live,
    /// `X-Fetch-Since`; the number as sent.
    Since(String, f64),
    /// `X-Fetch-Since-Cursor`: after the event at this index of the history,
    /// or an unknown cursor (`None`).
    Cursor(Option<usize>),
}

#[derive(Debug, Clone)]
struct SubSpec {
    batches: Vec<Vec<String>>,
    path: String,
    creds: Creds,
    sse: bool,
    /// An SSE subscriber resuming says so with `Last-Event-ID`.
    last_event_id: bool,
    start: Start,
}

/// PROTOCOL.md, "Topics": every topic of some batch is among the event's.
fn matches(batches: &[Vec<String>], topics: &[String]) -> bool {
    batches.iter().any(|b| b.iter().all(|t| topics.contains(t)))
}

/// PROTOCOL.md, "Private events": a segment of the user's that is a subset
/// of the event's topics.
fn may_see(user: Option<&User>, ev: &Ev) -> bool {
    if !ev.private {
        return true;
    }
    user.is_some_and(|u| {
        u.segments
            .iter()
            .any(|seg| seg.iter().all(|t| ev.topics.contains(t)))
    })
}

/// PROTOCOL.md, secured topics and payloaders.
fn may_publish(user: Option<&User>, topics: &[String], private: bool, payloader: bool) -> bool {
    let mut secured: Vec<&str> = SECURE
        .iter()
        .copied()
        .filter(|s| topics.iter().any(|t| t == s))
        .collect();
    if private && SECURE.contains(&"private") {
        secured.push("private");
    }
    if secured.is_empty() {
        return payloader;
    }
    user.is_some_and(|u| secured.iter().all(|s| u.publish.iter().any(|p| p == s)))
}

/// What a subscriber must receive, in order, given the history before it
/// connected (`before`) and the events accepted after (`after`).
fn expected(spec: &SubSpec, users: &[User], before: &[Ev], after: &[Ev]) -> Vec<u64> {
    let user = spec.creds.user(users);
    let replayed: Vec<&Ev> = match &spec.start {
        Start::Live | Start::Cursor(None) => Vec::new(),
        // Every backlog event stamped at or after `since`.
        Start::Since(_, since) => before.iter().filter(|e| e.timestamp >= *since).collect(),
        Start::Cursor(Some(i)) => before[i + 1..].iter().collect(),
    };
    replayed
        .into_iter()
        .chain(after)
        .filter(|e| matches(&spec.batches, &e.topics) && may_see(user, e))
        .map(|e| e.n)
        .collect()
}

// Generating cases

/// The ACL file's users for `round`, then the directory's, then the oracle.
fn random_users(rng: &mut Rng, round: usize, directory: &[User]) -> Vec<User> {
    let mut users = Vec::new();
    for i in 0..3 + rng.below(4) {
        let segments = (0..rng.below(3))
            .map(|_| {
                let k = 1 + rng.below(2);
                rng.pick(&TOPICS, k).iter().map(|s| s.to_string()).collect()
            })
            .collect();
        let k = rng.below(3);
        let publish = rng.pick(&SECURE, k).iter().map(|s| s.to_string()).collect();
        users.push(User {
            name: format!("u{round}x{i}"),
            password: format!("pw{}", rng.below(1000)),
            segments,
            publish,
            ldap: false,
        });
    }
    users.extend_from_slice(directory);
    // The oracle sees every private event (each has a plain topic).
    users.push(User {
        name: "oracle".into(),
        password: "oracle-pw".into(),
        segments: TOPICS.iter().map(|t| vec![t.to_string()]).collect(),
        publish: SECURE.iter().map(|s| s.to_string()).collect(),
        ldap: false,
    });
    users
}

#[cfg(feature = "ldap")]
/// Segments for one mapped DN: 1-2 named segments of 1-2 topics.
fn random_segments(rng: &mut Rng) -> Vec<Vec<String>> {
    (0..1 + rng.below(2))
        .map(|_| {
            let k = 1 + rng.below(2);
            rng.pick(&TOPICS, k).iter().map(|s| s.to_string()).collect()
        })
        .collect()
}

fn acl_yaml(users: &[User]) -> String {
    let mut y = String::new();
    for u in users.iter().filter(|u| !u.ldap) {
        y += &format!("{}:\n  password: \"{}\"\n", u.name, u.password);
        if !u.segments.is_empty() {
            y += "  acl:\n";
            for (i, seg) in u.segments.iter().enumerate() {
                y += &format!("    seg{i}: [{}]\n", seg.join(", "));
            }
        }
        if !u.publish.is_empty() {
            y += &format!("  topics: [{}]\n", u.publish.join(", "));
        }
    }
    y
}

fn random_creds(rng: &mut Rng, users: &[User]) -> Creds {
    // The last user is the oracle: not picked at random.
    let u = rng.below(users.len() - 1);
    if cfg!(feature = "tokens") && rng.chance(30) {
        let carrier = [Carrier::Header, Carrier::Cookie, Carrier::Query][rng.below(3)];
        return match rng.below(10) {
            0..=4 => {
                let segments = (0..rng.below(3))
                    .map(|_| {
                        let k = 1 + rng.below(2);
                        rng.pick(&TOPICS, k).iter().map(|s| s.to_string()).collect()
                    })
                    .collect();
                let k = rng.below(3);
                let publish = rng.pick(&SECURE, k).iter().map(|s| s.to_string()).collect();
                let user = User {
                    name: format!("token{}", rng.below(1000)),
                    password: String::new(),
                    segments,
                    publish,
                    ldap: false,
                };
                Creds::Token(Box::new(user), carrier)
            }
            // A user of the ACL file or the directory.
            5..=8 => Creds::TokenSub(u, carrier),
            _ => Creds::BadToken(carrier),
        };
    }
    match rng.below(10) {
        0..=2 => Creds::None,
        3..=7 => Creds::Right(u),
        8 => Creds::WrongPassword(u),
        _ => Creds::Unknown,
    }
}

fn random_sub(rng: &mut Rng, users: &[User], history: &[Ev]) -> SubSpec {
    let mut batches: Vec<Vec<String>> = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let mut pool: Vec<&str> = TOPICS.to_vec();
        if rng.chance(15) {
            pool.push(SECURE[rng.below(SECURE.len())]);
        }
        let k = rng.below(3);
        batches.push(rng.pick(&pool, k).iter().map(|s| s.to_string()).collect());
    }
    // As sent: empty segments here and there (ignored by the server).
    let path = batches
        .iter()
        .map(|b| {
            let sep = if rng.chance(20) { "//" } else { "/" };
            format!("{sep}{}", b.join(sep))
        })
        .collect::<Vec<_>>()
        .join(",");
    let start = match rng.below(6) {
        0..=2 => Start::Live,
        3 | 4 if !history.is_empty() => {
            let i = rng.below(history.len());
            if rng.chance(50) {
                Start::Cursor(Some(i))
            } else {
                let e = &history[i];
                Start::Since(e.timestamp_text.clone(), e.timestamp)
            }
        }
        3 => Start::Since("0".into(), 0.0),
        4 => Start::Cursor(None),
        _ => {
            if rng.chance(50) {
                Start::Cursor(None)
            } else {
                let t = 4_000_000_000.0;
                Start::Since(format!("{t}"), t)
            }
        }
    };
    let sse = rng.chance(30);
    SubSpec {
        batches,
        path,
        creds: random_creds(rng, users),
        sse,
        last_event_id: sse && rng.chance(50),
        start,
    }
}

// Talking to the server

struct Open {
    spec: SubSpec,
    sub: Subscriber,
    /// History length when it was opened.
    before: usize,
}

fn open(srv: &Server, spec: SubSpec, users: &[User], history: &[Ev]) -> Open {
    let (mut headers, query) = spec.creds.request_parts(users);
    if spec.sse {
        headers.push(("Accept".into(), "text/event-stream".into()));
    }
    match &spec.start {
        Start::Live => {}
        Start::Since(text, _) => headers.push(("X-Fetch-Since".into(), text.clone())),
        Start::Cursor(i) => {
            let cursor = match i {
                Some(i) => history[*i].cursor.clone(),
                None => "00000000-0000-4000-8000-000000000000".into(),
            };
            let name = if spec.last_event_id {
                "Last-Event-ID"
            } else {
                "X-Fetch-Since-Cursor"
            };
            headers.push((name.into(), cursor));
        }
    }
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sub = srv.subscribe_with(&format!("{}{query}", spec.path), &refs);
    Open {
        spec,
        sub,
        before: history.len(),
    }
}

/// The next event (pings, SSE comments and hints skipped), whatever the
/// framing; `None` when the stream ends or nothing comes within `T`.
fn next_event(o: &mut Open) -> Option<Value> {
    let deadline = Instant::now() + T;
    loop {
        let chunk = o.sub.conn.read_chunk(deadline).ok()??;
        if !o.spec.sse {
            let v = parse_line(&chunk);
            if is_ping(&v) {
                continue;
            }
            return Some(v);
        }
        let text = String::from_utf8(chunk).expect("SSE is UTF-8");
        let mut id = None;
        let mut data = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<Value>(v).expect("SSE data is JSON"));
            }
        }
        if let Some(v) = data {
            assert_eq!(v["pubsub_cursor"].as_str(), id.as_deref(), "SSE id");
            return Some(v);
        }
    }
}

/// The `n` of every event before the sentinel `mark`; earlier sentinels
/// (replayed from the backlog) are skipped.
fn until_sentinel(o: &mut Open, mark: u64) -> Result<Vec<u64>, String> {
    let mut got = Vec::new();
    loop {
        let Some(v) = next_event(o) else {
            return Err(format!("stream ended or stalled after {got:?}"));
        };
        if let Some(s) = v.get("sentinel") {
            if s.as_u64() == Some(mark) {
                return Ok(got);
            }
            continue;
        }
        match v["n"].as_u64() {
            Some(n) => got.push(n),
            None => return Err(format!("event without n: {v}")),
        }
    }
}

/// Keep-alive publishing connections, one per client address: thousands
/// of publishes must not each leave a socket in TIME_WAIT (a fresh bound
/// port apiece would exhaust the ephemeral range on a shared machine).
#[derive(Default)]
struct Publishers {
    conns: BTreeMap<(u16, &'static str), Conn>,
}

impl Publishers {
    fn publish(
        &mut self,
        srv: &Server,
        ip: &'static str,
        path: &str,
        creds: &Creds,
        users: &[User],
        body: &Value,
    ) -> Response {
        let body = body.to_string();
        let (headers, query) = creds.request_parts(users);
        let auth: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let request = format!(
            "PUT {path}{query} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // A connection the server has closed since shows as a failed
        // send or read: once more on a fresh one.
        let key = (srv.port(), ip);
        for _ in 0..2 {
            let conn = self.conns.entry(key).or_insert_with(|| {
                let c = conn_from(srv, ip);
                // Closed with a reset, not into TIME_WAIT.
                let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
                c
            });
            let answer = conn
                .try_send(request.as_bytes())
                .and_then(|_| conn.read_response(false, T));
            match answer {
                Ok(r) => {
                    // A refused publish closes the connection (its body
                    // was never read).
                    if r.status != 202
                        || r.header("Connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                    {
                        self.conns.remove(&key);
                    }
                    return r;
                }
                Err(_) => {
                    self.conns.remove(&key);
                }
            }
        }
        panic!("PUT {path} from {ip}: no answer on two connections");
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn deliveries_match_the_model() {
    run_model(None, None);
}

/// Two nodes sharing one Redis stream: subscribers and publishers on
/// either, each node applying its own copy of the ACL on delivery.
#[cfg(feature = "cluster")]
#[test]
fn deliveries_match_the_model_across_a_cluster() {
    if !redis::available() {
        eprintln!("skipped: redis-server / redis-cli not installed");
        return;
    }
    let dir = TempDir::new();
    let r = redis::Redis::start(dir.path());
    run_model(None, Some(&r.url()));
}

/// The same with LDAP-mapped segments: the test directory's alice (groups
/// admins and devs), bob (devs) and carol (her own entry), each group DN
/// mapped to random segments (`clients.ldap.acl`).
#[cfg(feature = "ldap")]
#[test]
fn deliveries_match_the_model_with_ldap_segments() {
    let ldap = slapd::Slapd::start();
    run_model(Some(&ldap.uri), None);
}

#[cfg(feature = "ldap")]
/// Group DN → segments, and the directory's users as the model sees them.
fn directory(rng: &mut Rng) -> (String, Vec<User>) {
    const ADMINS: &str = "cn=admins,ou=groups,dc=example,dc=org";
    const DEVS: &str = "cn=devs,ou=groups,dc=example,dc=org";
    const CAROL: &str = "uid=carol,ou=people,dc=example,dc=org";
    let admins = random_segments(rng);
    let devs = random_segments(rng);
    let carol = random_segments(rng)[0].clone();
    let named = |segs: &[Vec<String>]| {
        segs.iter()
            .enumerate()
            .map(|(i, s)| format!("      g{i}: [{}]\n", s.join(", ")))
            .collect::<String>()
    };
    let acl = format!(
        "    \"{ADMINS}\":\n{}    \"{DEVS}\":\n{}    \"{CAROL}\": [{}]\n",
        named(&admins),
        named(&devs),
        carol.join(", ")
    );
    let user = |name: &str, password: &str, segments: Vec<Vec<String>>| User {
        name: name.into(),
        password: password.into(),
        segments,
        publish: Vec::new(),
        ldap: true,
    };
    let users = vec![
        user("alice", "alicepw", [admins, devs.clone()].concat()),
        user("bob", "bobpw", devs),
        user("carol", "carolpw", vec![carol]),
    ];
    (acl, users)
}

/// `clients.ldap` for the directory at `ldap_uri` (if any), with random
/// segments for its groups; the directory's users as the model sees them.
#[cfg(feature = "ldap")]
fn with_directory(
    mut builder: Builder,
    ldap_uri: Option<&str>,
    rng: &mut Rng,
) -> (Builder, Vec<User>) {
    let mut in_directory = Vec::new();
    if let Some(uri) = ldap_uri {
        let (acl, users) = directory(rng);
        in_directory = users;
        builder = builder.clients(&format!(
            "ldap:\n  uri: {uri}\n  user_dn: \"uid=%s,ou=people,dc=example,dc=org\"\n  \
             base_scope: \"dc=example,dc=org\"\n  membership_patterns:\n    \
             - \"(member=uid=%s,ou=people,dc=example,dc=org)\"\n    - \"(uid=%s)\"\n  \
             timeout: 2\n  acl:\n{acl}"
        ));
        eprintln!("model: LDAP users {in_directory:?}");
    }
    (builder, in_directory)
}

#[cfg(not(feature = "ldap"))]
fn with_directory(builder: Builder, _: Option<&str>, _: &mut Rng) -> (Builder, Vec<User>) {
    (builder, Vec::new())
}

/// The model run: one server, or (`redis_url`) two nodes of a cluster.
fn run_model(ldap_uri: Option<&str>, redis_url: Option<&str>) {
    let seed = env_number(
        "MODEL_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    )
    .max(1);
    let rounds = env_number("MODEL_ROUNDS", 6) as usize;
    let per_round = env_number("MODEL_PUBLISHES", 400) as usize;
    eprintln!("model: seed {seed} (reproduce with MODEL_SEED={seed})");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let mut builder = Server::builder()
        .server("backlog: {size: 100000, max_age: 0}")
        .payloaders(&["127.0.0.1/32"])
        .clients(&format!("secure_topics: [{}]", SECURE.join(", ")));
    if cfg!(feature = "tokens") {
        builder = builder.clients(&format!(
            "tokens: {{secret: \"{TOKEN_SECRET}\", cookie: pubsub_token, query: access_token}}"
        ));
    }
    let (builder, in_directory) = with_directory(builder, ldap_uri, &mut rng);
    let mut users = random_users(&mut rng, 0, &in_directory);
    let mut nodes: Vec<Server> = match redis_url {
        None => vec![builder.acl(&acl_yaml(&users)).start()],
        Some(url) => {
            let node = builder
                .section(&format!(
                    "cluster:\n  redis: {url}\n  stream: model\n  timeout: 5s\n"
                ))
                .acl(&acl_yaml(&users));
            (0..2)
                .map(|_| {
                    let srv = node.clone().start();
                    // It takes replays once it has loaded the stream.
                    assert!(
                        wait_until(T, || srv.replay_status() == 200),
                        "{}",
                        srv.log()
                    );
                    srv
                })
                .collect()
        }
    };
    // Which node a subscriber or publisher uses (the same random sequence
    // as before for a single node).
    let pick_node = |rng: &mut Rng, nodes: &[Server]| -> usize {
        if nodes.len() > 1 {
            rng.below(nodes.len())
        } else {
            0
        }
    };

    let mut history: Vec<Ev> = Vec::new();
    let mut publishers = Publishers::default();
    let mut n = 0u64;
    let (mut publishes, mut checked, mut deliveries) = (0usize, 0usize, 0usize);
    let mut tokens_refused = 0usize;
    for round in 0..rounds {
        if round > 0 {
            // A new ACL file, through SIGUSR2: new subscribers get it.
            users = random_users(&mut rng, round, &in_directory);
            for srv in &mut nodes {
                std::fs::write(srv.dir().join("pypubsub_acl.yaml"), acl_yaml(&users))
                    .expect("write ACL");
                let reloads = srv.log().matches("SIGUSR2: reloaded").count();
                srv.signal("USR2");
                assert!(
                    wait_until(T, || srv.log().matches("SIGUSR2: reloaded").count()
                        > reloads),
                    "ACL reload not logged"
                );
            }
        }
        let oracle = users.len() - 1;
        let oracle_spec = SubSpec {
            batches: vec![vec![]],
            path: "/".into(),
            creds: Creds::Right(oracle),
            sse: false,
            last_event_id: false,
            start: Start::Live,
        };
        let mut oracle_sub = open(&nodes[0], oracle_spec, &users, &history);
        let mut subs: Vec<Open> = Vec::new();
        let mut refused = 0;
        for _ in 0..10 + rng.below(6) {
            let spec = random_sub(&mut rng, &users, &history);
            let node = pick_node(&mut rng, &nodes);
            if spec.creds.is_bad_token() {
                // A 401, never a stream with fewer events than asked.
                let (headers, query) = spec.creds.request_parts(&users);
                let headers: String = headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\r\n"))
                    .collect();
                let r = nodes[node].request(
                    format!(
                        "GET {}{query} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n",
                        spec.path
                    )
                    .as_bytes(),
                );
                assert_eq!(r.status, 401, "seed {seed}: {spec:?}");
                refused += 1;
                continue;
            }
            subs.push(open(&nodes[node], spec, &users, &history));
        }
        tokens_refused += refused;

        let round_start = history.len();
        let mut accepted_n = Vec::new();
        for _ in 0..per_round {
            let k = 1 + rng.below(3);
            let mut topics: Vec<String> =
                rng.pick(&TOPICS, k).iter().map(|s| s.to_string()).collect();
            if rng.chance(25) {
                let j = 1 + rng.below(2);
                topics.extend(rng.pick(&SECURE, j).iter().map(|s| s.to_string()));
            }
            // Shuffle so that secured topics are not always last.
            let len = topics.len();
            topics.swap(rng.below(len), rng.below(len));
            let private = rng.chance(45);
            let creds = random_creds(&mut rng, &users);
            let payloader = rng.chance(80);
            let ip = if payloader { PAYLOADER_IP } else { STRANGER_IP };
            let path = format!(
                "{}/{}",
                if private { "/private" } else { "" },
                topics.join("/")
            );
            n += 1;
            let body = json!({ "n": n, "round": round });
            let node = pick_node(&mut rng, &nodes);
            let r = publishers.publish(&nodes[node], ip, &path, &creds, &users, &body);
            let seen = creds.on_publish();
            let want =
                may_publish(seen.user(&users), &topics, private, payloader) && !seen.is_bad_token();
            let want_status = match (seen.is_bad_token(), want) {
                (true, _) => 401,
                (false, true) => 202,
                (false, false) => 403,
            };
            publishes += 1;
            assert_eq!(
                r.status, want_status,
                "seed {seed}: PUT {path} from {ip} as {creds:?} (model says {want_status})\nusers: {users:?}",
            );
            if want {
                accepted_n.push((n, topics, private));
            }
        }
        // The oracle sees every accepted event: their timestamps and cursors.
        n += 1;
        let mark = n;
        let sentinel_topics: Vec<&str> = TOPICS.iter().chain(SECURE.iter()).copied().collect();
        let r = publishers.publish(
            &nodes[nodes.len() - 1],
            PAYLOADER_IP,
            &format!("/{}", sentinel_topics.join("/")),
            &Creds::Right(oracle),
            &users,
            &json!({ "sentinel": mark }),
        );
        assert_eq!(r.status, 202, "sentinel publish");
        let mut seen = Vec::new();
        loop {
            let v = next_event(&mut oracle_sub).expect("oracle stream stalled");
            if v.get("sentinel").is_some() {
                break;
            }
            seen.push(v);
        }
        assert_eq!(
            seen.iter()
                .map(|v| v["n"].as_u64().unwrap_or(0))
                .collect::<Vec<_>>(),
            accepted_n.iter().map(|a| a.0).collect::<Vec<_>>(),
            "seed {seed}: the oracle (sees all) missed or reordered events"
        );
        for ((n, topics, private), v) in accepted_n.into_iter().zip(&seen) {
            let mut got_topics: Vec<String> = v["pubsub_topics"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let mut want_topics = topics.clone();
            got_topics.sort();
            want_topics.sort();
            assert_eq!(
                got_topics, want_topics,
                "seed {seed}: pubsub_topics of n={n}"
            );
            let ts = &v["pubsub_timestamp"];
            history.push(Ev {
                n,
                topics,
                private,
                timestamp: ts.as_f64().expect("pubsub_timestamp"),
                timestamp_text: ts.to_string(),
                cursor: v["pubsub_cursor"].as_str().expect("cursor").to_string(),
            });
        }

        for o in &mut subs {
            let before = &history[..o.before.min(round_start)];
            let after = &history[round_start..];
            let want = expected(&o.spec, &users, before, after);
            let got = until_sentinel(o, mark)
                .unwrap_or_else(|e| panic!("seed {seed}: {:?}: {e}", o.spec));
            checked += o.before.min(round_start) + after.len();
            deliveries += got.len();
            if got != want {
                let extra: Vec<u64> = got.iter().filter(|x| !want.contains(x)).copied().collect();
                let missing: Vec<u64> = want.iter().filter(|x| !got.contains(x)).copied().collect();
                let show: BTreeMap<u64, &Ev> = history
                    .iter()
                    .filter(|e| extra.contains(&e.n) || missing.contains(&e.n))
                    .map(|e| (e.n, e))
                    .collect();
                panic!(
                    "seed {seed}, round {round}: subscriber {:?}\n  got {} events, model {}\n  \
                     extra {extra:?}\n  missing {missing:?}\n  those events: {show:?}\n  users: {users:?}",
                    o.spec,
                    got.len(),
                    want.len()
                );
            }
        }
        drop(subs);
        drop(oracle_sub);
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "seed {seed}: the model run is far slower than it should be"
        );
    }
    for srv in &nodes {
        let log = srv.log();
        assert!(!log.contains("panicked"), "server log:\n{log}");
    }
    eprintln!(
        "model: seed {seed}: {rounds} rounds, {publishes} publishes, {checked} \
         (subscriber, event) decisions checked, {deliveries} deliveries, \
         {tokens_refused} bad-token subscriptions refused, in {:.1?}",
        started.elapsed()
    );
}
