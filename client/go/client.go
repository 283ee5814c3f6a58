package stpeter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/st-peter/st-peter/client/go/genpb/stpeter/authv1"
)

// ErrInvalidTarget: the target given to Connect is not usable.
var ErrInvalidTarget = errors.New("invalid target")

// Client is a client of st-peter. Safe for concurrent use; share one per process.
type Client struct {
	conn    *grpc.ClientConn
	rpc     pb.AuthServiceClient
	account pb.AccountServiceClient
	cache   *verifyCache
	feed    *feed            // nil when off
	service *serviceIdentity // nil without WithAPIKey
	flight  singleflight.Group
	timeout time.Duration
}

type settings struct {
	cacheTTL       time.Duration
	fallbackTTL    time.Duration
	invalidTTL     time.Duration
	revocationFeed bool
	capacity       int
	requestTimeout time.Duration
	connectTimeout time.Duration
	tls            *tls.Config
	now            func() time.Time
	dialOptions    []grpc.DialOption
	apiKey         string
	hasAPIKey      bool
}

// Option changes a setting of Connect.
type Option func(*settings)

// WithCacheTTL sets how long a valid answer is cached while the client is subscribed to
// the revocation feed (never past the token's expiry). Default 5 minutes: the feed evicts
// whatever a revocation makes wrong, so this only bounds the memory idle tokens hold and
// how long an undetected fault of the feed could go on. Zero caches no valid answers
// (and subscribes to nothing).
func WithCacheTTL(ttl time.Duration) Option { return func(s *settings) { s.cacheTTL = ttl } }

// WithFallbackCacheTTL sets how long a valid answer is served after it was fetched while
// the client is not subscribed to the revocation feed: before the subscription has caught
// up, while it resubscribes after its stream ended, and always with
// WithRevocationFeed(false). Default 5 s: a token revoked elsewhere stops passing here
// within that while the feed is down.
func WithFallbackCacheTTL(ttl time.Duration) Option {
	return func(s *settings) { s.fallbackTTL = ttl }
}

// WithRevocationFeed turns the client's subscription to st-peter's revocation feed
// (WatchRevocations) on or off. Default on. Off, answers are cached for the shorter of
// the cache TTL and the fallback TTL.
func WithRevocationFeed(enabled bool) Option {
	return func(s *settings) { s.revocationFeed = enabled }
}

// WithInvalidTokenTTL sets how long an UNAUTHENTICATED answer is cached. Default 5 s;
// zero disables it.
func WithInvalidTokenTTL(ttl time.Duration) Option {
	return func(s *settings) { s.invalidTTL = ttl }
}

// WithCacheCapacity sets the most tokens cached at once. Default 10 000.
func WithCacheCapacity(n int) Option { return func(s *settings) { s.capacity = n } }

// WithRequestTimeout sets the deadline of each call (an earlier one in the context wins).
// Default 5 s.
func WithRequestTimeout(d time.Duration) Option {
	return func(s *settings) { s.requestTimeout = d }
}

// WithConnectTimeout sets the deadline for establishing the connection. Default 3 s.
func WithConnectTimeout(d time.Duration) Option {
	return func(s *settings) { s.connectTimeout = d }
}

// WithTLS uses this TLS configuration (a private CA, client certificates for mutual TLS).
// An https:// target uses TLS with the system roots without it.
func WithTLS(config *tls.Config) Option { return func(s *settings) { s.tls = config } }

// WithClock sets the clock the cache judges freshness by, and the service token's age
// (tests move it).
func WithClock(now func() time.Time) Option { return func(s *settings) { s.now = now } }

// WithDialOptions adds gRPC dial options (interceptors, for instance).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOptions = append(s.dialOptions, opts...) }
}

// Connect makes a client for target: "http://host:port" (plaintext), "https://host:port"
// (TLS with the system roots), "host:port" (plaintext unless WithTLS), or any gRPC target
// such as "unix:///path". Lazy: nothing is dialled until the first call, so a dead server
// surfaces as ErrUnavailable then, not here.
func Connect(target string, opts ...Option) (*Client, error) {
	s := settings{
		cacheTTL:       5 * time.Minute,
		fallbackTTL:    5 * time.Second,
		invalidTTL:     5 * time.Second,
		revocationFeed: true,
		capacity:       10_000,
		requestTimeout: 5 * time.Second,
		connectTimeout: 3 * time.Second,
		now:            time.Now,
	}
	for _, opt := range opts {
		opt(&s)
	}
	address, useTLS, err := parseTarget(target)
	if err != nil {
		return nil, err
	}
	// An unset environment variable shows up at start-up, not at the first request.
	if s.hasAPIKey && s.apiKey == "" {
		return nil, &Error{Code: codes.InvalidArgument, Message: "WithAPIKey was given an empty key", kind: ErrAPIKeyRejected}
	}
	creds := insecure.NewCredentials()
	if s.tls != nil {
		creds = credentials.NewTLS(s.tls)
	} else if useTLS {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.DefaultConfig,
			MinConnectTimeout: s.connectTimeout,
		}),
	}, s.dialOptions...)
	conn, err := grpc.NewClient(address, dial...)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrInvalidTarget, target, err)
	}
	client := &Client{
		conn:    conn,
		rpc:     pb.NewAuthServiceClient(conn),
		account: pb.NewAccountServiceClient(conn),
		timeout: s.requestTimeout,
	}
	client.cache = newVerifyCache(s.cacheTTL, s.fallbackTTL, s.invalidTTL, s.capacity, s.now)
	if s.hasAPIKey {
		client.service = &serviceIdentity{rpc: client.rpc, apiKey: s.apiKey, timeout: s.requestTimeout, now: s.now}
	}
	// Without valid answers cached there is nothing for the feed to keep honest.
	if s.revocationFeed && s.cacheTTL > 0 && s.capacity > 0 {
		client.feed = &feed{rpc: client.rpc, cache: client.cache, service: client.service}
	}
	return client, nil
}

func parseTarget(target string) (address string, useTLS bool, err error) {
	scheme, _, found := strings.Cut(target, "://")
	if !found || (scheme != "http" && scheme != "https") {
		if target == "" {
			return "", false, fmt.Errorf("%w: empty", ErrInvalidTarget)
		}
		return target, false, nil
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" || u.Port() == "" || strings.Trim(u.Path, "/") != "" {
		return "", false, fmt.Errorf("%w %q: want %s://host:port", ErrInvalidTarget, target, scheme)
	}
	return u.Host, scheme == "https", nil
}

// Close ends the revocation feed's subscription (waiting until it has) and closes the
// connection. The client is unusable afterwards.
func (c *Client) Close() error {
	c.feed.close()
	return c.conn.Close()
}

// String keeps printed clients short and safe: the fields hold the service token and
// are in use by other goroutines, so fmt must not walk them.
func (c *Client) String() string {
	if c.service != nil {
		return "stpeter.Client{APIKey: <redacted>}"
	}
	return "stpeter.Client{}"
}

// GoString keeps %#v to the same.
func (c *Client) GoString() string { return c.String() }

// Format keeps every other verb to the same as well.
func (c *Client) Format(f fmt.State, verb rune) { fmt.Fprint(f, c.String()) }

// FeedStatus says how the client's subscription to the revocation feed stands: for
// operators' health pages and for tests. All zero when the feed is off.
func (c *Client) FeedStatus() FeedStatus { return c.feed.status() }

// VerifyToken says who a token belongs to. Answers come from the cache when they can;
// concurrent misses for one token make a single RPC. An invalid token is ErrInvalidToken;
// an unreachable st-peter is ErrUnavailable (never cached). With WithAPIKey the RPC
// carries the service token; a refused key is ErrAPIKeyRejected (never cached).
func (c *Client) VerifyToken(ctx context.Context, token string) (*VerifiedUser, error) {
	// The first verify subscribes to the feed, on this client's connection.
	c.feed.start()
	key := keyOf(token)
	if a, ok := c.cache.get(key); ok {
		return a.result()
	}
	if ctx.Err() != nil {
		return nil, canceled(ctx)
	}
	// The fetch is shared by every caller waiting on this token, so it runs on its own
	// deadline rather than the first caller's cancellation.
	fetchCtx := context.WithoutCancel(ctx)
	// A caller that comes after an eviction (a Logout) does not share a fetch that began
	// before it: the generation is part of the flight's key.
	generation := c.cache.generation()
	flightKey := string(key[:]) + strconv.FormatUint(generation, 36)
	results := c.flight.DoChan(flightKey, func() (any, error) {
		fetchedAt := c.cache.now()
		var response *pb.VerifyTokenResponse
		err := c.asCaller(fetchCtx, func(ctx context.Context, _ *serviceToken) error {
			ctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			var err error
			response, err = c.rpc.VerifyToken(ctx, &pb.VerifyTokenRequest{Token: token})
			return err
		})
		if err != nil {
			if errors.Is(err, ErrInvalidToken) {
				c.cache.put(key, answer{}, generation, fetchedAt)
			}
			return nil, err
		}
		user := verifiedFrom(response)
		c.cache.put(key, answer{user: user}, generation, fetchedAt)
		return user, nil
	})
	select {
	case <-ctx.Done():
		return nil, canceled(ctx)
	case r := <-results:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*VerifiedUser).clone(), nil
	}
}

func (a answer) result() (*VerifiedUser, error) {
	if a.user == nil {
		return nil, &Error{Code: codes.Unauthenticated, Message: "token is not valid (cached)", kind: ErrInvalidToken}
	}
	return a.user.clone(), nil
}

// clone keeps callers from changing the cached answer through the returned pointer.
func (v *VerifiedUser) clone() *VerifiedUser {
	copied := *v
	copied.Roles = slices.Clone(v.Roles)
	return &copied
}

// CachedAnswers is how many answers the cache holds now.
func (c *Client) CachedAnswers() int { return c.cache.len() }

// Login logs in with an email (any case), phone or handle and a password. A refused
// login is a *Failed result, not an error.
func (c *Client) Login(ctx context.Context, identifier, password string) (LoginResult, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	response, err := c.rpc.Login(ctx, &pb.LoginRequest{Identifier: identifier, Password: password})
	if err != nil {
		return nil, fromRPC(err)
	}
	return loginResultFrom(response), nil
}

// VerifyTwoFactor finishes a login that answered *TwoFactor with the user's code.
func (c *Client) VerifyTwoFactor(ctx context.Context, twoFactorID, code string) (LoginResult, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	response, err := c.rpc.VerifyTwoFactor(ctx, &pb.VerifyTwoFactorRequest{TwoFactorId: twoFactorID, Code: code})
	if err != nil {
		return nil, fromRPC(err)
	}
	return loginResultFrom(response), nil
}

// LookupUser resolves an email, phone or handle to a user, on behalf of an actor whose own
// token proves who is asking. No match is ErrNotFound. Not cached. With WithAPIKey the
// service token goes along as caller credentials; LookupUserAsService asks as the
// service itself.
func (c *Client) LookupUser(ctx context.Context, actorID, actorToken, identifier string) (*User, error) {
	return c.lookupUser(ctx, identifier, &actor{id: actorID, token: actorToken})
}

// actor is who a lookup is made on behalf of; nil is the client's service account.
type actor struct{ id, token string }

func (c *Client) lookupUser(ctx context.Context, identifier string, on *actor) (*User, error) {
	var response *pb.LookupUserResponse
	err := c.asCaller(ctx, func(ctx context.Context, caller *serviceToken) error {
		request := &pb.LookupUserRequest{Identifier: identifier}
		if on != nil {
			request.ActorId, request.ActorToken = on.id, on.token
		} else {
			request.ActorId, request.ActorToken = caller.userID, caller.token
		}
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		var err error
		response, err = c.rpc.LookupUser(ctx, request)
		return err
	})
	if err != nil {
		return nil, err
	}
	user := userFrom(response.GetUser())
	return &user, nil
}

// Logout revokes the token at st-peter and drops it from this client's cache. Other
// clients drop it when the revocation feed tells them (their fallback TTL bounds it while
// they are not subscribed).
func (c *Client) Logout(ctx context.Context, token string) error {
	key := keyOf(token)
	c.cache.evict(key)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err := c.rpc.Logout(ctx, &pb.LogoutRequest{Token: token})
	// A verify that raced the logout may have cached the token again.
	c.cache.evict(key)
	return fromRPC(err)
}
