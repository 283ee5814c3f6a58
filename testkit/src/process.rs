//! A given `st-peter` binary as a process of its own: it picks its port and reports it
//! through `--ready-file`; a restart listens on the same port and database again.
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the binary may take to listen, or to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(60);

/// `$ST_PETER_BIN`, else `st-peter` in the calling test binary's target directory and
/// profile (`target/<profile>/deps/<test>` -> `target/<profile>/st-peter`), built with
/// cargo when missing. Suites of the server crate use `env!("CARGO_BIN_EXE_st-peter")`.
pub fn st_peter_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(bin) = std::env::var_os("ST_PETER_BIN") {
            return bin.into();
        }
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("st-peter");
        if !bin.exists() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "st-peter-server", "--bin", "st-peter"])
                .current_dir(root)
                .status()
                .unwrap();
            assert!(status.success(), "building st-peter failed");
        }
        bin
    })
}

type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// How a [`ServerProcess`] starts; see [`ServerProcess::builder`].
pub struct ProcessBuilder {
    binary: PathBuf,
    database_url: Option<String>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    on_stderr_line: Option<LineSink>,
}

impl ProcessBuilder {
    /// Serve this database (the default: a fresh SQLite file in the process's temp dir).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Extra `serve` arguments, e.g. pool settings or `--shutdown-grace`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// `ST_PETER_LOG` for the process.
    pub fn log_filter(self, filter: &str) -> Self {
        self.env("ST_PETER_LOG", filter)
    }

    /// Called with every stderr line as it comes (the lines are captured for
    /// [`ServerProcess::log`] either way).
    pub fn on_stderr_line(mut self, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_stderr_line = Some(Arc::new(sink));
        self
    }

    /// Starts the process and waits (blocking) until it has written its ready file.
    pub fn start(self) -> anyhow::Result<ServerProcess> {
        let mut server = self.into_process()?;
        server.spawn(crate::port::outside_ephemeral_range())?;
        server.wait_ready_blocking()?;
        Ok(server)
    }

    /// [`ProcessBuilder::start`] without blocking the async runtime while it waits.
    pub async fn start_async(self) -> anyhow::Result<ServerProcess> {
        let mut server = self.into_process()?;
        server.spawn(crate::port::outside_ephemeral_range())?;
        server.wait_ready().await?;
        Ok(server)
    }

    fn into_process(self) -> anyhow::Result<ServerProcess> {
        let dir = tempfile::tempdir()?;
        let database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("st-peter.db").display()));
        Ok(ServerProcess {
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: None,
            binary: self.binary,
            database_url,
            args: self.args,
            envs: self.envs,
            on_stderr_line: self.on_stderr_line,
            log: Arc::new(Mutex::new(String::new())),
            dir,
            child: None,
            started: Instant::now(),
        })
    }
}

/// The `st-peter serve` process; killed when dropped.
pub struct ServerProcess {
    pub addr: SocketAddr,
    /// The metrics listener's address, when started with `--metrics-listen` (the ready
    /// file's `metrics HOST:PORT` line).
    pub metrics_addr: Option<SocketAddr>,
    binary: PathBuf,
    database_url: String,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    on_stderr_line: Option<LineSink>,
    log: Arc<Mutex<String>>,
    /// The ready file and the default SQLite file.
    dir: tempfile::TempDir,
    child: Option<Child>,
    started: Instant,
}

impl ServerProcess {
    /// `binary serve` with no extra arguments, on a fresh SQLite file by default.
    pub fn builder(binary: impl Into<PathBuf>) -> ProcessBuilder {
        ProcessBuilder {
            binary: binary.into(),
            database_url: None,
            args: Vec::new(),
            envs: Vec::new(),
            on_stderr_line: None,
        }
    }

    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// A generated gRPC client on a plaintext connection.
    pub async fn grpc_client(&self) -> crate::AuthClient {
        crate::connect(self.addr).await
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status once the process has exited (without waiting).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().unwrap()
    }

    /// Everything the process (every start of it) wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to flush anything. Waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM, as an operator or an orchestrator stops it, and returns at once.
    pub fn send_sigterm(&self) {
        let pid = self.pid().expect("st-peter is not running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("st-peter did not exit after SIGTERM: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the stopped server again on the same port and database; waits until it
    /// listens.
    pub async fn restart(&mut self) {
        self.spawn(self.addr).unwrap();
        self.wait_ready().await.unwrap();
    }

    /// [`ServerProcess::restart`], blocking.
    pub fn restart_blocking(&mut self) {
        self.spawn(self.addr).unwrap();
        self.wait_ready_blocking().unwrap();
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.path().join("address")
    }

    fn spawn(&mut self, listen: SocketAddr) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "st-peter is already running");
        let ready_file = self.ready_file();
        let _ = std::fs::remove_file(&ready_file);
        let mut child = Command::new(&self.binary)
            .args(["serve", "--listen", &listen.to_string(), "--ready-file"])
            .arg(&ready_file)
            .args(&self.args)
            .env("ST_PETER_DATABASE_URL", &self.database_url)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| anyhow::anyhow!("starting {}: {error}", self.binary.display()))?;
        let stderr = child.stderr.take().unwrap();
        let (log, sink) = (self.log.clone(), self.on_stderr_line.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(sink) = &sink {
                    sink(&line);
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    /// One look at the ready file: `Ok(true)` once the address is there.
    fn check_ready(&mut self) -> anyhow::Result<bool> {
        if let Ok(text) = std::fs::read_to_string(self.ready_file()) {
            // The gRPC address on the first line; `metrics HOST:PORT` may follow.
            let mut lines = text.lines();
            self.addr = lines.next().unwrap_or_default().trim().parse()?;
            self.metrics_addr = lines
                .find_map(|line| line.strip_prefix("metrics "))
                .map(|address| address.trim().parse())
                .transpose()?;
            return Ok(true);
        }
        if let Some(status) = self.try_wait() {
            self.child = None;
            anyhow::bail!(
                "st-peter serve exited before listening ({status}): {}",
                self.log()
            );
        }
        if self.started.elapsed() > PATIENCE {
            self.kill();
            anyhow::bail!(
                "st-peter serve wrote no ready file within {PATIENCE:?}: {}",
                self.log()
            );
        }
        Ok(false)
    }

    fn wait_ready_blocking(&mut self) -> anyhow::Result<()> {
        while !self.check_ready()? {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        while !self.check_ready()? {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
