//! Revocation propagation (rows 7 and 7b): after a revocation, how long until each place
//! that had the token cached refuses it. The contract is 1 s for every replica and every
//! subscribed client cache.
//!
//! The places: a server's own verification cache (asked with a direct `VerifyToken`, no
//! client cache in between), the Rust client in this process, and the Go and TypeScript
//! clients in probe processes (`bench/probes`), each polling its own cached verify. Every
//! place stamps the wall clock when it first refuses, and the lag is that minus the wall
//! clock when the revocation was acknowledged (all on one machine). No place may hang the
//! bench: each wait has a limit, and a probe that does not answer is killed and fails its
//! row.
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;

/// How long after the acknowledgement a place may take to refuse before the bench stops
/// waiting for that revocation: three times the contract, so a lag past the contract is
/// still measured.
pub const WATCH_LIMIT: Duration = Duration::from_secs(3);
/// A place that let this many revocations in a row pass `WATCH_LIMIT` is no longer watched:
/// a client cache still on its TTL (a minute) would hold the run that long for each.
pub const GIVE_UP_AFTER: usize = 3;
/// The contract, the target on p99.
pub const CONTRACT: Duration = Duration::from_secs(1);
/// How often a place is asked while the bench waits for its refusal.
const POLL: Duration = Duration::from_millis(1);
/// Pollers and probes start this long before the revocation is sent.
const LEAD: Duration = Duration::from_millis(5);
/// A probe that is this much later than its own limit is wedged.
const PROBE_SLACK: Duration = Duration::from_secs(2);
/// For a probe to start and say `ready`, and to answer one `verify`.
const PROBE_START: Duration = Duration::from_secs(30);
const PROBE_VERIFY: Duration = Duration::from_secs(10);
/// For the admin CLI to revoke a session and exit.
const CLI_LIMIT: Duration = Duration::from_secs(30);
/// Between the warm-up verify and the first revocation: the clients connect (and open
/// their feed subscriptions) on their first verify.
const WARM_UP: Duration = Duration::from_millis(500);

/// The client probe programs; a missing one leaves its place out, saying so.
#[derive(Debug, Clone)]
pub struct Probes {
    /// The Go probe binary (`go build` of bench/probes/go).
    pub go: Option<PathBuf>,
    /// The TypeScript probe script (bench/probes/ts/probe.mjs), run with `node`.
    pub ts: Option<PathBuf>,
    pub node: PathBuf,
}

/// What one place measured over the revocations.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlaceLags {
    pub place: String,
    /// Per revocation, in order: µs from the acknowledgement to the first refusal (at or
    /// under 0 when it refused before the bench read the acknowledgement), or `None` when
    /// it had not refused within `WATCH_LIMIT`.
    pub lags_us: Vec<Option<i64>>,
    /// Set when the place stopped being watched after `GIVE_UP_AFTER` misses in a row.
    pub given_up: bool,
    /// What it last answered to a revocation it did not refuse in time.
    pub last_answer: Option<String>,
    /// Why the place could not be measured (further).
    pub failure: Option<String>,
}

impl PlaceLags {
    fn new(place: &str) -> Self {
        Self {
            place: place.into(),
            lags_us: Vec::new(),
            given_up: false,
            last_answer: None,
            failure: None,
        }
    }

    /// The lag at quantile `q`: `Some(None)` when it falls on a revocation not refused in
    /// time; `None` with no revocations at all.
    pub fn pick(&self, q: f64) -> Option<Option<i64>> {
        let mut sorted = self.lags_us.clone();
        sorted.sort_by_key(|lag| lag.map_or((1, 0), |us| (0, us)));
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).copied()
    }

    pub fn misses(&self) -> usize {
        self.lags_us.iter().filter(|lag| lag.is_none()).count()
    }

    fn watching(&self) -> bool {
        self.failure.is_none() && !self.given_up
    }

    fn record(&mut self, watch: anyhow::Result<Watch>, acknowledged: i128) {
        match watch {
            Ok(Watch::Refused(at)) => {
                self.lags_us.push(Some(((at - acknowledged) / 1000) as i64));
            }
            Ok(Watch::NotRefused(answer)) => {
                self.lags_us.push(None);
                self.last_answer = Some(answer);
                let tail = self.lags_us.iter().rev().take(GIVE_UP_AFTER);
                if tail.len() == GIVE_UP_AFTER && tail.clone().all(Option::is_none) {
                    self.given_up = true;
                }
            }
            Err(error) => self.failure = Some(format!("{error:#}")),
        }
    }
}

/// Row 7's figures: every place, and how long the revocations themselves took.
#[derive(Debug, serde::Serialize)]
pub struct Propagation {
    pub revocations: usize,
    pub places: Vec<PlaceLags>,
    /// Round trip of each revocation (Logout on A, or the CLI process), in µs.
    pub revoke_us: Vec<u64>,
}

impl Propagation {
    pub fn revoke_p50_ms(&self) -> f64 {
        let mut sorted = self.revoke_us.clone();
        sorted.sort_unstable();
        sorted
            .get(sorted.len().saturating_sub(1) / 2)
            .map_or(0.0, |&us| us as f64 / 1000.0)
    }
}

/// Row 7: replicas A and B on one database. For each of `revocations` tokens: log in on A,
/// verify on B directly and through every client connected to B (so each caches it), then
/// Logout on A and time each place's refusal from the acknowledgement.
pub async fn replicas(
    a: Channel,
    b_target: &str,
    (handle, password): (&str, &str),
    probes: &Probes,
    revocations: usize,
) -> anyhow::Result<Propagation> {
    let mut a = AuthServiceClient::new(a);
    let b = AuthServiceClient::new(
        tonic::transport::Endpoint::from_shared(b_target.to_owned())?
            .connect()
            .await?,
    );
    let mut places = vec![
        (
            PlaceLags::new("server B (its server cache; VerifyToken sent to B)"),
            Some(Cache::Server(b)),
        ),
        (
            PlaceLags::new("the Rust client cache (st-peter-client, in process)"),
            Some(Cache::Rust(st_peter_client::Client::connect(b_target)?)),
        ),
    ];
    let go = match &probes.go {
        Some(go) => Probe::start("Go probe", go, &[b_target.into()]).await,
        None => Err(anyhow::anyhow!("not run: no --go-probe given")),
    };
    let ts = match &probes.ts {
        Some(ts) => {
            Probe::start(
                "TypeScript probe",
                &probes.node,
                &[ts.into(), b_target.into()],
            )
            .await
        }
        None => Err(anyhow::anyhow!("not run: no --ts-probe given")),
    };
    for (place, probe) in [
        ("the Go client cache (probe process)", go),
        ("the TypeScript client cache (probe process)", ts),
    ] {
        let mut lags = PlaceLags::new(place);
        let cache = match probe {
            Ok(probe) => Some(Cache::Probe(probe)),
            Err(error) => {
                lags.failure = Some(format!("{error:#}"));
                None
            }
        };
        places.push((lags, cache));
    }

    // One token through every place first: the clients connect on their first verify.
    let warm = login(&mut a, handle, password).await?;
    for (lags, cache) in &mut places {
        let Some(cache) = cache.as_mut().filter(|_| lags.watching()) else {
            continue;
        };
        if let Err(error) = cache.fill(&warm).await {
            lags.failure = Some(format!("warm-up: {error:#}"));
        }
    }
    tokio::time::sleep(WARM_UP).await;

    let mut revoke_us = Vec::with_capacity(revocations);
    for _ in 0..revocations {
        let token = login(&mut a, handle, password).await?;
        let mut pending = Vec::new();
        for (index, (lags, cache)) in places.iter_mut().enumerate() {
            let Some(cache) = cache.as_mut().filter(|_| lags.watching()) else {
                continue;
            };
            if let Err(error) = cache.fill(&token).await {
                lags.failure = Some(format!("{error:#}"));
                continue;
            }
            match cache.watch(&token).await {
                Ok(watch) => pending.push((index, watch)),
                Err(error) => lags.failure = Some(format!("{error:#}")),
            }
        }
        tokio::time::sleep(LEAD).await;
        let sent = Instant::now();
        a.logout(pb::LogoutRequest {
            token: token.clone(),
        })
        .await
        .context("Logout on A")?;
        let acknowledged = unix_nanos();
        revoke_us.push(sent.elapsed().as_micros() as u64);
        let deadline = Instant::now() + WATCH_LIMIT;
        for (index, watch) in pending {
            let (lags, cache) = &mut places[index];
            let cache = cache.as_mut().expect("a watched place has its cache");
            let outcome = cache.finish(watch, deadline).await;
            lags.record(outcome, acknowledged);
        }
    }
    Ok(Propagation {
        revocations,
        places: places.into_iter().map(|(lags, _)| lags).collect(),
        revoke_us,
    })
}

/// Row 7b: `st-peter session revoke` (the admin CLI, its own process) on the database of
/// the running server behind `channel`; from the CLI's successful exit to that server's
/// refusal of the token.
pub async fn cli_revoke(
    channel: Channel,
    binary: &Path,
    database_url: &str,
    (handle, password): (&str, &str),
    runs: usize,
) -> anyhow::Result<Propagation> {
    let mut rpc = AuthServiceClient::new(channel);
    let mut lags = PlaceLags::new("the running server (direct VerifyToken)");
    let mut revoke_us = Vec::with_capacity(runs);
    for _ in 0..runs {
        let token = login(&mut rpc, handle, password).await?;
        let mut server = Cache::Server(rpc.clone());
        server.fill(&token).await?;
        let watch = server.watch(&token).await?;
        // At no fixed phase of the server's reads of the log: a loop as regular as this
        // one would otherwise land each revocation at the same point of that interval.
        let jitter = Duration::from_nanos((unix_nanos() % 50_000_000) as u64);
        tokio::time::sleep(LEAD + jitter).await;
        let started = Instant::now();
        let mut cli = Command::new(binary);
        cli.args(["session", "revoke", "--token-env", "ST_PETER_BENCH_REVOKE"])
            .env("ST_PETER_DATABASE_URL", database_url)
            .env("ST_PETER_BENCH_REVOKE", &token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(CLI_LIMIT, cli.output())
            .await
            .with_context(|| format!("st-peter session revoke did not exit within {CLI_LIMIT:?}"))?
            .context("running st-peter session revoke")?;
        if !output.status.success() {
            bail!(
                "st-peter session revoke exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let exited = unix_nanos();
        revoke_us.push(started.elapsed().as_micros() as u64);
        let outcome = server.finish(watch, Instant::now() + WATCH_LIMIT).await;
        lags.record(outcome, exited);
        if !lags.watching() {
            break;
        }
    }
    Ok(Propagation {
        revocations: runs,
        places: vec![lags],
        revoke_us,
    })
}

async fn login(
    rpc: &mut AuthServiceClient<Channel>,
    handle: &str,
    password: &str,
) -> anyhow::Result<String> {
    let reply = rpc
        .login(pb::LoginRequest {
            identifier: handle.into(),
            password: password.into(),
        })
        .await
        .context("Login")?
        .into_inner();
    match reply.result {
        Some(pb::login_response::Result::Authenticated(auth)) => Ok(auth.token),
        other => bail!("login did not authenticate: {other:?}"),
    }
}

/// Nanoseconds since the Unix epoch, the unit the probes answer in.
fn unix_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// One place that caches verifications.
enum Cache {
    /// A server, asked directly: what it answers is its own cache (or its store).
    Server(AuthServiceClient<Channel>),
    /// The Rust client, in this process.
    Rust(st_peter_client::Client),
    /// A client in a probe process.
    Probe(Probe),
}

/// How one place ended a watch.
enum Watch {
    /// Refused at this wall clock (ns since the epoch).
    Refused(i128),
    /// Still not refused at the limit; what it answered last.
    NotRefused(String),
}

/// A watch under way.
enum Watching {
    Task {
        task: JoinHandle<Watch>,
        last: Arc<Mutex<String>>,
    },
    Probe,
}

/// One verify, as a poller sees it.
enum Answer {
    Valid,
    Refused,
    Other(String),
}

impl Cache {
    /// Verifies a fresh token here, so it is cached; it must be valid.
    async fn fill(&mut self, token: &str) -> anyhow::Result<()> {
        let answer = match self {
            Cache::Server(rpc) => verify_direct(rpc.clone(), token.to_owned()).await,
            Cache::Rust(client) => verify_rust(client.clone(), token.to_owned()).await,
            Cache::Probe(probe) => {
                let line = probe
                    .ask(&format!("verify {token}"), "verify", PROBE_VERIFY)
                    .await?;
                if line == "valid" {
                    return Ok(());
                }
                bail!("{} answered `{line}` to a fresh token", probe.name);
            }
        };
        match answer {
            Answer::Valid => Ok(()),
            Answer::Refused => bail!("a fresh token was refused"),
            Answer::Other(error) => bail!("verifying a fresh token: {error}"),
        }
    }

    /// Starts polling this place until it refuses the token.
    async fn watch(&mut self, token: &str) -> anyhow::Result<Watching> {
        let last = Arc::new(Mutex::new(String::from("valid")));
        let task = match self {
            Cache::Server(rpc) => {
                let (rpc, token) = (rpc.clone(), token.to_owned());
                tokio::spawn(poll(
                    move || verify_direct(rpc.clone(), token.clone()),
                    last.clone(),
                ))
            }
            Cache::Rust(client) => {
                let (client, token) = (client.clone(), token.to_owned());
                tokio::spawn(poll(
                    move || verify_rust(client.clone(), token.clone()),
                    last.clone(),
                ))
            }
            Cache::Probe(probe) => {
                let limit = (WATCH_LIMIT + LEAD).as_millis();
                probe.send(&format!("await {token} {limit}")).await?;
                return Ok(Watching::Probe);
            }
        };
        Ok(Watching::Task { task, last })
    }

    /// Waits for the watch to end, at most until `deadline` (a probe, which keeps its own
    /// limit, a little longer before it counts as wedged).
    async fn finish(&mut self, watching: Watching, deadline: Instant) -> anyhow::Result<Watch> {
        match (self, watching) {
            (_, Watching::Task { mut task, last }) => {
                match tokio::time::timeout_at(deadline.into(), &mut task).await {
                    Ok(watch) => Ok(watch?),
                    Err(_) => {
                        task.abort();
                        let last = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        Ok(Watch::NotRefused(last))
                    }
                }
            }
            (Cache::Probe(probe), Watching::Probe) => {
                let within = deadline.saturating_duration_since(Instant::now()) + PROBE_SLACK;
                let line = probe.answer("await", within).await?;
                if let Some(nanos) = line.strip_prefix("refused ") {
                    let nanos = nanos
                        .trim()
                        .parse()
                        .with_context(|| format!("{}: bad answer `{line}`", probe.name))?;
                    Ok(Watch::Refused(nanos))
                } else if let Some(last) = line.strip_prefix("timeout ") {
                    Ok(Watch::NotRefused(last.to_owned()))
                } else {
                    bail!("{} answered `{line}` to await", probe.name)
                }
            }
            _ => unreachable!("a probe watch is finished on its probe"),
        }
    }
}

/// Asks every `POLL` until the answer is a refusal; the caller bounds it.
async fn poll<F, Fut>(verify: F, last: Arc<Mutex<String>>) -> Watch
where
    F: Fn() -> Fut,
    Fut: Future<Output = Answer>,
{
    loop {
        match verify().await {
            Answer::Refused => return Watch::Refused(unix_nanos()),
            Answer::Valid => {}
            Answer::Other(error) => *last.lock().unwrap_or_else(|e| e.into_inner()) = error,
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn verify_direct(mut rpc: AuthServiceClient<Channel>, token: String) -> Answer {
    match rpc.verify_token(pb::VerifyTokenRequest { token }).await {
        Ok(_) => Answer::Valid,
        Err(status) if status.code() == Code::Unauthenticated => Answer::Refused,
        Err(status) => Answer::Other(format!("error {status}")),
    }
}

async fn verify_rust(client: st_peter_client::Client, token: String) -> Answer {
    match client.verify_token(&token).await {
        Ok(_) => Answer::Valid,
        Err(st_peter_client::Error::InvalidToken) => Answer::Refused,
        Err(error) => Answer::Other(format!("error {error}")),
    }
}

/// A client probe: a process speaking the line protocol of bench/probes (`ready`;
/// `verify TOKEN`; `await TOKEN LIMIT_MS`), killed when dropped.
struct Probe {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Probe {
    /// Starts `program args...` and waits for its `ready`.
    async fn start(name: &str, program: &Path, args: &[OsString]) -> anyhow::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {name} ({})", program.display()))?;
        let (stdin, stdout, stderr) = (
            child.stdin.take().context("probe stdin")?,
            child.stdout.take().context("probe stdout")?,
            child.stderr.take().context("probe stderr")?,
        );
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let prefix = name.to_owned();
        tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("  {prefix}: {line}");
            }
        });
        let mut probe = Self {
            name: name.to_owned(),
            child,
            stdin,
            lines,
        };
        let ready = probe.answer("start", PROBE_START).await?;
        if ready != "ready" {
            bail!("the {name} said `{ready}` instead of `ready`");
        }
        Ok(probe)
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let sent = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.write_all(b"\n").await?;
            self.stdin.flush().await
        };
        sent.await
            .with_context(|| format!("the {} no longer reads its commands", self.name))
    }

    /// The next answer line; a probe silent for `within` is killed and fails.
    async fn answer(&mut self, command: &str, within: Duration) -> anyhow::Result<String> {
        match tokio::time::timeout(within, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => {
                let status = tokio::time::timeout(Duration::from_secs(1), self.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map_or_else(|| "still running".into(), |s| s.to_string());
                bail!(
                    "the {} closed its output ({status}) instead of answering `{command}`",
                    self.name
                )
            }
            Err(_) => {
                let _ = self.child.start_kill();
                bail!(
                    "the {} is wedged: no answer to `{command}` within {:.1} s (killed)",
                    self.name,
                    within.as_secs_f64()
                )
            }
        }
    }

    async fn ask(&mut self, line: &str, command: &str, within: Duration) -> anyhow::Result<String> {
        self.send(line).await?;
        self.answer(command, within).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_count_a_revocation_not_refused_as_the_slowest() {
        let mut lags = PlaceLags::new("p");
        lags.lags_us = vec![Some(30), None, Some(-2), Some(10)];
        assert_eq!(lags.pick(0.0), Some(Some(-2)));
        assert_eq!(lags.pick(0.5), Some(Some(30)));
        assert_eq!(lags.pick(0.99), Some(None));
        assert_eq!(lags.misses(), 1);
        assert_eq!(PlaceLags::new("q").pick(0.5), None);
    }

    #[test]
    fn a_place_is_given_up_after_misses_in_a_row_only() {
        let mut lags = PlaceLags::new("p");
        for _ in 0..GIVE_UP_AFTER - 1 {
            lags.record(Ok(Watch::NotRefused("valid".into())), 0);
        }
        lags.record(Ok(Watch::Refused(5_000)), 0);
        lags.record(Ok(Watch::NotRefused("valid".into())), 0);
        assert!(lags.watching());
        for _ in 0..GIVE_UP_AFTER - 1 {
            lags.record(Ok(Watch::NotRefused("valid".into())), 0);
        }
        assert!(!lags.watching());
        assert_eq!(lags.lags_us[GIVE_UP_AFTER - 1], Some(5));
    }
}
