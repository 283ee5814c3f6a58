//! Throwaway PostgreSQL databases for tests and benchmarks (on a cluster such as the one
//! `scripts/pg.sh run` starts).
use sqlx::Connection;

/// Creates an empty database named `{prefix}_{random}` on the cluster `server_url` points
/// at, and answers its URL (`server_url` with the new database's name).
pub async fn create_postgres_database(server_url: &str, prefix: &str) -> anyhow::Result<String> {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(with_database(server_url, &name))
}

/// `url` with its database path replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{url}/{name}"),
    }
}
