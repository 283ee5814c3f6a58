package stpeter

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/st-peter/st-peter/client/go/genpb/stpeter/authv1"
)

// WithAPIKey makes the client act as a service account: it exchanges the key for a
// short-lived service token on first need, refreshes the token before it expires, and
// sends it as caller credentials ("authorization: Bearer") with VerifyToken, LookupUser
// and the revocation feed, as a server run with --require-caller-credentials demands.
// An empty key makes Connect fail.
func WithAPIKey(key string) Option {
	return func(s *settings) { s.apiKey, s.hasAPIKey = key, true }
}

// callerDenied is how st-peter's PERMISSION_DENIED about the caller credentials begins,
// as opposed to one about the call itself (a service without the lookup role).
const callerDenied = "caller credentials:"

// rejectedFor is how long a refused key is answered without asking st-peter again: a
// service under load with a revoked key would otherwise make one exchange after another
// and run into the failure throttle of its address.
const rejectedFor = time.Second

// serviceIdentity is a client's service account: its API key and the service token
// exchanged for it, refreshed once less than a third of its lifetime is left. Concurrent
// callers that need a new token share one exchange.
type serviceIdentity struct {
	rpc     pb.AuthServiceClient
	apiKey  string
	timeout time.Duration
	now     func() time.Time

	flight singleflight.Group
	mu     sync.Mutex
	// current is nil before the first exchange and after a drop.
	current *serviceToken
	// rejected is the last refusal of the key, answered again until rejectedUntil.
	rejected      *Error
	rejectedUntil time.Time
}

// serviceToken is one exchanged token; callers hand it back to drop it, so a drop
// about a token already replaced changes nothing.
type serviceToken struct {
	token string
	// key is the token's hash, which the revocation feed names it by.
	key       tokenKey
	userID    string
	refreshAt time.Time
	expiresAt time.Time
}

// get answers a token that need not be refreshed yet, exchanging the key when there is
// none.
func (s *serviceIdentity) get(ctx context.Context) (*serviceToken, error) {
	current, settled, err := s.settled()
	if settled {
		return current, err
	}
	results := s.flight.DoChan("exchange", func() (any, error) {
		// A caller that found no answer just as another exchange ended would start a
		// second one: look again inside the flight.
		if t, settled, err := s.settled(); settled {
			return t, err
		}
		return s.exchange()
	})
	select {
	case <-ctx.Done():
		return nil, canceled(ctx)
	case r := <-results:
		if r.Err == nil {
			return r.Val.(*serviceToken), nil
		}
		// A refresh that could not reach st-peter, or was throttled, leaves a token that
		// has not expired good enough for this call.
		if errors.Is(r.Err, ErrUnavailable) || errors.Is(r.Err, ErrRateLimited) {
			s.mu.Lock()
			usable := current != nil && s.current == current && s.now().Before(current.expiresAt)
			s.mu.Unlock()
			if usable {
				return current, nil
			}
		}
		return nil, r.Err
	}
}

// settled answers without an exchange when it can: a token that need not be refreshed
// yet, or a refusal of the key still in force. Otherwise it answers the current token,
// if any, for get to fall back on.
func (s *serviceIdentity) settled() (t *serviceToken, settled bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.current != nil && now.Before(s.current.refreshAt) {
		return s.current, true, nil
	}
	if s.rejected != nil && now.Before(s.rejectedUntil) {
		// A copy: callers may change what they are handed.
		rejected := *s.rejected
		return nil, true, &rejected
	}
	return s.current, false, nil
}

// exchange runs on its own deadline: it is shared by every caller waiting for it, so the
// first caller's cancellation must not fail the others.
func (s *serviceIdentity) exchange() (*serviceToken, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	// The lifetime is measured from before the call, on the local clock: a token
	// thought older than it is gets refreshed early, never late.
	issuedAt := s.now()
	session, err := exchangeAPIKey(ctx, s.rpc, s.apiKey)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.kind == ErrAPIKeyRejected {
			s.mu.Lock()
			// The tokens of a refused key are revoked with it.
			s.current = nil
			rejected := *e
			s.rejected, s.rejectedUntil = &rejected, s.now().Add(rejectedFor)
			s.mu.Unlock()
		}
		return nil, err
	}
	lifetime := session.ExpiresAt.Sub(issuedAt)
	t := &serviceToken{
		token:     session.Token,
		key:       keyOf(session.Token),
		userID:    session.User.UserID,
		refreshAt: issuedAt.Add(lifetime - lifetime/3),
		expiresAt: session.ExpiresAt,
	}
	s.mu.Lock()
	s.current, s.rejected = t, nil
	s.mu.Unlock()
	return t, nil
}

// drop forgets t if it is still the current token: st-peter no longer takes it.
func (s *serviceIdentity) drop(t *serviceToken) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == t {
		s.current = nil
	}
}

// The revocation feed calls these, so a revoked service token (its key revoked, its
// account disabled) is dropped before a call is refused for it.

func (s *serviceIdentity) tokenRevoked(key tokenKey) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil && s.current.key == key {
		s.current = nil
	}
}

func (s *serviceIdentity) userChanged(userID string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil && s.current.userID == userID {
		s.current = nil
	}
}

func (s *serviceIdentity) forget() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current = nil
}

// asCaller runs rpc with the client's caller credentials: the service token as bearer
// (and as caller, for the RPCs that name one), or nothing without an API key. A refusal
// of the credentials drops the token, and the call is made once more with a new one: a
// token revoked or expired early is replaced without the caller seeing it. Answers the
// error as fromRPC does.
func (c *Client) asCaller(ctx context.Context, rpc func(ctx context.Context, caller *serviceToken) error) error {
	if c.service == nil {
		return fromRPC(rpc(ctx, nil))
	}
	for retried := false; ; retried = true {
		caller, err := c.service.get(ctx)
		if err != nil {
			return err
		}
		err = rpc(withBearer(ctx, caller.token), caller)
		if retried || !callerRefused(err) {
			return fromRPC(err)
		}
		c.service.drop(caller)
	}
}

func withBearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", Bearer(token))
}

func callerRefused(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.PermissionDenied && strings.HasPrefix(st.Message(), callerDenied)
}

// ExchangeAPIKey trades a service account's API key for a session token of the account
// (short-lived: 15 minutes by default). A client made WithAPIKey does this by itself;
// this is for callers that manage the token themselves. A key st-peter refuses is
// ErrAPIKeyRejected.
func (c *Client) ExchangeAPIKey(ctx context.Context, apiKey string) (*Authenticated, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return exchangeAPIKey(ctx, c.rpc, apiKey)
}

func exchangeAPIKey(ctx context.Context, rpc pb.AuthServiceClient, apiKey string) (*Authenticated, error) {
	response, err := rpc.ExchangeApiKey(ctx, &pb.ExchangeApiKeyRequest{ApiKey: apiKey})
	if err != nil {
		err = fromRPC(err)
		// Here UNAUTHENTICATED is about the key, not a token being verified; a malformed
		// key is the same misconfiguration, and must not read as a malformed token.
		var e *Error
		if errors.As(err, &e) && (e.Code == codes.Unauthenticated || e.Code == codes.InvalidArgument) {
			e.kind = ErrAPIKeyRejected
		}
		return nil, err
	}
	return &Authenticated{
		Token:     response.GetToken(),
		ExpiresAt: response.GetExpiresAt().AsTime(),
		User:      userFrom(response.GetUser()),
	}, nil
}

// LookupUserAsService resolves an email, phone or handle to a user on behalf of the
// client's own service account (WithAPIKey), which needs the platform role
// st-peter:lookup (without it: ErrPermissionDenied). No match is ErrNotFound; a client
// without an API key is ErrFailedPrecondition. Not cached.
func (c *Client) LookupUserAsService(ctx context.Context, identifier string) (*User, error) {
	if c.service == nil {
		return nil, &Error{Code: codes.FailedPrecondition,
			Message: "LookupUserAsService needs a client made WithAPIKey", kind: ErrFailedPrecondition}
	}
	return c.lookupUser(ctx, identifier, nil)
}

// canceled is the error of a call whose caller gave up waiting.
func canceled(ctx context.Context) error {
	return &Error{Code: codes.Canceled, Message: ctx.Err().Error(), kind: ErrUnavailable, cause: ctx.Err()}
}
