//! The real `st-peter` binary under test: started on a free port with its own database
//! (through `st-peter-testkit`, which learns the address from `--ready-file`), watched for
//! its resident memory, stopped at the end.
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use st_peter_testkit::ServerProcess;

pub struct Server {
    process: ServerProcess,
    pub addr: SocketAddr,
    pub database_url: String,
    peak_rss_kib: Arc<AtomicU64>,
}

impl Server {
    /// Starts `binary serve` on `database_url` with default settings (the figures are for
    /// what an operator gets without tuning), and samples its peak RSS.
    pub fn start(binary: &Path, database_url: &str) -> anyhow::Result<Self> {
        Self::start_with(binary, database_url, &[])
    }

    /// [`Server::start`] with extra `serve` arguments.
    pub fn start_with(binary: &Path, database_url: &str, args: &[&str]) -> anyhow::Result<Self> {
        let process = ServerProcess::builder(binary)
            .database_url(database_url)
            .args(args)
            .log_filter("warn")
            .on_stderr_line(|line| eprintln!("  server: {line}"))
            .start()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = process.pid().context("the server is not running")?;
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
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
            addr: process.addr,
            database_url: database_url.to_owned(),
            process,
            peak_rss_kib,
        })
    }

    pub fn target(&self) -> String {
        self.process.target()
    }

    /// Where `/metrics` is served, when started with `--metrics-listen`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.process.metrics_addr
    }

    pub fn peak_rss_mib(&self) -> f64 {
        let now = self
            .process
            .pid()
            .and_then(high_water_mark_kib)
            .unwrap_or(0);
        self.peak_rss_kib.fetch_max(now, Ordering::Relaxed);
        self.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    /// CPU time (user and system, all threads) the server has used so far, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.process.pid().context("the server is not running")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which is in parentheses and may hold spaces):
        // state is field 3, utime 14 and stime 15, in clock ticks.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("unreadable /proc stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks = |n: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(n - 3)
                .context("short /proc stat")?
                .parse::<f64>()?)
        };
        Ok((ticks(14)? + ticks(15)?) / clock_ticks_per_second())
    }

    /// Runs an admin command of the same binary on the same database.
    pub fn admin(&self, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<String> {
        let output = Command::new(self.process.binary())
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

fn high_water_mark_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// The kernel's clock tick (`getconf CLK_TCK`), 100 on every Linux this runs on.
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|ticks| ticks.trim().parse().ok())
        .unwrap_or(100.0)
}
