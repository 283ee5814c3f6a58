//! Login latency against the real server beside the cost of one argon2id hash with the
//! same (production) parameters, and the enumeration check: an unknown identifier must
//! cost what a wrong password costs. Run: `cargo bench -p st-peter-server --bench login`.
use std::time::{Duration, Instant};

use st_peter_proto::auth::v1 as pb;
use st_peter_server::domain::app::Settings;
use st_peter_server::domain::throttle::ThrottlePolicies;
use st_peter_server::secrets::password::{PasswordParams, Passwords};
use st_peter_testkit::TestServer;

const ROUNDS: usize = 60;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let passwords = Passwords::new(PasswordParams::OWASP, 1)?;
    let hash = passwords.hash_new("open sesame, said Ali Baba").await?;
    let mut hash_times = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        passwords
            .verify("open sesame, said Ali Baba", Some(&hash))
            .await?;
        hash_times.push(start.elapsed());
    }

    // Throttling off: this measures the work of a login, not the backoff that would
    // otherwise answer the repeated failures below without hashing.
    let settings = Settings {
        throttle: ThrottlePolicies::unlimited(),
        ..Settings::default()
    };
    let server = TestServer::builder().settings(settings).start().await;
    server
        .add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let client = server.grpc_client().await;
    let login = |identifier: &'static str, password: &'static str| {
        let mut client = client.clone();
        async move {
            let start = Instant::now();
            client
                .login(pb::LoginRequest {
                    identifier: identifier.into(),
                    password: password.into(),
                })
                .await?;
            anyhow::Ok(start.elapsed())
        }
    };

    let mut good = Vec::new();
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    // Interleaved so drift on a busy machine touches all three alike.
    for _ in 0..ROUNDS {
        good.push(login("lead-baker", "open sesame, said Ali Baba").await?);
        wrong.push(login("lead-baker", "wrong-password").await?);
        unknown.push(login("nobody-at-all", "wrong-password").await?);
    }

    let hash = median(hash_times);
    let (good, wrong, unknown) = (median(good), median(wrong), median(unknown));
    let ratio = |d: Duration| d.as_secs_f64() / hash.as_secs_f64();
    println!("argon2id m=19456 KiB t=2 p=1, median of {ROUNDS}:");
    println!("  one hash verification      {:>8.2} ms", ms(hash));
    println!(
        "  login, right password      {:>8.2} ms  ({:.2}x hash)",
        ms(good),
        ratio(good)
    );
    println!(
        "  login, wrong password      {:>8.2} ms  ({:.2}x hash)",
        ms(wrong),
        ratio(wrong)
    );
    println!(
        "  login, unknown identifier  {:>8.2} ms  ({:.2}x hash)",
        ms(unknown),
        ratio(unknown)
    );
    println!(
        "  enumeration ratio unknown/wrong = {:.3}  (1.000 means no timing signal)",
        unknown.as_secs_f64() / wrong.as_secs_f64()
    );
    Ok(())
}
