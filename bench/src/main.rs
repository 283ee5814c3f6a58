//! The st-peter benchmark suite. Absolute figures drift on a shared machine, so each one is
//! printed beside a baseline measured in the same run, and judged by the ratio.
//!
//! Run through `scripts/bench.sh [--quick]`, which builds in release and passes the server
//! binary (and a throwaway PostgreSQL when it can start one).
mod flood;
mod load;
mod propagation;
mod scenarios;
mod server;
mod sizing;
mod stock;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::scenarios::{Plan, Report};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks st-peter against baselines from the same run.")]
struct Args {
    /// The `st-peter` binary to benchmark (a release build).
    #[arg(long, default_value = "target/release/st-peter")]
    server_bin: PathBuf,
    /// Short phases (and fewer revocations timed): the whole run in a few minutes.
    #[arg(long)]
    quick: bool,
    /// Also measure the PostgreSQL rows (1, 1b, 1c, 5, and the two replicas of row 7) on
    /// this database (it must be empty or disposable).
    #[arg(long, env = "ST_PETER_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Where to write results.json and RESULTS.md (RESULTS.md only for a full run).
    #[arg(long, default_value = "bench")]
    out_dir: PathBuf,
    /// ghz (grpc-go) for the stock-client rows; without it they are skipped.
    #[arg(long)]
    ghz: Option<PathBuf>,
    /// h2load (nghttp2) for the stock-client rows; without it they are skipped.
    #[arg(long)]
    h2load: Option<PathBuf>,
    /// The Go client probe (a `go build` of bench/probes/go) for the revocation rows;
    /// without it the Go client's row says it was not run.
    #[arg(long)]
    go_probe: Option<PathBuf>,
    /// The TypeScript client probe (bench/probes/ts/probe.mjs, over client/ts/dist).
    #[arg(long)]
    ts_probe: Option<PathBuf>,
    /// The Node.js that runs the TypeScript probe.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// Only the revocation propagation rows (7, 7b), e.g. to re-time them after a client
    /// change; prints the table and writes no results file.
    #[arg(long)]
    revocation_only: bool,
    /// Instead of the suite: the sizing figures (logins and VerifyToken per core, server
    /// memory and database size at each of --sizing-sessions live sessions).
    #[arg(long)]
    sizing: bool,
    /// With --sizing: leave out the memory and disk part (the throughput part alone).
    #[arg(long, requires = "sizing")]
    no_memory: bool,
    /// With --sizing: leave out the throughput part (the memory and disk part alone).
    #[arg(long, requires = "sizing")]
    no_throughput: bool,
    /// With --sizing: the live session counts memory and disk are measured at.
    #[arg(
        long,
        requires = "sizing",
        value_delimiter = ',',
        default_value = "1000,1000000,10000000"
    )]
    sizing_sessions: Vec<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let phase = if args.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    if args.sizing {
        let plan = sizing::SizingPlan {
            binary: args.server_bin.clone(),
            phase,
            fill: phase * 2,
            sessions: args.sizing_sessions.clone(),
            throughput: !args.no_throughput,
            memory: !args.no_memory,
            postgres_url: args.postgres_url.clone(),
        };
        let sizing = sizing::run(&plan).await?;
        println!("\n{}", sizing.markdown());
        std::fs::create_dir_all(&args.out_dir)?;
        std::fs::write(
            args.out_dir.join("results-sizing.json"),
            serde_json::to_string_pretty(&sizing)?,
        )?;
        return Ok(());
    }
    let plan = Plan {
        binary: args.server_bin.clone(),
        phase,
        // About 20 s in a full run, as the issue that asked for the row measured it.
        flood: if args.quick {
            Duration::from_secs(6)
        } else {
            Duration::from_secs(20)
        },
        quick: args.quick,
        revocation_only: args.revocation_only,
        postgres_url: args.postgres_url.clone(),
        ghz: args.ghz.clone(),
        h2load: args.h2load.clone(),
        // Row 7 (two replicas) and row 7b (the admin CLI): revocations timed.
        revocations: if args.quick { 40 } else { 200 },
        cli_revocations: if args.quick { 10 } else { 20 },
        probes: propagation::Probes {
            go: args.go_probe.clone(),
            ts: args.ts_probe.clone(),
            node: args.node.clone(),
        },
    };
    let report: Report = scenarios::run_all(&plan).await?;
    let table = report.markdown();
    println!("\n{table}");
    if args.revocation_only {
        return Ok(());
    }
    std::fs::create_dir_all(&args.out_dir)?;
    let json_name = if args.quick {
        "results-quick.json"
    } else {
        "results.json"
    };
    std::fs::write(
        args.out_dir.join(json_name),
        serde_json::to_string_pretty(&report)?,
    )?;
    if !args.quick {
        std::fs::write(args.out_dir.join("RESULTS.md"), report.document(&table))?;
    }
    Ok(())
}
