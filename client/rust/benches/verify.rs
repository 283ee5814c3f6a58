//! Cached `verify_token` cost and uncached calls per second against a local server.
//! Run: `cargo bench -p st-peter-client --bench verify`.
use std::time::{Duration, Instant};

use st_peter_client::{Client, LoginOutcome};

const CACHED_CALLS: u32 = 1_000_000;
const UNCACHED_SECONDS: u64 = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The real serving path; hash cost does not matter here, only verification is measured.
    let server = st_peter_testkit::TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let target = server.target();

    let cached = Client::connect(target.clone())?;
    let LoginOutcome::Authenticated(session) = cached
        .login("cashier", "knock knock, who goes there")
        .await?
    else {
        anyhow::bail!("login did not authenticate");
    };
    let token = session.token;
    cached.verify_token(&token).await?;
    let start = Instant::now();
    for _ in 0..CACHED_CALLS {
        std::hint::black_box(cached.verify_token(std::hint::black_box(&token)).await?);
    }
    let cached_ns = start.elapsed().as_nanos() as f64 / f64::from(CACHED_CALLS);

    // One session per caller: single flight would otherwise merge concurrent calls.
    let mut tokens = Vec::new();
    for _ in 0..32 {
        if let LoginOutcome::Authenticated(session) = cached
            .login("cashier", "knock knock, who goes there")
            .await?
        {
            tokens.push(session.token);
        }
    }
    let uncached = Client::builder(target)
        .cache_ttl(Duration::ZERO)
        .invalid_token_ttl(Duration::ZERO)
        .build()?;
    let sequential = rate(&uncached, &tokens[..1]).await?;
    let concurrent = rate(&uncached, &tokens).await?;

    println!("verify_token, client side");
    println!("  cached:   {cached_ns:>10.0} ns/call  ({CACHED_CALLS} calls, one token)");
    println!("  uncached: {sequential:>10.0} calls/s  (1 caller, each call an RPC)");
    println!("  uncached: {concurrent:>10.0} calls/s  (32 concurrent callers)");
    println!(
        "  ratio cached/uncached speed: {:.0}x",
        1e9 / cached_ns / concurrent
    );
    Ok(())
}

/// Calls per second with one caller per token, each call an RPC.
async fn rate(client: &Client, tokens: &[String]) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(UNCACHED_SECONDS);
    let start = Instant::now();
    let tasks = tokens.iter().map(|token| {
        let client = client.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < deadline {
                client.verify_token(&token).await?;
                calls += 1;
            }
            anyhow::Ok(calls)
        })
    });
    let mut total = 0;
    for task in tasks.collect::<Vec<_>>() {
        total += task.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
