//! A store that watches the server's verify lookups: how many reached the database, and
//! (for race tests) one held after its query ran, before its answer goes back.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use st_peter_server::clock::UnixMillis;
use st_peter_server::error::Result;
use st_peter_server::secrets::token::SecretHash;
use st_peter_server::store::*;
use tokio::sync::oneshot;

/// Wraps the real store; every call goes through unchanged.
pub struct ObservedStore {
    inner: Arc<dyn Store>,
    lookups: AtomicU64,
    hold: Mutex<Option<Held>>,
}

struct Held {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The next verify lookup, held after its query: [`HeldLookup::reached`] resolves once it
/// has read the database, and it answers only after [`HeldLookup::release`].
pub struct HeldLookup {
    reached: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

impl HeldLookup {
    pub async fn reached(&mut self) {
        (&mut self.reached)
            .await
            .expect("the held lookup was dropped");
    }

    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl ObservedStore {
    pub fn wrap(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            lookups: AtomicU64::new(0),
            hold: Mutex::new(None),
        })
    }

    /// Verify lookups (`session_owner`) that reached the database so far.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::SeqCst)
    }

    /// Holds the next verify lookup after its query ran.
    pub fn hold_next_lookup(&self) -> HeldLookup {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.hold.lock().unwrap() = Some(Held {
            reached: reached_tx,
            release: release_rx,
        });
        HeldLookup {
            reached: reached_rx,
            release: release_tx,
        }
    }
}

#[async_trait]
impl Store for ObservedStore {
    async fn create_user(&self, user: &NewUser) -> Result<()> {
        self.inner.create_user(user).await
    }

    async fn import_user(&self, user: &NewUser, disabled: bool, roles: &[String]) -> Result<bool> {
        self.inner.import_user(user, disabled, roles).await
    }

    async fn find_user(&self, identifier: &Identifier) -> Result<Option<UserRecord>> {
        self.inner.find_user(identifier).await
    }

    async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRecord>> {
        self.inner.find_user_by_id(id).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.inner.list_users().await
    }

    async fn set_disabled(&self, user_id: &str, disabled: bool, now: UnixMillis) -> Result<bool> {
        self.inner.set_disabled(user_id, disabled, now).await
    }

    async fn change_password(
        &self,
        user_id: &str,
        hash: &str,
        revoke: Option<RevokeSessions<'_>>,
        now: UnixMillis,
    ) -> Result<u64> {
        self.inner.change_password(user_id, hash, revoke, now).await
    }

    async fn rehash_password(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
        now: UnixMillis,
    ) -> Result<bool> {
        self.inner
            .rehash_password(user_id, old_hash, new_hash, now)
            .await
    }

    async fn grant_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool> {
        self.inner.grant_role(user_id, role, now).await
    }

    async fn revoke_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool> {
        self.inner.revoke_role(user_id, role, now).await
    }

    async fn roles(&self, user_id: &str) -> Result<Vec<String>> {
        self.inner.roles(user_id).await
    }

    async fn create_api_key(&self, key: NewApiKey<'_>) -> Result<()> {
        self.inner.create_api_key(key).await
    }

    async fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>> {
        self.inner.api_keys(user_id).await
    }

    async fn revoke_api_key(&self, key_id: &str, now: UnixMillis) -> Result<Option<(String, u64)>> {
        self.inner.revoke_api_key(key_id, now).await
    }

    async fn exchange_api_key(
        &self,
        exchange: ApiKeyExchange<'_>,
    ) -> Result<Option<ExchangedSession>> {
        self.inner.exchange_api_key(exchange).await
    }

    async fn set_totp_secret(
        &self,
        user_id: &str,
        sealed_secret: Option<&[u8]>,
        recovery_code_hashes: &[SecretHash],
        now: UnixMillis,
    ) -> Result<()> {
        self.inner
            .set_totp_secret(user_id, sealed_secret, recovery_code_hashes, now)
            .await
    }

    async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[SecretHash],
        now: UnixMillis,
    ) -> Result<bool> {
        self.inner
            .replace_recovery_codes(user_id, hashes, now)
            .await
    }

    async fn put_totp_enrollment(&self, enrollment: NewTotpEnrollment<'_>) -> Result<()> {
        self.inner.put_totp_enrollment(enrollment).await
    }

    async fn attempt_totp_enrollment(
        &self,
        id_hash: &SecretHash,
        user_id: &str,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<Vec<u8>>> {
        self.inner
            .attempt_totp_enrollment(id_hash, user_id, now, max_attempts)
            .await
    }

    async fn confirm_totp_enrollment(
        &self,
        confirmation: TotpConfirmation<'_>,
    ) -> Result<Option<u64>> {
        self.inner.confirm_totp_enrollment(confirmation).await
    }

    async fn unused_recovery_codes(&self, user_id: &str) -> Result<u64> {
        self.inner.unused_recovery_codes(user_id).await
    }

    async fn create_session(&self, session: NewSession<'_>) -> Result<()> {
        self.inner.create_session(session).await
    }

    async fn session_owner(
        &self,
        token_hash: &SecretHash,
        now: UnixMillis,
    ) -> Result<Option<SessionOwner>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = self.inner.session_owner(token_hash, now).await;
        let held = self.hold.lock().unwrap().take();
        if let Some(held) = held {
            let _ = held.reached.send(());
            let _ = held.release.await;
        }
        answer
    }

    async fn revoke_session(&self, token_hash: &SecretHash, now: UnixMillis) -> Result<bool> {
        self.inner.revoke_session(token_hash, now).await
    }

    async fn revoke_user_sessions(
        &self,
        revoke: RevokeSessions<'_>,
        now: UnixMillis,
    ) -> Result<u64> {
        self.inner.revoke_user_sessions(revoke, now).await
    }

    async fn live_sessions(&self, user_id: &str, now: UnixMillis) -> Result<Vec<SessionRecord>> {
        self.inner.live_sessions(user_id, now).await
    }

    async fn revoke_session_by_id(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        now: UnixMillis,
    ) -> Result<Option<SecretHash>> {
        self.inner
            .revoke_session_by_id(session_id, user_id, now)
            .await
    }

    async fn note_sessions_seen(&self, seen: &[(SecretHash, UnixMillis)]) -> Result<()> {
        self.inner.note_sessions_seen(seen).await
    }

    async fn create_challenge(
        &self,
        id_hash: &SecretHash,
        user_id: &str,
        created_at: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<()> {
        self.inner
            .create_challenge(id_hash, user_id, created_at, expires_at)
            .await
    }

    async fn attempt_challenge(
        &self,
        id_hash: &SecretHash,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<ChallengeAttempt>> {
        self.inner
            .attempt_challenge(id_hash, now, max_attempts)
            .await
    }

    async fn complete_two_factor(
        &self,
        challenge_hash: &SecretHash,
        factor: SecondFactor<'_>,
        session: NewSession<'_>,
    ) -> Result<TwoFactorCompletion> {
        self.inner
            .complete_two_factor(challenge_hash, factor, session)
            .await
    }

    async fn put_passkey_ceremony(&self, ceremony: NewPasskeyCeremony<'_>) -> Result<()> {
        self.inner.put_passkey_ceremony(ceremony).await
    }

    async fn take_passkey_ceremony(&self, id_hash: &SecretHash) -> Result<Option<PasskeyCeremony>> {
        self.inner.take_passkey_ceremony(id_hash).await
    }

    async fn add_passkey(&self, passkey: &PasskeyRecord) -> Result<()> {
        self.inner.add_passkey(passkey).await
    }

    async fn passkeys(&self, user_id: &str) -> Result<Vec<PasskeyRecord>> {
        self.inner.passkeys(user_id).await
    }

    async fn passkey_by_credential_id(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<PasskeyRecord>> {
        self.inner.passkey_by_credential_id(credential_id).await
    }

    async fn remove_passkey(&self, user_id: &str, passkey_id: &str) -> Result<bool> {
        self.inner.remove_passkey(user_id, passkey_id).await
    }

    async fn sign_in_with_passkey(
        &self,
        used: PasskeyUse<'_>,
        session: NewSession<'_>,
    ) -> Result<bool> {
        self.inner.sign_in_with_passkey(used, session).await
    }

    async fn key_check_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        self.inner.key_check_or_insert(name, candidate).await
    }

    async fn revocations_after(&self, sequence: i64, limit: u32) -> Result<Vec<Revocation>> {
        self.inner.revocations_after(sequence, limit).await
    }

    async fn revocation_log_bounds(&self) -> Result<Option<LogBounds>> {
        self.inner.revocation_log_bounds().await
    }

    async fn log_notices(&self) -> Result<Option<Box<dyn LogNotices>>> {
        self.inner.log_notices().await
    }

    async fn purge_expired(
        &self,
        now: UnixMillis,
        before: UnixMillis,
        log_before: UnixMillis,
    ) -> Result<u64> {
        self.inner.purge_expired(now, before, log_before).await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
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
        self.inner
            .throttle_count(key, rule, now, unless_blocked)
            .await
    }

    async fn throttle_blocked_until(&self, key: &[u8; 32]) -> Result<Option<UnixMillis>> {
        self.inner.throttle_blocked_until(key).await
    }

    async fn throttle_refund(&self, key: &[u8; 32], counted: u32, now: UnixMillis) -> Result<()> {
        self.inner.throttle_refund(key, counted, now).await
    }

    async fn throttle_forgive(&self, key: &[u8; 32]) -> Result<()> {
        self.inner.throttle_forgive(key).await
    }

    async fn throttle_rate(
        &self,
        key: &[u8; 32],
        now_micros: i64,
        interval_micros: i64,
        tolerance_micros: i64,
    ) -> Result<Option<i64>> {
        self.inner
            .throttle_rate(key, now_micros, interval_micros, tolerance_micros)
            .await
    }

    async fn purge_throttles(&self, now: UnixMillis) -> Result<u64> {
        self.inner.purge_throttles(now).await
    }

    fn pool_stats(&self) -> st_peter_server::store::PoolStats {
        self.inner.pool_stats()
    }
}
