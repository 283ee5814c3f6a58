// Package stpeter is the Go client of st-peter, the central authentication service.
//
// Connect is lazy: nothing is dialled until the first call, so a dead server shows up as
// ErrUnavailable then. VerifyToken answers are cached about 60 s (never past the token's
// own expiry, keyed by a SHA-256 of the token, single flight on concurrent misses), so a
// token revoked elsewhere can still pass on this client for up to that long: shorten it
// with WithCacheTTL where that matters.
//
//	client, err := stpeter.Connect("http://127.0.0.1:50051")
//	caller, err := client.VerifyToken(ctx, token)
//	switch {
//	case errors.Is(err, stpeter.ErrInvalidToken): // 401
//	case errors.Is(err, stpeter.ErrUnavailable):  // 503, retry later
//	}
package stpeter
