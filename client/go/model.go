package stpeter

import (
	"fmt"
	"slices"
	"time"

	pb "github.com/st-peter/st-peter/client/go/genpb/stpeter/authv1"
)

// User is a user as st-peter knows them. Key your own local roles on UserID.
type User struct {
	UserID string
	Handle string
	// Email is lowercase; "" when the user has none.
	Email string
	// Phone is E.164; "" when the user has none.
	Phone       string
	DisplayName string
	Disabled    bool
	// Kind says whether the user is a person or a service account (which logs in with an
	// API key, never a password).
	Kind UserKind
}

// UserKind is what kind of principal a user is.
type UserKind string

const (
	UserKindHuman UserKind = "human"
	// UserKindService is a service account: platform roles, API keys, no password.
	UserKindService UserKind = "service"
	// UserKindUnknown is a kind this client version does not know yet (or a server from
	// before kinds, which sends none).
	UserKindUnknown UserKind = "unknown"
)

// VerifiedUser is the verified owner of a token.
type VerifiedUser struct {
	User User
	// Roles are the user's platform roles, sorted.
	Roles []string
	// ExpiresAt is when the token stops being valid; the cache never serves it past this.
	ExpiresAt time.Time
}

// HasRole reports whether the user has the platform role.
func (v *VerifiedUser) HasRole(role string) bool { return slices.Contains(v.Roles, role) }

// LoginResult is the answer to Login, VerifyTwoFactor and FinishPasskeyLogin: *Authenticated, *TwoFactor or
// *Failed. A refused login is a *Failed result, not an error.
type LoginResult interface{ isLoginResult() }

// Authenticated is a logged-in session.
type Authenticated struct {
	Token     string
	ExpiresAt time.Time
	User      User
}

// TwoFactor says a second factor is required to finish the login: send the user's code
// with TwoFactorID to VerifyTwoFactor, or, where Methods has PasskeyMethod, pass
// TwoFactorID to BeginPasskeyLogin.
type TwoFactor struct {
	TwoFactorID string
	ExpiresAt   time.Time
	Methods     []TwoFactorMethod
}

// Failed is a login that did not succeed.
type Failed struct {
	Reason FailureReason
	// RetryAfter is how long to wait before trying again; 0 where the reason implies none.
	RetryAfter time.Duration
}

func (*Authenticated) isLoginResult() {}
func (*TwoFactor) isLoginResult()     {}
func (*Failed) isLoginResult()        {}

// String keeps the token out of logs that print the result.
func (a *Authenticated) String() string {
	return fmt.Sprintf("Authenticated{Token: <redacted>, ExpiresAt: %s, User: %+v}", a.ExpiresAt, a.User)
}

// GoString keeps the token out of %#v too.
func (a *Authenticated) GoString() string { return a.String() }

// TwoFactorMethod is a second factor.
type TwoFactorMethod string

const (
	// TOTP is a 6-digit time-based one-time password (RFC 6238).
	TOTP TwoFactorMethod = "totp"
	// RecoveryCode is one of the one-time recovery codes issued with the TOTP enrollment.
	RecoveryCode TwoFactorMethod = "recovery_code"
	// PasskeyMethod is one of the user's passkeys: BeginPasskeyLogin with the
	// TwoFactorID, then FinishPasskeyLogin with the browser's answer.
	PasskeyMethod TwoFactorMethod = "passkey"
)

// FailureReason says why a login did not succeed.
type FailureReason string

const (
	// InvalidCredentials: wrong password, unknown identifier or disabled user,
	// deliberately indistinguishable.
	InvalidCredentials FailureReason = "invalid_credentials"
	RateLimited        FailureReason = "rate_limited"
	InvalidCode        FailureReason = "invalid_code"
	ChallengeExpired   FailureReason = "challenge_expired"
	// UnknownReason is a reason this client version does not know yet.
	UnknownReason FailureReason = "unknown"
)

func userFrom(u *pb.User) User {
	return User{
		UserID:      u.GetUserId(),
		Handle:      u.GetHandle(),
		Email:       u.GetEmail(),
		Phone:       u.GetPhone(),
		DisplayName: u.GetDisplayName(),
		Disabled:    u.GetDisabled(),
		Kind:        kindFrom(u.GetKind()),
	}
}

func kindFrom(k pb.UserKind) UserKind {
	switch k {
	case pb.UserKind_USER_KIND_HUMAN:
		return UserKindHuman
	case pb.UserKind_USER_KIND_SERVICE:
		return UserKindService
	default:
		return UserKindUnknown
	}
}

func verifiedFrom(r *pb.VerifyTokenResponse) *VerifiedUser {
	return &VerifiedUser{
		User:      userFrom(r.GetUser()),
		Roles:     r.GetRoles(),
		ExpiresAt: r.GetExpiresAt().AsTime(),
	}
}

func loginResultFrom(r *pb.LoginResponse) LoginResult {
	switch result := r.GetResult().(type) {
	case *pb.LoginResponse_Authenticated:
		return &Authenticated{
			Token:     result.Authenticated.GetToken(),
			ExpiresAt: result.Authenticated.GetExpiresAt().AsTime(),
			User:      userFrom(result.Authenticated.GetUser()),
		}
	case *pb.LoginResponse_TwoFactor:
		var methods []TwoFactorMethod
		for _, m := range result.TwoFactor.GetMethods() {
			switch m {
			case pb.TwoFactorMethod_TWO_FACTOR_METHOD_TOTP:
				methods = append(methods, TOTP)
			case pb.TwoFactorMethod_TWO_FACTOR_METHOD_RECOVERY_CODE:
				methods = append(methods, RecoveryCode)
			case pb.TwoFactorMethod_TWO_FACTOR_METHOD_PASSKEY:
				methods = append(methods, PasskeyMethod)
			}
		}
		return &TwoFactor{
			TwoFactorID: result.TwoFactor.GetTwoFactorId(),
			ExpiresAt:   result.TwoFactor.GetExpiresAt().AsTime(),
			Methods:     methods,
		}
	case *pb.LoginResponse_Failed:
		failed := &Failed{Reason: reasonFrom(result.Failed.GetReason())}
		if d := result.Failed.GetRetryAfter(); d != nil {
			failed.RetryAfter = d.AsDuration()
		}
		return failed
	default:
		// An empty oneof comes only from a newer server with an outcome we cannot read:
		// fail closed.
		return &Failed{Reason: UnknownReason}
	}
}

func reasonFrom(r pb.FailureReason) FailureReason {
	switch r {
	case pb.FailureReason_FAILURE_REASON_INVALID_CREDENTIALS:
		return InvalidCredentials
	case pb.FailureReason_FAILURE_REASON_RATE_LIMITED:
		return RateLimited
	case pb.FailureReason_FAILURE_REASON_INVALID_CODE:
		return InvalidCode
	case pb.FailureReason_FAILURE_REASON_CHALLENGE_EXPIRED:
		return ChallengeExpired
	default:
		return UnknownReason
	}
}
