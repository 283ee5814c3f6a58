//! The store as the traces see it: every method delegates to the real store inside a
//! client span named after the operation (`store.find_user`), with `db.system.name` and
//! `db.operation.name`; no argument is recorded (they hold hashes of secrets and user
//! identifiers). A call made outside a traced RPC (the background purge, the health
//! probe, the revocation follower) opens no span, so they do not start traces of their
//! own. Installed only when traces are exported ([`wrap_store`]).
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::clock::UnixMillis;
use crate::error::Result;
use crate::secrets::token::SecretHash;
use crate::store::*;

use super::TARGET;

/// The store wrapped in a [`TracedStore`] when traces are exported; unchanged otherwise.
/// `database_url` names the database system (`sqlite`, `postgresql`).
pub fn wrap_store(store: Arc<dyn Store>, database_url: &str) -> Arc<dyn Store> {
    if !super::enabled() {
        return store;
    }
    let system = if database_url.starts_with("postgres") {
        "postgresql"
    } else {
        "sqlite"
    };
    Arc::new(TracedStore {
        inner: store,
        system,
    })
}

/// Delegates every call to `inner`, each in a span of its own.
pub struct TracedStore {
    inner: Arc<dyn Store>,
    system: &'static str,
}

impl TracedStore {
    async fn traced<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        // Only inside a traced call: the current span's context is a valid OTel span.
        let current = tracing::Span::current();
        if current.is_none() || !current.context().span().span_context().is_valid() {
            return call.await;
        }
        let span = tracing::info_span!(
            target: TARGET,
            "store",
            otel.name = %format_args!("store.{operation}"),
            otel.kind = "client",
            db.system.name = self.system,
            db.operation.name = operation,
        );
        call.instrument(span).await
    }
}

#[async_trait]
impl Store for TracedStore {
    async fn create_user(&self, user: &NewUser) -> Result<()> {
        self.traced("create_user", self.inner.create_user(user))
            .await
    }

    async fn import_user(&self, user: &NewUser, disabled: bool, roles: &[String]) -> Result<bool> {
        self.traced("import_user", self.inner.import_user(user, disabled, roles))
            .await
    }

    async fn find_user(&self, identifier: &Identifier) -> Result<Option<UserRecord>> {
        self.traced("find_user", self.inner.find_user(identifier))
            .await
    }

    async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRecord>> {
        self.traced("find_user_by_id", self.inner.find_user_by_id(id))
            .await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.traced("list_users", self.inner.list_users()).await
    }

    async fn set_disabled(&self, user_id: &str, disabled: bool, now: UnixMillis) -> Result<bool> {
        self.traced(
            "set_disabled",
            self.inner.set_disabled(user_id, disabled, now),
        )
        .await
    }

    async fn change_password(
        &self,
        user_id: &str,
        hash: &str,
        revoke: Option<RevokeSessions<'_>>,
        now: UnixMillis,
    ) -> Result<u64> {
        self.traced(
            "change_password",
            self.inner.change_password(user_id, hash, revoke, now),
        )
        .await
    }

    async fn rehash_password(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
        now: UnixMillis,
    ) -> Result<bool> {
        self.traced(
            "rehash_password",
            self.inner.rehash_password(user_id, old_hash, new_hash, now),
        )
        .await
    }

    async fn grant_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool> {
        self.traced("grant_role", self.inner.grant_role(user_id, role, now))
            .await
    }

    async fn revoke_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool> {
        self.traced("revoke_role", self.inner.revoke_role(user_id, role, now))
            .await
    }

    async fn roles(&self, user_id: &str) -> Result<Vec<String>> {
        self.traced("roles", self.inner.roles(user_id)).await
    }

    async fn create_api_key(&self, key: NewApiKey<'_>) -> Result<()> {
        self.traced("create_api_key", self.inner.create_api_key(key))
            .await
    }

    async fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>> {
        self.traced("api_keys", self.inner.api_keys(user_id)).await
    }

    async fn revoke_api_key(&self, key_id: &str, now: UnixMillis) -> Result<Option<(String, u64)>> {
        self.traced("revoke_api_key", self.inner.revoke_api_key(key_id, now))
            .await
    }

    async fn exchange_api_key(
        &self,
        exchange: ApiKeyExchange<'_>,
    ) -> Result<Option<ExchangedSession>> {
        self.traced("exchange_api_key", self.inner.exchange_api_key(exchange))
            .await
    }

    async fn set_totp_secret(
        &self,
        user_id: &str,
        sealed_secret: Option<&[u8]>,
        recovery_code_hashes: &[SecretHash],
        now: UnixMillis,
    ) -> Result<()> {
        self.traced(
            "set_totp_secret",
            self.inner
                .set_totp_secret(user_id, sealed_secret, recovery_code_hashes, now),
        )
        .await
    }

    async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[SecretHash],
        now: UnixMillis,
    ) -> Result<bool> {
        self.traced(
            "replace_recovery_codes",
            self.inner.replace_recovery_codes(user_id, hashes, now),
        )
        .await
    }

    async fn put_totp_enrollment(&self, enrollment: NewTotpEnrollment<'_>) -> Result<()> {
        self.traced(
            "put_totp_enrollment",
            self.inner.put_totp_enrollment(enrollment),
        )
        .await
    }

    async fn attempt_totp_enrollment(
        &self,
        id_hash: &SecretHash,
        user_id: &str,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<Vec<u8>>> {
        self.traced(
            "attempt_totp_enrollment",
            self.inner
                .attempt_totp_enrollment(id_hash, user_id, now, max_attempts),
        )
        .await
    }

    async fn confirm_totp_enrollment(
        &self,
        confirmation: TotpConfirmation<'_>,
    ) -> Result<Option<u64>> {
        self.traced(
            "confirm_totp_enrollment",
            self.inner.confirm_totp_enrollment(confirmation),
        )
        .await
    }

    async fn unused_recovery_codes(&self, user_id: &str) -> Result<u64> {
        self.traced(
            "unused_recovery_codes",
            self.inner.unused_recovery_codes(user_id),
        )
        .await
    }

    async fn create_session(&self, session: NewSession<'_>) -> Result<()> {
        self.traced("create_session", self.inner.create_session(session))
            .await
    }

    async fn session_owner(
        &self,
        token_hash: &SecretHash,
        now: UnixMillis,
    ) -> Result<Option<SessionOwner>> {
        self.traced("session_owner", self.inner.session_owner(token_hash, now))
            .await
    }

    async fn revoke_session(&self, token_hash: &SecretHash, now: UnixMillis) -> Result<bool> {
        self.traced("revoke_session", self.inner.revoke_session(token_hash, now))
            .await
    }

    async fn revoke_user_sessions(
        &self,
        revoke: RevokeSessions<'_>,
        now: UnixMillis,
    ) -> Result<u64> {
        self.traced(
            "revoke_user_sessions",
            self.inner.revoke_user_sessions(revoke, now),
        )
        .await
    }

    async fn live_sessions(&self, user_id: &str, now: UnixMillis) -> Result<Vec<SessionRecord>> {
        self.traced("live_sessions", self.inner.live_sessions(user_id, now))
            .await
    }

    async fn revoke_session_by_id(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        now: UnixMillis,
    ) -> Result<Option<SecretHash>> {
        self.traced(
            "revoke_session_by_id",
            self.inner.revoke_session_by_id(session_id, user_id, now),
        )
        .await
    }

    async fn note_sessions_seen(&self, seen: &[(SecretHash, UnixMillis)]) -> Result<()> {
        self.traced("note_sessions_seen", self.inner.note_sessions_seen(seen))
            .await
    }

    async fn create_challenge(
        &self,
        id_hash: &SecretHash,
        user_id: &str,
        created_at: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<()> {
        self.traced(
            "create_challenge",
            self.inner
                .create_challenge(id_hash, user_id, created_at, expires_at),
        )
        .await
    }

    async fn attempt_challenge(
        &self,
        id_hash: &SecretHash,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<ChallengeAttempt>> {
        self.traced(
            "attempt_challenge",
            self.inner.attempt_challenge(id_hash, now, max_attempts),
        )
        .await
    }

    async fn complete_two_factor(
        &self,
        challenge_hash: &SecretHash,
        factor: SecondFactor<'_>,
        session: NewSession<'_>,
    ) -> Result<TwoFactorCompletion> {
        self.traced(
            "complete_two_factor",
            self.inner
                .complete_two_factor(challenge_hash, factor, session),
        )
        .await
    }

    async fn put_passkey_ceremony(&self, ceremony: NewPasskeyCeremony<'_>) -> Result<()> {
        self.traced(
            "put_passkey_ceremony",
            self.inner.put_passkey_ceremony(ceremony),
        )
        .await
    }

    async fn take_passkey_ceremony(&self, id_hash: &SecretHash) -> Result<Option<PasskeyCeremony>> {
        self.traced(
            "take_passkey_ceremony",
            self.inner.take_passkey_ceremony(id_hash),
        )
        .await
    }

    async fn add_passkey(&self, passkey: &PasskeyRecord) -> Result<()> {
        self.traced("add_passkey", self.inner.add_passkey(passkey))
            .await
    }

    async fn passkeys(&self, user_id: &str) -> Result<Vec<PasskeyRecord>> {
        self.traced("passkeys", self.inner.passkeys(user_id)).await
    }

    async fn passkey_by_credential_id(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<PasskeyRecord>> {
        self.traced(
            "passkey_by_credential_id",
            self.inner.passkey_by_credential_id(credential_id),
        )
        .await
    }

    async fn remove_passkey(&self, user_id: &str, passkey_id: &str) -> Result<bool> {
        self.traced(
            "remove_passkey",
            self.inner.remove_passkey(user_id, passkey_id),
        )
        .await
    }

    async fn sign_in_with_passkey(
        &self,
        used: PasskeyUse<'_>,
        session: NewSession<'_>,
    ) -> Result<bool> {
        self.traced(
            "sign_in_with_passkey",
            self.inner.sign_in_with_passkey(used, session),
        )
        .await
    }

    async fn key_check_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        self.traced(
            "key_check_or_insert",
            self.inner.key_check_or_insert(name, candidate),
        )
        .await
    }

    async fn revocations_after(&self, sequence: i64, limit: u32) -> Result<Vec<Revocation>> {
        self.traced(
            "revocations_after",
            self.inner.revocations_after(sequence, limit),
        )
        .await
    }

    async fn revocation_log_bounds(&self) -> Result<Option<LogBounds>> {
        self.traced("revocation_log_bounds", self.inner.revocation_log_bounds())
            .await
    }

    async fn log_notices(&self) -> Result<Option<Box<dyn LogNotices>>> {
        self.traced("log_notices", self.inner.log_notices()).await
    }

    async fn purge_expired(
        &self,
        now: UnixMillis,
        before: UnixMillis,
        log_before: UnixMillis,
    ) -> Result<u64> {
        self.traced(
            "purge_expired",
            self.inner.purge_expired(now, before, log_before),
        )
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.traced("ping", self.inner.ping()).await
    }

    fn shares_throttles(&self) -> bool {
        self.inner.shares_throttles()
    }

    async fn throttle_count(
        &self,
        key: &[u8; 32],
        rule: BackoffRule,
        now: UnixMillis,
        unless_blocked: bool,
    ) -> Result<ThrottleCount> {
        self.traced(
            "throttle_count",
            self.inner.throttle_count(key, rule, now, unless_blocked),
        )
        .await
    }

    async fn throttle_blocked_until(&self, key: &[u8; 32]) -> Result<Option<UnixMillis>> {
        self.traced(
            "throttle_blocked_until",
            self.inner.throttle_blocked_until(key),
        )
        .await
    }

    async fn throttle_refund(&self, key: &[u8; 32], counted: u32, now: UnixMillis) -> Result<()> {
        self.traced(
            "throttle_refund",
            self.inner.throttle_refund(key, counted, now),
        )
        .await
    }

    async fn throttle_forgive(&self, key: &[u8; 32]) -> Result<()> {
        self.traced("throttle_forgive", self.inner.throttle_forgive(key))
            .await
    }

    async fn throttle_rate(
        &self,
        key: &[u8; 32],
        now_micros: i64,
        interval_micros: i64,
        tolerance_micros: i64,
    ) -> Result<Option<i64>> {
        self.traced(
            "throttle_rate",
            self.inner
                .throttle_rate(key, now_micros, interval_micros, tolerance_micros),
        )
        .await
    }

    async fn purge_throttles(&self, now: UnixMillis) -> Result<u64> {
        self.traced("purge_throttles", self.inner.purge_throttles(now))
            .await
    }

    fn pool_stats(&self) -> PoolStats {
        self.inner.pool_stats()
    }
}
