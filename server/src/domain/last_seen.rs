//! When each session's token was last seen, for `ListSessions`. Verifying a token must not
//! write to the database, so sightings are noted in memory and written in batches by the
//! server's housekeeping (and before a list is read). A sighting is noted where a request
//! reaches this server's store for the token: a verify the cache could not answer, or an
//! account call. Between those the server and client caches answer, so "last seen" is
//! accurate to their lifetimes (minutes), which is what a sessions page needs.
use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::UnixMillis;
use crate::secrets::token::SecretHash;

/// Sightings held at most between writes; past it new ones are dropped until the next
/// write (a later sighting of the same token notes it again).
const MAX_PENDING: usize = 100_000;

#[derive(Default)]
pub struct LastSeen {
    pending: Mutex<HashMap<SecretHash, UnixMillis>>,
}

impl LastSeen {
    pub fn saw(&self, token_hash: &SecretHash, now: UnixMillis) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if pending.len() >= MAX_PENDING && !pending.contains_key(token_hash) {
            return;
        }
        let at = pending.entry(*token_hash).or_insert(now);
        *at = (*at).max(now);
    }

    /// Everything noted since the last take.
    pub fn take(&self) -> Vec<(SecretHash, UnixMillis)> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        pending.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::LastSeen;

    #[test]
    fn the_latest_sighting_of_each_token_is_kept_until_taken() {
        let seen = LastSeen::default();
        seen.saw(&[1; 32], 10);
        seen.saw(&[1; 32], 30);
        seen.saw(&[1; 32], 20);
        seen.saw(&[2; 32], 5);
        let mut taken = seen.take();
        taken.sort();
        assert_eq!(taken, vec![([1; 32], 30), ([2; 32], 5)]);
        assert!(seen.take().is_empty());
    }
}
