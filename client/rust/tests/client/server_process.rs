//! The `st-peter` binary as a process of its own, for tests that stop it with SIGTERM and
//! start it again on the same port and SQLite file, as an operator restarting it would.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the binary may take to listen, or to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(30);

/// `$ST_PETER_BIN`, else `st-peter` next to this test binary's directory (the same target
/// directory and profile), built with cargo when missing.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(bin) = std::env::var_os("ST_PETER_BIN") {
            return bin.into();
        }
        // target/<profile>/deps/client-<hash> -> target/<profile>/st-peter
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("st-peter");
        if !bin.exists() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
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

pub struct ServerProcess {
    pub addr: SocketAddr,
    db_url: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: usize,
}

impl ServerProcess {
    /// Starts `st-peter serve` on a free loopback port with a fresh SQLite file.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}", dir.path().join("st-peter.db").display());
        // Bound and released: nothing listens there until the server does.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut server = Self {
            addr,
            db_url,
            dir,
            child: None,
            starts: 0,
        };
        server.resume().await;
        server
    }

    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the server again on the same port and database; waits until it listens.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "st-peter is already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(binary())
            .args(["serve", "--listen", &self.addr.to_string()])
            .args(["--database-url", &self.db_url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("st-peter exited at start ({status}): {}", self.log());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "st-peter did not listen on {}: {}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, as an operator or an orchestrator stops it; waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("st-peter is not running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("st-peter did not exit after SIGTERM: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates a user with the admin CLI on the same database.
    pub fn add_user(&self, handle: &str, password: &str) {
        use std::io::Write as _;
        let mut admin = Command::new(binary())
            .args(["user", "add", "--handle", handle, "--password-stdin"])
            .args(["--database-url", &self.db_url, "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(admin.stdin.take().unwrap(), "{password}").unwrap();
        let output = admin.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "st-peter user add: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// What the running (or last) server wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("st-peter-{}.log", self.starts))
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
