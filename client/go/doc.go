// Package stpeter is the Go client of st-peter, the central authentication service.
//
// Connect is lazy: nothing is dialled until the first call, so a dead server shows up as
// ErrUnavailable then.
//
// VerifyToken answers are cached (keyed by a SHA-256 of the token, never past the token's
// own expiry, single flight on concurrent misses) and kept honest by st-peter's revocation
// feed: the first verify subscribes the client, once, on its own connection, and every
// logout, session revoke, disabled user or role change made anywhere evicts the answers it
// makes wrong, usually well within a second. While subscribed an answer is cached for up
// to 5 minutes (WithCacheTTL). While not — before the subscription has caught up, while it
// resubscribes after its stream ended (it resumes from the last event it saw), or with
// WithRevocationFeed(false) — an answer is served for at most 5 s after it was fetched
// (WithFallbackCacheTTL), the window in which a token revoked elsewhere can still pass
// here. UNAUTHENTICATED answers are cached 5 s (WithInvalidTokenTTL). FeedStatus tells
// how the subscription stands; Close ends it.
//
//	client, err := stpeter.Connect("http://127.0.0.1:50051")
//	defer client.Close()
//	caller, err := client.VerifyToken(ctx, token)
//	switch {
//	case errors.Is(err, stpeter.ErrInvalidToken): // 401
//	case errors.Is(err, stpeter.ErrUnavailable):  // 503, retry later
//	}
package stpeter
