package stpeter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	stpeter "github.com/st-peter/st-peter/client/go"
)

const (
	firstPassword  = "knock knock, who goes there"
	secondPassword = "correct horse battery staple"
	thirdPassword  = "open sesame, said Ali Baba"
)

var (
	uuidPattern         = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	recoveryCodePattern = regexp.MustCompile(`^[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}$`)
)

// longCacheClient caches answers for an hour with no revocation feed: an answer it drops
// before then was dropped by the client itself.
func longCacheClient(t *testing.T, target string) (*stpeter.Client, *rpcCounter) {
	t.Helper()
	return countingClient(t, target, stpeter.WithRevocationFeed(false),
		stpeter.WithCacheTTL(time.Hour), stpeter.WithFallbackCacheTTL(time.Hour), stpeter.WithInvalidTokenTTL(time.Hour))
}

func wantValid(t *testing.T, client *stpeter.Client, what, token string) {
	t.Helper()
	if _, err := client.VerifyToken(context.Background(), token); err != nil {
		t.Fatalf("%s: want a valid token, got %v", what, err)
	}
}

func wantRevoked(t *testing.T, client *stpeter.Client, what, token string) {
	t.Helper()
	if verified, err := client.VerifyToken(context.Background(), token); !errors.Is(err, stpeter.ErrInvalidToken) {
		t.Fatalf("%s: want ErrInvalidToken, got %+v, %v", what, verified, err)
	}
}

// wantKind checks err is of kind and its message (st-peter's) contains field.
func wantKind(t *testing.T, what string, err, kind error, field string) {
	t.Helper()
	var e *stpeter.Error
	if !errors.Is(err, kind) || !errors.As(err, &e) || !strings.Contains(e.Message, field) {
		t.Fatalf("%s: want %v naming %q, got %v", what, kind, field, err)
	}
	for _, other := range []error{stpeter.ErrInvalidToken, stpeter.ErrUnavailable, stpeter.ErrInvalidArgument,
		stpeter.ErrNotFound, stpeter.ErrPermissionDenied, stpeter.ErrFailedPrecondition, stpeter.ErrRateLimited} {
		if other != kind && errors.Is(err, other) {
			t.Fatalf("%s: one error, one kind: %v is also %v", what, err, other)
		}
	}
}

func wantLoginFails(t *testing.T, client *stpeter.Client, identifier, password string, reason stpeter.FailureReason) {
	t.Helper()
	result, err := client.Login(context.Background(), identifier, password)
	if failed, ok := result.(*stpeter.Failed); err != nil || !ok || failed.Reason != reason {
		t.Fatalf("login %s: want %s, got %#v, %v", identifier, reason, result, err)
	}
}

func TestAccountChangePassword(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "pastry-chef", Email: "pastry-chef@bakery.example", Password: firstPassword})
	client, _ := countingClient(t, server.target())
	fresh := uncachedClient(t, server)
	ctx := context.Background()
	caller := login(t, client, "pastry-chef", firstPassword)
	other := login(t, client, "pastry-chef", firstPassword)
	account := client.Account(caller.Token)

	_, err := account.ChangePassword(ctx, "not the password at all", secondPassword, stpeter.ChangePasswordOptions{})
	wantKind(t, "wrong current password", err, stpeter.ErrPermissionDenied, "current_password")
	for _, weak := range []string{"password1", "knockknock", "pastry-chef@bakery.example", "short"} {
		_, err := account.ChangePassword(ctx, firstPassword, weak, stpeter.ChangePasswordOptions{})
		wantKind(t, fmt.Sprintf("new password %q", weak), err, stpeter.ErrInvalidArgument, "new_password")
	}
	wantLoginFails(t, client, "pastry-chef", secondPassword, stpeter.InvalidCredentials)

	revoked, err := account.ChangePassword(ctx, firstPassword, secondPassword, stpeter.ChangePasswordOptions{})
	if err != nil || revoked != 0 {
		t.Fatalf("change password: %d revoked, %v", revoked, err)
	}
	wantLoginFails(t, client, "pastry-chef", firstPassword, stpeter.InvalidCredentials)
	third := login(t, client, "pastry-chef", secondPassword)
	wantValid(t, fresh, "the caller's session after the change", caller.Token)
	wantValid(t, fresh, "another session after a change that keeps them", other.Token)

	revoked, err = account.ChangePassword(ctx, secondPassword, thirdPassword, stpeter.ChangePasswordOptions{RevokeOtherSessions: true})
	if err != nil || revoked != 2 {
		t.Fatalf("change password revoking the others: %d revoked (want 2), %v", revoked, err)
	}
	wantValid(t, fresh, "the caller's session after revoking the others", caller.Token)
	wantRevoked(t, fresh, "the first other session", other.Token)
	wantRevoked(t, fresh, "the second other session", third.Token)
	wantLoginFails(t, client, "pastry-chef", secondPassword, stpeter.InvalidCredentials)
	login(t, client, "pastry-chef", thirdPassword)
}

func TestAccountChangePasswordEvictsTheUsersCachedAnswers(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "pastry-chef", Password: firstPassword})
	server.addUser(newUser{Handle: "cashier", Password: thirdPassword})
	client, counter := longCacheClient(t, server.target())
	ctx := context.Background()
	caller := login(t, client, "pastry-chef", firstPassword)
	other := login(t, client, "pastry-chef", firstPassword)
	bystander := login(t, client, "cashier", thirdPassword)
	for _, token := range []string{caller.Token, other.Token, bystander.Token} {
		wantValid(t, client, "before", token)
	}
	account := client.Account(caller.Token)

	if _, err := account.ChangePassword(ctx, firstPassword, secondPassword, stpeter.ChangePasswordOptions{}); err != nil {
		t.Fatal(err)
	}
	wantValid(t, client, "another session after a change that keeps them", other.Token)
	if got := counter.get("VerifyToken"); got != 3 {
		t.Fatalf("VerifyToken RPCs = %d, want 3: a change that ends no session evicts nothing", got)
	}

	if _, err := account.ChangePassword(ctx, secondPassword, thirdPassword, stpeter.ChangePasswordOptions{RevokeOtherSessions: true}); err != nil {
		t.Fatal(err)
	}
	// Without a feed and with an hour's TTL, only the client's own eviction asks again.
	wantRevoked(t, client, "the other session, cached before", other.Token)
	wantValid(t, client, "the caller's session", caller.Token)
	wantValid(t, client, "another user's session", bystander.Token)
	if got := counter.get("VerifyToken"); got != 5 {
		t.Fatalf("VerifyToken RPCs = %d, want 5: the user's two answers evicted, the other user's kept", got)
	}
}

func TestAccountTotpEnrollment(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "night-baker", Password: thirdPassword})
	// Caching for an hour without a feed: the confirmation's own eviction is seen.
	client, _ := longCacheClient(t, server.target())
	fresh := uncachedClient(t, server)
	ctx := context.Background()
	caller := login(t, client, "night-baker", thirdPassword)
	other := login(t, client, "night-baker", thirdPassword)
	account := client.Account(caller.Token)

	info, err := account.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.User.Handle != "night-baker" || info.TotpEnabled || info.RecoveryCodesLeft != 0 {
		t.Fatalf("account before enrollment: %+v", info)
	}
	wantKind(t, "disable without TOTP", account.DisableTotp(ctx, thirdPassword), stpeter.ErrFailedPrecondition, "")
	_, err = account.RegenerateRecoveryCodes(ctx, thirdPassword)
	wantKind(t, "recovery codes without TOTP", err, stpeter.ErrFailedPrecondition, "")

	replaced, err := account.BeginTotpEnrollment(ctx)
	if err != nil {
		t.Fatal(err)
	}
	enrollment, err := account.BeginTotpEnrollment(ctx)
	if err != nil {
		t.Fatal(err)
	}
	uri := enrollment.OtpauthURI()
	if !strings.HasPrefix(enrollment.EnrollmentID, "ste_") || enrollment.EnrollmentID == replaced.EnrollmentID ||
		!strings.HasPrefix(uri, "otpauth://totp/") || enrollment.Secret() == "" ||
		!strings.Contains(uri, "secret="+enrollment.Secret()) || uri == replaced.OtpauthURI() ||
		!enrollment.ExpiresAt.After(time.Now()) {
		t.Fatalf("enrollment looks wrong: id %q (replaced %q), expires %v, uri prefix ok %v",
			enrollment.EnrollmentID, replaced.EnrollmentID, enrollment.ExpiresAt, strings.HasPrefix(uri, "otpauth://totp/"))
	}
	encoded, err := json.Marshal(enrollment)
	if err != nil {
		t.Fatal(err)
	}
	printed := fmt.Sprintf("%v %+v %#v %s %d %x %q | %v %+v %#v %s %d %x %q | %s", enrollment, enrollment, enrollment,
		enrollment, enrollment, enrollment, enrollment, *enrollment, *enrollment, *enrollment, *enrollment, *enrollment,
		*enrollment, *enrollment, encoded)
	if strings.Contains(printed, enrollment.Secret()) || strings.Contains(printed, "otpauth://") ||
		!strings.Contains(printed, enrollment.EnrollmentID) {
		t.Fatalf("printing an enrollment shows its secret (or not its id): %s", printed)
	}

	image, err := enrollment.QRCodePNG(256)
	if err != nil || !bytes.HasPrefix(image, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("QR code: %d bytes, %v", len(image), err)
	}
	decoded, err := png.Decode(bytes.NewReader(image))
	if err != nil || decoded.Bounds().Dx() != 256 || decoded.Bounds().Dy() != 256 {
		t.Fatalf("QR code PNG: %v, %v", decoded.Bounds(), err)
	}

	now := time.Now()
	_, err = account.ConfirmTotpEnrollment(ctx, replaced.EnrollmentID, totpCode(t, replaced.OtpauthURI(), now), stpeter.ConfirmTotpOptions{})
	wantKind(t, "confirm the replaced enrollment", err, stpeter.ErrFailedPrecondition, "enrollment_id")
	_, err = account.ConfirmTotpEnrollment(ctx, "ste_"+strings.Repeat("A", 43), totpCode(t, uri, now), stpeter.ConfirmTotpOptions{})
	wantKind(t, "confirm an unknown enrollment", err, stpeter.ErrFailedPrecondition, "enrollment_id")
	_, err = account.ConfirmTotpEnrollment(ctx, enrollment.EnrollmentID, wrongTOTPCode(t, uri, now), stpeter.ConfirmTotpOptions{})
	wantKind(t, "confirm with a wrong code", err, stpeter.ErrInvalidArgument, "code")
	wantValid(t, fresh, "another session before the confirmation", other.Token)
	wantValid(t, client, "another session before the confirmation, cached", other.Token)
	wantValid(t, client, "the caller's session before the confirmation, cached", caller.Token)

	code := totpCode(t, uri, time.Now())
	confirmed, err := account.ConfirmTotpEnrollment(ctx, enrollment.EnrollmentID, code, stpeter.ConfirmTotpOptions{RevokeOtherSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	if confirmed.RevokedSessions != 1 || len(confirmed.RecoveryCodes) < 2 {
		t.Fatalf("confirmation: %d sessions revoked (want 1), %d recovery codes", confirmed.RevokedSessions, len(confirmed.RecoveryCodes))
	}
	for _, recovery := range confirmed.RecoveryCodes {
		if !recoveryCodePattern.MatchString(recovery) {
			t.Fatalf("recovery code %q is not xxxx-xxxx-xxxx-xxxx", recovery)
		}
	}
	printed = fmt.Sprintf("%v %+v %#v %s %d | %v %+v %#v", confirmed, confirmed, confirmed, confirmed, confirmed, *confirmed, *confirmed, *confirmed)
	if strings.Contains(printed, confirmed.RecoveryCodes[0]) {
		t.Fatalf("printing a confirmation shows its recovery codes: %s", printed)
	}
	wantRevoked(t, fresh, "another session, ended by the confirmation", other.Token)
	wantRevoked(t, client, "another session, ended by the confirmation, cached before", other.Token)
	wantValid(t, fresh, "the caller's session after the confirmation", caller.Token)

	_, err = account.ConfirmTotpEnrollment(ctx, enrollment.EnrollmentID, totpCode(t, uri, time.Now()), stpeter.ConfirmTotpOptions{})
	wantKind(t, "confirm again", err, stpeter.ErrFailedPrecondition, "enrollment_id")
	info, err = account.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.TotpEnabled || info.RecoveryCodesLeft != len(confirmed.RecoveryCodes) {
		t.Fatalf("account after enrollment: %+v, %d codes issued", info, len(confirmed.RecoveryCodes))
	}
	_, err = account.BeginTotpEnrollment(ctx)
	wantKind(t, "begin with TOTP on", err, stpeter.ErrFailedPrecondition, "")

	challenge := func() *stpeter.TwoFactor {
		t.Helper()
		result, err := client.Login(ctx, "night-baker", thirdPassword)
		tf, ok := result.(*stpeter.TwoFactor)
		if err != nil || !ok || !slices.Contains(tf.Methods, stpeter.TOTP) || !slices.Contains(tf.Methods, stpeter.RecoveryCode) {
			t.Fatalf("login with TOTP on: want a TOTP or recovery code challenge, got %#v, %v", result, err)
		}
		return tf
	}
	verify := func(what, code string, want bool) {
		t.Helper()
		result, err := client.VerifyTwoFactor(ctx, challenge().TwoFactorID, code)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if session, ok := result.(*stpeter.Authenticated); ok != want || (ok && session.User.Handle != "night-baker") {
			t.Fatalf("%s: want authenticated %v, got %#v", what, want, result)
		}
		if failed, ok := result.(*stpeter.Failed); !want && (!ok || failed.Reason != stpeter.InvalidCode) {
			t.Fatalf("%s: want invalid code, got %#v", what, result)
		}
	}
	verify("the code that confirmed the enrollment", code, false)
	verify("a recovery code", confirmed.RecoveryCodes[0], true)
	verify("a recovery code used already", confirmed.RecoveryCodes[0], false)

	_, err = account.RegenerateRecoveryCodes(ctx, firstPassword)
	wantKind(t, "recovery codes with a wrong password", err, stpeter.ErrPermissionDenied, "current_password")
	renewed, err := account.RegenerateRecoveryCodes(ctx, thirdPassword)
	if err != nil || len(renewed) != len(confirmed.RecoveryCodes) {
		t.Fatalf("regenerated recovery codes: %d (had %d), %v", len(renewed), len(confirmed.RecoveryCodes), err)
	}
	for _, recovery := range renewed {
		if !recoveryCodePattern.MatchString(recovery) || slices.Contains(confirmed.RecoveryCodes, recovery) {
			t.Fatalf("regenerated recovery code %q: malformed or one of the old ones", recovery)
		}
	}
	verify("an old recovery code not used yet", confirmed.RecoveryCodes[1], false)
	verify("a new recovery code", renewed[0], true)

	wantKind(t, "disable with a wrong password", account.DisableTotp(ctx, firstPassword), stpeter.ErrPermissionDenied, "current_password")
	if err := account.DisableTotp(ctx, thirdPassword); err != nil {
		t.Fatal(err)
	}
	login(t, client, "night-baker", thirdPassword)
	wantKind(t, "disable again", account.DisableTotp(ctx, thirdPassword), stpeter.ErrFailedPrecondition, "")
	_, err = account.RegenerateRecoveryCodes(ctx, thirdPassword)
	wantKind(t, "recovery codes after disabling", err, stpeter.ErrFailedPrecondition, "")
	// TOTP can be enrolled again once it is off.
	if _, err := account.BeginTotpEnrollment(ctx); err != nil {
		t.Fatalf("begin after disabling: %v", err)
	}
}

// sessionIDs answers the session ids an account lists, newest first, and the current one.
func sessionIDs(t *testing.T, account *stpeter.Account) (ids []string, current string) {
	t.Helper()
	sessions, err := account.ListSessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sessions {
		ids = append(ids, s.SessionID)
		if s.Current {
			if current != "" {
				t.Fatalf("two current sessions: %+v", sessions)
			}
			current = s.SessionID
		}
		if i > 0 && s.CreatedAt.After(sessions[i-1].CreatedAt) {
			t.Fatalf("sessions not newest first: %+v", sessions)
		}
	}
	if current == "" {
		t.Fatalf("no current session: %+v", sessions)
	}
	return ids, current
}

func TestAccountSessions(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "pastry-chef", Password: firstPassword})
	server.addUser(newUser{Handle: "cashier", Password: thirdPassword})
	client, _ := countingClient(t, server.target())
	fresh := uncachedClient(t, server)
	ctx := context.Background()
	older := login(t, client, "pastry-chef", firstPassword)
	newer := login(t, client, "pastry-chef", firstPassword)
	account := client.Account(older.Token)

	sessions, err := account.ListSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions) != 2 || sessions[0].Current || !sessions[1].Current {
		t.Fatalf("want two sessions, the older (second) current: %+v", sessions)
	}
	for _, s := range sessions {
		if !uuidPattern.MatchString(s.SessionID) || s.CreatedAt.IsZero() || !s.ExpiresAt.After(s.CreatedAt) {
			t.Fatalf("session looks wrong: %+v", s)
		}
	}
	if sessions[0].CreatedAt.Before(sessions[1].CreatedAt) {
		t.Fatalf("sessions not newest first: %+v", sessions)
	}
	if !sessions[1].ExpiresAt.Equal(older.ExpiresAt) || !sessions[0].ExpiresAt.Equal(newer.ExpiresAt) {
		t.Fatalf("session expiries %v, %v; the logins said %v, %v", sessions[0].ExpiresAt, sessions[1].ExpiresAt, newer.ExpiresAt, older.ExpiresAt)
	}
	if !sessions[0].LastSeenAt.IsZero() {
		t.Fatalf("a session not used since its login has a last seen time: %+v", sessions[0])
	}
	olderID, newerID := sessions[1].SessionID, sessions[0].SessionID
	if _, current := sessionIDs(t, client.Account(newer.Token)); current != newerID {
		t.Fatalf("the newer session's own listing marks %s current, want %s", current, newerID)
	}
	if _, err := fresh.VerifyToken(ctx, newerID); !errors.Is(err, stpeter.ErrInvalidToken) && !errors.Is(err, stpeter.ErrInvalidArgument) {
		t.Fatalf("a session id used as a token: %v", err)
	}

	cashier := login(t, client, "cashier", thirdPassword)
	_, cashierID := sessionIDs(t, client.Account(cashier.Token))
	wantKind(t, "revoke another user's session", account.RevokeSession(ctx, cashierID), stpeter.ErrNotFound, "")
	wantValid(t, fresh, "the other user's session", cashier.Token)
	wantKind(t, "revoke an unknown session", account.RevokeSession(ctx, "00000000-0000-4000-8000-000000000000"), stpeter.ErrNotFound, "")

	if err := account.RevokeSession(ctx, newerID); err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, fresh, "the revoked session", newer.Token)
	wantValid(t, fresh, "the caller's session", older.Token)
	wantKind(t, "revoke an ended session", account.RevokeSession(ctx, newerID), stpeter.ErrNotFound, "")
	if ids, _ := sessionIDs(t, account); !slices.Equal(ids, []string{olderID}) {
		t.Fatalf("sessions after the revoke: %v, want only %s", ids, olderID)
	}

	third := login(t, client, "pastry-chef", firstPassword)
	fourth := login(t, client, "pastry-chef", firstPassword)
	revoked, err := account.RevokeOtherSessions(ctx)
	if err != nil || revoked != 2 {
		t.Fatalf("revoke other sessions: %d (want 2), %v", revoked, err)
	}
	wantRevoked(t, fresh, "a session revoked with the others", third.Token)
	wantRevoked(t, fresh, "another session revoked with the others", fourth.Token)
	wantValid(t, fresh, "the caller's session", older.Token)
	wantValid(t, fresh, "the other user's session", cashier.Token)
	if revoked, err := account.RevokeOtherSessions(ctx); err != nil || revoked != 0 {
		t.Fatalf("revoke other sessions again: %d (want 0), %v", revoked, err)
	}

	// Revoking its own session is a logout.
	if err := account.RevokeSession(ctx, olderID); err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, fresh, "the caller's session after revoking it", older.Token)
	_, err = account.ListSessions(ctx)
	wantKind(t, "list with the revoked token", err, stpeter.ErrInvalidToken, "")
}

func TestAccountRevocationsEvictCachedAnswers(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "pastry-chef", Password: firstPassword})
	server.addUser(newUser{Handle: "cashier", Password: thirdPassword})
	client, counter := longCacheClient(t, server.target())
	ctx := context.Background()
	caller := login(t, client, "pastry-chef", firstPassword)
	byID := login(t, client, "pastry-chef", firstPassword)
	others := login(t, client, "pastry-chef", firstPassword)
	bystander := login(t, client, "cashier", thirdPassword)
	account := client.Account(caller.Token)
	_, byIDSession := sessionIDs(t, client.Account(byID.Token))
	_, callerSession := sessionIDs(t, account)
	for _, token := range []string{caller.Token, byID.Token, others.Token, bystander.Token} {
		wantValid(t, client, "before", token)
	}
	counted := counter.get("VerifyToken")
	wantValid(t, client, "cached", byID.Token)
	if got := counter.get("VerifyToken"); got != counted {
		t.Fatalf("VerifyToken RPCs %d, want %d: the answer should be cached", got, counted)
	}

	if err := account.RevokeSession(ctx, byIDSession); err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, client, "a session revoked by id, cached before", byID.Token)
	wantValid(t, client, "the caller's session", caller.Token)
	wantValid(t, client, "the session still live", others.Token)
	counted = counter.get("VerifyToken")
	wantValid(t, client, "another user's session", bystander.Token)
	if got := counter.get("VerifyToken"); got != counted {
		t.Fatalf("VerifyToken RPCs %d, want %d: another user's answer is not evicted", got, counted)
	}

	if _, err := account.RevokeOtherSessions(ctx); err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, client, "a session revoked with the others, cached before", others.Token)
	wantValid(t, client, "the caller's session", caller.Token)

	if err := account.RevokeSession(ctx, callerSession); err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, client, "the caller's own session, cached before", caller.Token)
}

// A VerifyToken of the account's own token that is in flight while the account revokes its
// own session must not put a valid answer back into the cache, even when no answer for
// the token was cached to say whose it is.
func TestAccountRevokingItsOwnSessionDropsAVerifyInFlight(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "pastry-chef", Password: firstPassword})
	answered, release := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	hold := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if strings.HasSuffix(method, "/VerifyToken") && held.CompareAndSwap(false, true) {
			close(answered)
			<-release
		}
		return err
	}
	client, _ := countingClient(t, server.target(), stpeter.WithRevocationFeed(false),
		stpeter.WithCacheTTL(time.Hour), stpeter.WithFallbackCacheTTL(time.Hour),
		stpeter.WithDialOptions(grpc.WithChainUnaryInterceptor(hold)))
	ctx := context.Background()
	session := login(t, client, "pastry-chef", firstPassword)
	account := client.Account(session.Token)
	_, own := sessionIDs(t, account)

	inFlight := make(chan error, 1)
	go func() {
		_, err := client.VerifyToken(ctx, session.Token)
		inFlight <- err
	}()
	<-answered // st-peter has said the token is valid; the client has not stored it yet
	if err := account.RevokeSession(ctx, own); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-inFlight; err != nil {
		t.Fatalf("the verify in flight: %v", err)
	}
	wantRevoked(t, client, "the revoked own session, verified while it was being revoked", session.Token)
}

func TestAccountNeedsAValidToken(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "pastry-chef", Password: firstPassword})
	client, _ := countingClient(t, server.target())
	ctx := context.Background()
	session := login(t, client, "pastry-chef", firstPassword)
	if err := client.Logout(ctx, session.Token); err != nil {
		t.Fatal(err)
	}
	for _, token := range []string{"", "stp_not-a-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", session.Token} {
		account := client.Account(token)
		_, err := account.ListSessions(ctx)
		wantKind(t, fmt.Sprintf("list sessions with %.8q", token), err, stpeter.ErrInvalidToken, "")
		_, err = account.ChangePassword(ctx, firstPassword, secondPassword, stpeter.ChangePasswordOptions{})
		wantKind(t, fmt.Sprintf("change password with %.8q", token), err, stpeter.ErrInvalidToken, "")
		_, err = account.BeginTotpEnrollment(ctx)
		wantKind(t, fmt.Sprintf("begin TOTP with %.8q", token), err, stpeter.ErrInvalidToken, "")
	}
	// Nothing was changed by the refused calls.
	login(t, client, "pastry-chef", firstPassword)
}

func TestAccountWrongPasswordsAreThrottled(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "pastry-chef", Password: firstPassword})
	client, _ := countingClient(t, server.target())
	ctx := context.Background()
	account := client.Account(login(t, client, "pastry-chef", firstPassword).Token)
	// The login throttle lets 5 failures go free, then makes each wait.
	for attempt := 1; ; attempt++ {
		_, err := account.ChangePassword(ctx, "not the password at all", secondPassword, stpeter.ChangePasswordOptions{})
		if errors.Is(err, stpeter.ErrRateLimited) {
			wantKind(t, "throttled", err, stpeter.ErrRateLimited, "retry after")
			if attempt < 6 {
				t.Fatalf("throttled after %d wrong passwords, before the free ones were spent", attempt-1)
			}
			break
		}
		wantKind(t, fmt.Sprintf("wrong password %d", attempt), err, stpeter.ErrPermissionDenied, "current_password")
		if attempt > 8 {
			t.Fatal("8 wrong current passwords and no throttle")
		}
	}
	// The wrong passwords counted towards the login throttle.
	wantLoginFails(t, client, "pastry-chef", firstPassword, stpeter.RateLimited)
}

func TestAccountPrintsNoToken(t *testing.T) {
	client, err := stpeter.Connect(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	const token = "stp_secret-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	account := client.Account(token)
	printed := fmt.Sprintf("%v %+v %#v %s %d %x %q | %v %+v %#v %s %d %x %q", account, account, account, account, account,
		account, account, *account, *account, *account, *account, *account, *account, *account)
	if strings.Contains(printed, "secret-token") || strings.Contains(printed, fmt.Sprintf("%x", "stp_secret")) {
		t.Fatalf("printing an account shows its token: %s", printed)
	}
	// A dead server is ErrUnavailable, as for every other call.
	_, err = account.ListSessions(context.Background())
	wantKind(t, "list sessions of a dead server", err, stpeter.ErrUnavailable, "")
}
