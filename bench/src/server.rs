//! The real `st-peter` binary under test: started on a free port with its own database,
//! watched for its resident memory, stopped at the end.
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub database_url: String,
    binary: PathBuf,
    peak_rss_kib: Arc<AtomicU64>,
}

impl Server {
    /// Starts `binary serve` on `database_url` with default settings (the figures are for
    /// what an operator gets without tuning), and samples its peak RSS.
    pub fn start(binary: &Path, database_url: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("ST_PETER_DATABASE_URL", database_url)
            .env("ST_PETER_LOG", "warn,st_peter_server::cli=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("server stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line
                        .split("address=")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|addr| addr.parse::<SocketAddr>().ok())
                    {
                        let _ = tx.send(addr);
                        sent = true;
                        continue;
                    }
                }
                eprintln!("  server: {line}");
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                bail!("the server did not report its address within 60 s");
            }
        };
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let pid = child.id();
        let peak = peak_rss_kib.clone();
        // VmHWM is the kernel's own high-water mark; sampling it keeps the last value seen
        // even after the process has exited.
        std::thread::spawn(move || {
            while let Some(kib) = high_water_mark_kib(pid) {
                peak.fetch_max(kib, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Ok(Self {
            child,
            addr,
            database_url: database_url.to_owned(),
            binary: binary.to_owned(),
            peak_rss_kib,
        })
    }

    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn peak_rss_mib(&self) -> f64 {
        let now = high_water_mark_kib(self.child.id()).unwrap_or(0);
        self.peak_rss_kib.fetch_max(now, Ordering::Relaxed);
        self.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    /// Runs an admin command of the same binary on the same database.
    pub fn admin(&self, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<String> {
        let output = Command::new(&self.binary)
            .args(args)
            .env("ST_PETER_DATABASE_URL", &self.database_url)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            bail!(
                "st-peter {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn high_water_mark_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}
