package stpeter

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The kinds of error a caller handles differently; test for them with errors.Is.
var (
	// ErrInvalidToken: the token is unknown, expired, revoked, or its user is disabled
	// (for LookupUser: the actor's token is not valid or not the actor's own). Answer 401;
	// asking again will not help.
	ErrInvalidToken = errors.New("token is not valid")
	// ErrUnavailable: st-peter could not be asked (connection refused, timeout). Answer 503
	// and retry later; never treat it as a verdict on the token.
	ErrUnavailable = errors.New("st-peter is unavailable")
	// ErrInvalidArgument: the request was malformed; the message names the field.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: LookupUser found no user with that identifier; Account.RevokeSession
	// found no live session of the caller's with that id (an unknown, ended or another
	// user's session); Account.RemovePasskey no passkey of the caller's with that id.
	ErrNotFound = errors.New("not found")
	// ErrPermissionDenied: the caller is who they say but may not do this; for the
	// Account calls, the current password given is wrong (it counts towards the login
	// throttle, like a failed login). From a server run with --require-caller-credentials,
	// also a client without an API key (WithAPIKey), whatever token it asks about.
	// Asking again will not help.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrFailedPrecondition: the account is not in the state the call needs (TOTP already
	// on, or not on; a TOTP enrollment unknown, expired, used up or confirmed already; a
	// passkey registration unknown, used or expired), or the client not
	// (LookupUserAsService without an API key), or st-peter not (a passkey registration
	// or sign-in with a server without --webauthn-rp-id and --webauthn-origin). The
	// message says which.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrRateLimited: too many attempts (wrong passwords, for instance); the message says
	// how long to wait. Asking again before then answers the same.
	ErrRateLimited = errors.New("rate limited")
	// ErrAPIKeyRejected: st-peter refused this client's API key (WithAPIKey) or the one
	// given to ExchangeAPIKey: unknown, expired, revoked, malformed, or its service
	// account disabled. The service's own configuration is wrong, so it says nothing about
	// the token being verified: answer 503 and alert whoever holds the key.
	ErrAPIKeyRejected = errors.New("api key rejected")
)

// Error is every error an RPC returns. errors.Is matches it against the kind above
// (none for other server faults); Code and Message are st-peter's answer.
type Error struct {
	Code    codes.Code
	Message string
	kind    error
	cause   error
}

func (e *Error) Error() string {
	if e.kind == nil {
		return fmt.Sprintf("st-peter answered %s: %s", e.Code, e.Message)
	}
	if e.kind == ErrInvalidToken {
		return e.kind.Error()
	}
	return fmt.Sprintf("%s: %s", e.kind, e.Message)
}

// Unwrap gives the kind (ErrInvalidToken, ErrUnavailable, ...) and the cause (the gRPC
// status error, or a context error), so errors.Is finds either.
func (e *Error) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.kind, e.cause} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &Error{Code: codes.Unavailable, Message: err.Error(), kind: ErrUnavailable, cause: err}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{Code: codes.Unknown, Message: err.Error(), kind: ErrUnavailable, cause: err}
	}
	e := &Error{Code: st.Code(), Message: st.Message(), cause: err}
	switch st.Code() {
	case codes.Unauthenticated:
		e.kind = ErrInvalidToken
	case codes.InvalidArgument, codes.OutOfRange:
		e.kind = ErrInvalidArgument
	case codes.NotFound:
		e.kind = ErrNotFound
	case codes.PermissionDenied:
		e.kind = ErrPermissionDenied
	case codes.FailedPrecondition:
		e.kind = ErrFailedPrecondition
	case codes.ResourceExhausted:
		e.kind = ErrRateLimited
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		e.kind = ErrUnavailable
	}
	return e
}
