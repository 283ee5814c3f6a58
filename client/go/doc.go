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
//
// # Account self-service
//
// Client.Account(token) is the self-service of the user whose session token it is
// (st-peter's AccountService, the token sent as "authorization: Bearer"): see who it is
// and whether TOTP is on, change the password, enroll or remove TOTP, replace the recovery codes, register, list and remove passkeys, list and end sessions. It
// shares the client's connection, request timeout and cache; printing it does not show
// the token.
//
//	account := client.Account(token)
//	info, err := account.Get(ctx) // info.User, info.TotpEnabled, info.RecoveryCodesLeft
//	revoked, err := account.ChangePassword(ctx, current, next,
//		stpeter.ChangePasswordOptions{RevokeOtherSessions: true})
//	switch {
//	case errors.Is(err, stpeter.ErrPermissionDenied): // the current password is wrong
//	case errors.Is(err, stpeter.ErrInvalidArgument):  // too weak: show err's Message
//	case errors.Is(err, stpeter.ErrRateLimited):      // too many wrong passwords
//	}
//
//	enrollment, err := account.BeginTotpEnrollment(ctx) // ErrFailedPrecondition: TOTP is on
//	image, err := enrollment.QRCodePNG(256)             // or show enrollment.Secret()
//	// ... the user scans it and types the code their authenticator shows:
//	confirmed, err := account.ConfirmTotpEnrollment(ctx, enrollment.EnrollmentID, code,
//		stpeter.ConfirmTotpOptions{RevokeOtherSessions: true})
//	// show confirmed.RecoveryCodes once; ErrInvalidArgument: wrong code
//
//	sessions, err := account.ListSessions(ctx) // newest first, the caller's is Current
//	err = account.RevokeSession(ctx, sessions[1].SessionID) // ErrNotFound: not the user's
//	revoked, err = account.RevokeOtherSessions(ctx)
//
// # Passkeys (WebAuthn)
//
// st-peter keeps the passkeys; the web app relays the browser's WebAuthn ceremony to it
// and back, the JSON passed through as it is: PasskeyOptionsJSON from st-peter to the
// page, PasskeyCredentialJSON (the page's credential.toJSON()) from the page to
// st-peter, two types so that neither can go where the other belongs. A st-peter
// started without --webauthn-rp-id and --webauthn-origin answers the ceremonies (Begin
// and Finish of a registration or a sign-in) with ErrFailedPrecondition; ListPasskeys
// and RemovePasskey still work.
//
//	registration, err := account.BeginPasskeyRegistration(ctx, currentPassword)
//	// the page: navigator.credentials.create(registration.OptionsJSON ...), posts back
//	passkey, err := account.FinishPasskeyRegistration(ctx, registration.RegistrationID,
//		stpeter.PasskeyCredentialJSON(body), "work laptop")
//	passkeys, err := account.ListPasskeys(ctx) // oldest first
//	err = account.RemovePasskey(ctx, passkeys[0].PasskeyID, currentPassword)
//
//	// Sign-in: with an Identifier, or neither (a discoverable passkey), or the
//	// TwoFactorID of a Login whose *TwoFactor has PasskeyMethod among its Methods.
//	challenge, err := client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{})
//	// the page: navigator.credentials.get(challenge.OptionsJSON ...), posts back
//	result, err := client.FinishPasskeyLogin(ctx, challenge.ChallengeID,
//		stpeter.PasskeyCredentialJSON(body)) // *Authenticated or *Failed, as Login
//
// DisableTotp and RegenerateRecoveryCodes take the current password too. The otpauth URI
// and secret of a TotpEnrollment (methods OtpauthURI and Secret, not fields) stay out of
// its printed forms and of encoding/json; the recovery codes of a TotpConfirmation stay
// out of its printed forms.
//
// A call that ends sessions (ChangePassword or ConfirmTotpEnrollment asked to revoke the
// others, RevokeSession, RevokeOtherSessions) drops this client's cached VerifyToken
// answers of the user, as a revocation feed event would, when the answer for the
// account's own token is cached (it says who the user is; without it, the feed evicts
// within moments, or the fallback TTL bounds it with the feed off); RevokeSession drops
// the answer for the account's own token too, as the session ended may be its own.
//
// # Service identity (API keys)
//
// A service that calls st-peter as itself — because st-peter runs with
// --require-caller-credentials, or to look users up on its own behalf — is a service
// account (st-peter service add NAME) with an API key (st-peter service key create NAME,
// printed once). Give the key to Connect and the client does the rest:
//
//	client, err := stpeter.Connect("https://st-peter.internal:50051",
//		stpeter.WithAPIKey(os.Getenv("ST_PETER_API_KEY")))
//	defer client.Close()
//	caller, err := client.VerifyToken(ctx, token)               // as before
//	user, err := client.LookupUserAsService(ctx, "a@b.example") // needs st-peter:lookup
//	switch {
//	case errors.Is(err, stpeter.ErrInvalidToken):     // 401: the token asked about is bad
//	case errors.Is(err, stpeter.ErrAPIKeyRejected):   // 503 and alert: our own key is bad
//	case errors.Is(err, stpeter.ErrPermissionDenied): // the service may not do this
//	case errors.Is(err, stpeter.ErrUnavailable):      // 503, retry later
//	}
//
// The client exchanges the key (ExchangeApiKey) for a short-lived service token on first
// need and keeps it; once less than a third of the token's lifetime is left (15 minutes
// by default, --api-token-ttl), the next call that needs it exchanges again, so calls
// never wait on an expired token. Concurrent callers share one exchange. The token goes
// as "authorization: Bearer" with VerifyToken, LookupUser and the revocation feed's
// subscription (each resubscription takes the token current then); LookupUserAsService
// also names the service as the actor. LookupUser with an explicit actor is unchanged,
// the service token going along as the caller's credentials.
//
// When st-peter refuses the caller's credentials (PERMISSION_DENIED beginning "caller
// credentials:", as for a token revoked or expired early) the client drops the token,
// exchanges once more and makes the call once more; the feed, which hears of a revoked
// service token, drops it too. A key st-peter refuses at the exchange (revoked, expired,
// unknown, malformed, or its service account disabled) is ErrAPIKeyRejected: never
// ErrInvalidToken, and never cached as a verdict on the token being verified. The
// refusal is answered for a second without asking st-peter again (so a busy service
// does not run into its address's failure throttle at once; past it, ErrRateLimited),
// then the next call asks again, so a key made good again (its account enabled) is
// picked up without a restart. A refresh that cannot reach st-peter, or is throttled,
// goes on with the old token while it has not expired. A PERMISSION_DENIED about the
// call itself — a lookup by a service without st-peter:lookup — is ErrPermissionDenied,
// and the token is kept.
//
// ExchangeAPIKey makes the exchange by hand for callers that manage the token
// themselves. Neither the key nor the service token is ever printed or put in an error.
package stpeter
