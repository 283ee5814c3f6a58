package stpeter

import (
	"context"
	"fmt"
	"net/url"
	"time"

	qrcode "github.com/skip2/go-qrcode"
	"google.golang.org/grpc/metadata"

	pb "github.com/st-peter/st-peter/client/go/genpb/stpeter/authv1"
)

// Account is one user's self-service (st-peter's AccountService), acting as the user
// whose session token it was made with: change the password, enroll or remove TOTP,
// replace the recovery codes, register, list and remove passkeys, list and end sessions. Get one from Client.Account; it is
// cheap, shares the client's connection, deadlines and cache, and is safe for concurrent
// use. Printing it does not show the token.
//
// A token that is not valid (unknown, expired, revoked, its user disabled) makes every
// call ErrInvalidToken.
type Account struct {
	client *Client
	token  string
}

// Account is the self-service of the user whose session token this is. Nothing is
// asked of st-peter until a method is called.
func (c *Client) Account(token string) *Account { return &Account{client: c, token: token} }

// String keeps the token out of logs that print the account.
func (a Account) String() string { return "stpeter.Account{token: <redacted>}" }

// GoString keeps the token out of %#v too.
func (a Account) GoString() string { return a.String() }

// Format keeps the token out of every other verb (%d, %x, ...) as well.
func (a Account) Format(f fmt.State, verb rune) { fmt.Fprint(f, a.String()) }

// call is the context of one RPC: the client's request timeout, the token as bearer.
func (a *Account) call(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, a.client.timeout)
	return metadata.AppendToOutgoingContext(ctx, "authorization", Bearer(a.token)), cancel
}

// AccountInfo is the user's own account as an account page shows it.
type AccountInfo struct {
	// User is who the token belongs to.
	User User
	// TotpEnabled is true when TOTP is enrolled and confirmed: logins need a second
	// factor, and the page can offer DisableTotp and RegenerateRecoveryCodes.
	TotpEnabled bool
	// RecoveryCodesLeft counts the recovery codes not used yet (0 without TOTP).
	RecoveryCodesLeft int
	// Passkeys counts the user's registered passkeys (ListPasskeys lists them).
	Passkeys int
}

// Get answers who the user is and which second factors they have.
func (a *Account) Get(ctx context.Context) (*AccountInfo, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.GetAccount(ctx, &pb.GetAccountRequest{})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &AccountInfo{
		User:              userFrom(response.GetUser()),
		TotpEnabled:       response.GetTotpEnabled(),
		RecoveryCodesLeft: int(response.GetRecoveryCodesLeft()),
		Passkeys:          int(response.GetPasskeys()),
	}, nil
}

// ChangePasswordOptions are the choices of ChangePassword.
type ChangePasswordOptions struct {
	// RevokeOtherSessions also ends every other live session of the user; the caller's
	// stays valid.
	RevokeOtherSessions bool
}

// ChangePassword sets a new password and answers how many other sessions it ended (0
// unless opts.RevokeOtherSessions). A wrong currentPassword is ErrPermissionDenied (and
// counts towards the login throttle: ErrRateLimited while it is in force); a new password
// too short or too weak is ErrInvalidArgument, with a message naming new_password and
// saying why.
func (a *Account) ChangePassword(ctx context.Context, currentPassword, newPassword string, opts ChangePasswordOptions) (revokedSessions int, err error) {
	if opts.RevokeOtherSessions {
		defer a.endingSessions(false).done()
	}
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.ChangePassword(ctx, &pb.ChangePasswordRequest{
		CurrentPassword:     currentPassword,
		NewPassword:         newPassword,
		RevokeOtherSessions: opts.RevokeOtherSessions,
	})
	if err != nil {
		return 0, fromRPC(err)
	}
	return int(response.GetRevokedSessions()), nil
}

// TotpEnrollment is a pending TOTP enrollment, from BeginTotpEnrollment: show the user
// its QR code (QRCodePNG) or its secret for typing in, then confirm it with a code from
// their authenticator (ConfirmTotpEnrollment). Printing it does not show the otpauth URI
// or the secret, and neither is an exported field, so encoding/json leaves them out too.
type TotpEnrollment struct {
	// EnrollmentID goes to ConfirmTotpEnrollment.
	EnrollmentID string
	// ExpiresAt is when the enrollment dies unconfirmed.
	ExpiresAt time.Time
	uri       string
}

// OtpauthURI is the otpauth://totp/... URI of the enrollment, what its QR code holds.
// It carries the secret: never log it.
func (e *TotpEnrollment) OtpauthURI() string { return e.uri }

// Secret is the enrollment's secret (base32), for users who type it into their
// authenticator instead of scanning the QR code. Never log it.
func (e *TotpEnrollment) Secret() string {
	u, err := url.Parse(e.uri)
	if err != nil {
		return ""
	}
	return u.Query().Get("secret")
}

// QRCodePNG is the otpauth URI as a QR code, a PNG image size pixels wide and high (a
// size too small for the code is rounded up; a negative one is that many pixels per
// module, as github.com/skip2/go-qrcode does). Serve it to the user only: it holds the
// secret.
func (e *TotpEnrollment) QRCodePNG(size int) ([]byte, error) {
	png, err := qrcode.Encode(e.uri, qrcode.Medium, size)
	if err != nil {
		return nil, fmt.Errorf("QR code of the otpauth URI: %w", err)
	}
	return png, nil
}

// String keeps the otpauth URI (the secret) out of logs that print the enrollment.
func (e TotpEnrollment) String() string {
	return fmt.Sprintf("stpeter.TotpEnrollment{EnrollmentID: %s, ExpiresAt: %s, OtpauthURI: <redacted>}",
		e.EnrollmentID, e.ExpiresAt.Format(time.RFC3339))
}

// GoString keeps the otpauth URI out of %#v too.
func (e TotpEnrollment) GoString() string { return e.String() }

// Format keeps the otpauth URI out of every other verb as well.
func (e TotpEnrollment) Format(f fmt.State, verb rune) { fmt.Fprint(f, e.String()) }

// BeginTotpEnrollment starts enrolling a TOTP authenticator: TOTP is not on until
// ConfirmTotpEnrollment, and a new Begin replaces a pending enrollment. A user who has
// TOTP on already is ErrFailedPrecondition (DisableTotp first).
func (a *Account) BeginTotpEnrollment(ctx context.Context) (*TotpEnrollment, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.BeginTotpEnrollment(ctx, &pb.BeginTotpEnrollmentRequest{})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &TotpEnrollment{
		EnrollmentID: response.GetEnrollmentId(),
		ExpiresAt:    response.GetExpiresAt().AsTime(),
		uri:          response.GetOtpauthUri(),
	}, nil
}

// ConfirmTotpOptions are the choices of ConfirmTotpEnrollment.
type ConfirmTotpOptions struct {
	// RevokeOtherSessions also ends every other live session of the user (those opened
	// with the password alone); the caller's stays valid.
	RevokeOtherSessions bool
}

// TotpConfirmation is the answer of ConfirmTotpEnrollment. Printing it does not show the
// recovery codes.
type TotpConfirmation struct {
	// RecoveryCodes (xxxx-xxxx-xxxx-xxxx) are each accepted once in place of a TOTP code.
	// Show them to the user this once: st-peter keeps only their hashes.
	RecoveryCodes []string
	// RevokedSessions is how many other sessions were ended (0 unless asked to).
	RevokedSessions int
}

// String keeps the recovery codes out of logs that print the confirmation.
func (c TotpConfirmation) String() string {
	return fmt.Sprintf("stpeter.TotpConfirmation{RecoveryCodes: <%d redacted>, RevokedSessions: %d}",
		len(c.RecoveryCodes), c.RevokedSessions)
}

// GoString keeps the recovery codes out of %#v too.
func (c TotpConfirmation) GoString() string { return c.String() }

// Format keeps the recovery codes out of every other verb as well.
func (c TotpConfirmation) Format(f fmt.State, verb rune) { fmt.Fprint(f, c.String()) }

// ConfirmTotpEnrollment turns TOTP on with a code the user's authenticator shows now,
// and answers the recovery codes. A wrong code is ErrInvalidArgument (naming code; it
// spends one of a few attempts); an unknown, expired, used-up or already confirmed
// enrollment is ErrFailedPrecondition (naming enrollment_id). The code that confirmed
// is spent: a login cannot use it again.
func (a *Account) ConfirmTotpEnrollment(ctx context.Context, enrollmentID, code string, opts ConfirmTotpOptions) (*TotpConfirmation, error) {
	if opts.RevokeOtherSessions {
		defer a.endingSessions(false).done()
	}
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.ConfirmTotpEnrollment(ctx, &pb.ConfirmTotpEnrollmentRequest{
		EnrollmentId:        enrollmentID,
		Code:                code,
		RevokeOtherSessions: opts.RevokeOtherSessions,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &TotpConfirmation{
		RecoveryCodes:   response.GetRecoveryCodes(),
		RevokedSessions: int(response.GetRevokedSessions()),
	}, nil
}

// DisableTotp turns TOTP off and drops its recovery codes: logins take the password
// alone again. A wrong password is ErrPermissionDenied; a user without TOTP is
// ErrFailedPrecondition.
func (a *Account) DisableTotp(ctx context.Context, currentPassword string) error {
	ctx, cancel := a.call(ctx)
	defer cancel()
	_, err := a.client.account.DisableTotp(ctx, &pb.DisableTotpRequest{CurrentPassword: currentPassword})
	return fromRPC(err)
}

// RegenerateRecoveryCodes replaces the recovery codes with new ones, which it answers
// (show them this once); the old ones stop working. A wrong password is
// ErrPermissionDenied; a user without TOTP is ErrFailedPrecondition.
func (a *Account) RegenerateRecoveryCodes(ctx context.Context, currentPassword string) ([]string, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.RegenerateRecoveryCodes(ctx, &pb.RegenerateRecoveryCodesRequest{CurrentPassword: currentPassword})
	if err != nil {
		return nil, fromRPC(err)
	}
	return response.GetRecoveryCodes(), nil
}

// Session is one live session of the user.
type Session struct {
	// SessionID names the session for RevokeSession: a UUID, not a token.
	SessionID string
	// CreatedAt is when the session was opened (the login).
	CreatedAt time.Time
	// ExpiresAt is when it ends unless revoked first.
	ExpiresAt time.Time
	// LastSeenAt is when st-peter last saw the token (a VerifyToken that reached it, or
	// an Account call), to within a few minutes: verified answers are cached. The zero
	// time when it has not been seen since the login.
	LastSeenAt time.Time
	// Current is true for the session of the token the Account was made with.
	Current bool
}

// ListSessions answers the user's live sessions, newest first; the caller's own is the
// one marked Current.
func (a *Account) ListSessions(ctx context.Context) ([]Session, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.ListSessions(ctx, &pb.ListSessionsRequest{})
	if err != nil {
		return nil, fromRPC(err)
	}
	sessions := make([]Session, 0, len(response.GetSessions()))
	for _, s := range response.GetSessions() {
		session := Session{
			SessionID: s.GetSessionId(),
			CreatedAt: s.GetCreatedAt().AsTime(),
			ExpiresAt: s.GetExpiresAt().AsTime(),
			Current:   s.GetCurrent(),
		}
		if s.GetLastSeenAt() != nil {
			session.LastSeenAt = s.GetLastSeenAt().AsTime()
		}
		sessions = append(sessions, session)
	}
	return sessions, nil
}

// RevokeSession ends one of the user's sessions by its SessionID (from ListSessions).
// Another user's session, or an unknown or ended one, is ErrNotFound. Ending the
// caller's own session is a logout: the Account's token stops working.
func (a *Account) RevokeSession(ctx context.Context, sessionID string) error {
	// The session may be the caller's own: its token's answer goes too.
	defer a.endingSessions(true).done()
	ctx, cancel := a.call(ctx)
	defer cancel()
	_, err := a.client.account.RevokeSession(ctx, &pb.RevokeSessionRequest{SessionId: sessionID})
	return fromRPC(err)
}

// RevokeOtherSessions ends every live session of the user but the caller's, and answers
// how many it ended.
func (a *Account) RevokeOtherSessions(ctx context.Context) (revokedSessions int, err error) {
	defer a.endingSessions(false).done()
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.RevokeOtherSessions(ctx, &pb.RevokeOtherSessionsRequest{})
	if err != nil {
		return 0, fromRPC(err)
	}
	return int(response.GetRevokedSessions()), nil
}

// sessionsEnding is the cache eviction due after a call that may end sessions of the
// caller's user, as a feed event about the user would evict them (the feed does anyway,
// usually within milliseconds, when the client is subscribed). The user is known only
// from the cached answer for the caller's token, so it is read before the call; without
// one there is nothing of the user's this client can find to evict. done runs after the
// call whatever its outcome (a timed-out call may still have ended sessions): the
// eviction also keeps a VerifyToken that was in flight during the call from storing its
// answer.
type sessionsEnding struct {
	cache  *verifyCache
	key    tokenKey
	userID string
	// own: the caller's own session may be among those ended.
	own bool
}

func (a *Account) endingSessions(own bool) sessionsEnding {
	key := keyOf(a.token)
	userID, _ := a.client.cache.userOf(key)
	return sessionsEnding{cache: a.client.cache, key: key, userID: userID, own: own}
}

func (s sessionsEnding) done() {
	if s.userID != "" {
		s.cache.evictUser(s.userID)
	}
	if s.own {
		s.cache.evict(s.key)
	}
}
