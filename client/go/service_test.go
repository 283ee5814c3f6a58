package stpeter_test

// Service identity mode (WithAPIKey) against the real st-peter binary, run as a
// deployment that answers VerifyToken, LookupUser and the revocation feed only to service
// accounts (--require-caller-credentials), with service tokens of 3 s so that refreshes
// happen within a test. The tests run in parallel with each other: the longest, the
// refresh over 10 s, sets their time.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	stpeter "github.com/st-peter/st-peter/client/go"
)

const (
	serviceTokenTTL = 3 * time.Second
	cashierPassword = "knock knock, who goes there"
	// noToken is verified where a test needs VerifyToken to reach st-peter every time
	// (with WithInvalidTokenTTL(0)): LookupUser cannot, st-peter allows an actor 20 at
	// once and 60 a minute.
	noToken = "stp_no-such-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)

func startServiceServer(t *testing.T) *testServer {
	t.Helper()
	return startServer(t, "--api-token-ttl", serviceTokenTTL.String(), "--require-caller-credentials")
}

// callerWatch sees, from outside a client, what it sends and what it is answered: the
// status codes per method, the bearer tokens sent (the service tokens), the exchanges in
// flight at once, and the bearer each revocation feed subscription opened with.
type callerWatch struct {
	mu      sync.Mutex
	answers map[string][]codes.Code
	bearers []string // distinct, in the order first sent
	streams []string
	// exchangeDelay holds back each exchange's answer: a slow network, so that callers
	// arriving together surely find one exchange in flight.
	exchangeDelay             time.Duration
	exchanging, maxExchanging int
}

func watchedClient(t *testing.T, target string, opts ...stpeter.Option) (*stpeter.Client, *callerWatch) {
	t.Helper()
	w := &callerWatch{answers: map[string][]codes.Code{}}
	opts = append(opts, stpeter.WithDialOptions(
		grpc.WithChainUnaryInterceptor(w.unary),
		grpc.WithChainStreamInterceptor(w.stream)))
	client, err := stpeter.Connect(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client, w
}

func (w *callerWatch) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	name := method[strings.LastIndex(method, "/")+1:]
	bearer := bearerOf(ctx)
	w.mu.Lock()
	if bearer != "" && !slices.Contains(w.bearers, bearer) {
		w.bearers = append(w.bearers, bearer)
	}
	exchange := name == "ExchangeApiKey"
	delay := w.exchangeDelay
	if exchange {
		w.exchanging++
		w.maxExchanging = max(w.maxExchanging, w.exchanging)
	}
	w.mu.Unlock()
	err := invoker(ctx, method, req, reply, cc, opts...)
	if exchange {
		time.Sleep(delay)
	}
	w.mu.Lock()
	if exchange {
		w.exchanging--
	}
	w.answers[name] = append(w.answers[name], status.Code(err))
	w.mu.Unlock()
	return err
}

func (w *callerWatch) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	w.mu.Lock()
	w.streams = append(w.streams, bearerOf(ctx))
	w.mu.Unlock()
	return streamer(ctx, desc, cc, method, opts...)
}

func bearerOf(ctx context.Context) string {
	md, _ := metadata.FromOutgoingContext(ctx)
	for _, value := range md.Get("authorization") {
		if token, ok := strings.CutPrefix(value, "Bearer "); ok {
			return token
		}
	}
	return ""
}

// count is how many calls of method were answered (with any code).
func (w *callerWatch) count(method string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.answers[method])
}

// codes are the answers to method's calls, in order.
func (w *callerWatch) codes(method string) []codes.Code {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]codes.Code(nil), w.answers[method]...)
}

func (w *callerWatch) sentBearers() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.bearers...)
}

func (w *callerWatch) streamBearers() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.streams...)
}

func (w *callerWatch) delayExchanges(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.exchangeDelay = d
}

func (w *callerWatch) mostExchangesAtOnce() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxExchanging
}

func TestAServiceVerifiesAndLooksUpUsersWithItsAPIKey(t *testing.T) {
	t.Parallel()
	server := startServiceServer(t)
	cashierID := server.addUser(newUser{Handle: "cashier", Email: "cashier@bakery.example", Password: cashierPassword})
	till := server.addService("till", "st-peter:lookup")
	client, watch := watchedClient(t, server.target(), stpeter.WithAPIKey(till.APIKey))
	ctx := context.Background()
	session := login(t, client, "cashier", cashierPassword)

	verified, err := client.VerifyToken(ctx, session.Token)
	if err != nil || verified.User.UserID != cashierID || verified.User.Kind != stpeter.UserKindHuman {
		t.Fatalf("verify a person's token as the service: %+v, %v", verified, err)
	}
	found, err := client.LookupUserAsService(ctx, "CASHIER@bakery.example")
	if err != nil || found.UserID != cashierID || found.Kind != stpeter.UserKindHuman {
		t.Fatalf("lookup as the service: %+v, %v", found, err)
	}
	if _, err := client.LookupUserAsService(ctx, "ghost"); !errors.Is(err, stpeter.ErrNotFound) {
		t.Fatalf("lookup of nobody as the service: %v", err)
	}
	// The form with an explicit actor still works, the service token going along as the
	// caller's credentials.
	found, err = client.LookupUser(ctx, cashierID, session.Token, "till")
	if err != nil || found.UserID != till.UserID || found.Kind != stpeter.UserKindService {
		t.Fatalf("lookup of the service on the cashier's behalf: %+v, %v", found, err)
	}

	// One exchange served every call and the feed's subscription, with one token.
	if n := watch.count("ExchangeApiKey"); n != 1 {
		t.Fatalf("exchanges = %d, want 1", n)
	}
	bearers := watch.sentBearers()
	if len(bearers) != 1 || !strings.HasPrefix(bearers[0], "stp_") {
		t.Fatalf("want one stp_ service token sent as bearer, got %d", len(bearers))
	}
	serviceToken := bearers[0]
	self, err := client.VerifyToken(ctx, serviceToken)
	if err != nil || self.User.UserID != till.UserID || self.User.Handle != "till" || self.User.Kind != stpeter.UserKindService {
		t.Fatalf("the service token is the service's: %+v, %v", self, err)
	}

	own, err := client.ExchangeAPIKey(ctx, till.APIKey)
	if err != nil || own.User.UserID != till.UserID || own.User.Kind != stpeter.UserKindService ||
		!strings.HasPrefix(own.Token, "stp_") || own.Token == serviceToken {
		t.Fatalf("ExchangeAPIKey: %v, %v", own, err)
	}
	if life := time.Until(own.ExpiresAt); life <= 0 || life > serviceTokenTTL+time.Second {
		t.Fatalf("exchanged token lives %s, want about %s", life, serviceTokenTTL)
	}

	printed := fmt.Sprintf("%v %+v %#v %s %v %+v %#v", client, client, client, own, own, own, own)
	for _, secret := range []string{till.APIKey, serviceToken, own.Token} {
		if strings.Contains(printed, secret) {
			t.Fatalf("printing the client or a session shows a secret: %s", printed)
		}
	}
}

func TestCallersWithoutServiceCredentialsAreRefused(t *testing.T) {
	t.Parallel()
	server := startServiceServer(t)
	cashierID := server.addUser(newUser{Handle: "cashier", Password: cashierPassword})
	scale := server.addService("scale") // without st-peter:lookup
	ctx := context.Background()

	anonymous, anonymousWatch := watchedClient(t, server.target())
	// Login asks for no caller credentials.
	session := login(t, anonymous, "cashier", cashierPassword)
	for range 2 {
		_, err := anonymous.VerifyToken(ctx, session.Token)
		var e *stpeter.Error
		if !errors.Is(err, stpeter.ErrPermissionDenied) || errors.Is(err, stpeter.ErrInvalidToken) ||
			!errors.As(err, &e) || !strings.HasPrefix(e.Message, "caller credentials:") {
			t.Fatalf("anonymous verify: %v", err)
		}
	}
	// Not cached as a verdict on the token: the second verify asked again.
	if n := anonymousWatch.count("VerifyToken"); n != 2 || anonymous.CachedAnswers() != 0 {
		t.Fatalf("anonymous verifies sent %d, cached %d answers; want 2 sent, none cached", n, anonymous.CachedAnswers())
	}
	if _, err := anonymous.LookupUser(ctx, cashierID, session.Token, "cashier"); !errors.Is(err, stpeter.ErrPermissionDenied) {
		t.Fatalf("anonymous lookup on the cashier's behalf: %v", err)
	}
	if _, err := anonymous.LookupUserAsService(ctx, "cashier"); !errors.Is(err, stpeter.ErrFailedPrecondition) {
		t.Fatalf("LookupUserAsService without an API key: %v", err)
	}
	if n := anonymousWatch.count("LookupUser"); n != 1 {
		t.Fatalf("LookupUser RPCs = %d, want 1 (none without an API key)", n)
	}

	// A service without st-peter:lookup verifies, but may not look up. That refusal is not
	// about its credentials: its token is kept, and the call not repeated.
	client, watch := watchedClient(t, server.target(), stpeter.WithAPIKey(scale.APIKey))
	if verified, err := client.VerifyToken(ctx, session.Token); err != nil || verified.User.UserID != cashierID {
		t.Fatalf("verify as a service without the lookup role: %+v, %v", verified, err)
	}
	_, err := client.LookupUserAsService(ctx, "cashier")
	var e *stpeter.Error
	if !errors.Is(err, stpeter.ErrPermissionDenied) || !errors.As(err, &e) || strings.HasPrefix(e.Message, "caller credentials:") {
		t.Fatalf("lookup as a service without the lookup role: %v", err)
	}
	if exchanges, lookups := watch.count("ExchangeApiKey"), watch.count("LookupUser"); exchanges != 1 || lookups != 1 {
		t.Fatalf("%d exchanges and %d lookups, want 1 and 1", exchanges, lookups)
	}

	// A key st-peter does not know is refused as a key, never as the token verified, and
	// asked about again after a second; the feed is off so that only the verifies
	// exchange.
	unknownKey := "stk_" + strings.Repeat("A", 43)
	clock := newStoppedClock()
	forged, forgedWatch := watchedClient(t, server.target(), stpeter.WithAPIKey(unknownKey),
		stpeter.WithRevocationFeed(false), stpeter.WithClock(clock.now))
	for i, wantExchanges := range []int{1, 1, 2} {
		if i == 2 {
			clock.advance(time.Second)
		}
		_, err := forged.VerifyToken(ctx, session.Token)
		if !errors.Is(err, stpeter.ErrAPIKeyRejected) || errors.Is(err, stpeter.ErrInvalidToken) || errors.Is(err, stpeter.ErrPermissionDenied) {
			t.Fatalf("verify %d with an unknown key: %v", i, err)
		}
		if strings.Contains(err.Error(), unknownKey) {
			t.Fatalf("the error shows the key: %v", err)
		}
		if exchanges, verifies := forgedWatch.count("ExchangeApiKey"), forgedWatch.count("VerifyToken"); exchanges != wantExchanges || verifies != 0 {
			t.Fatalf("after verify %d: %d exchanges and %d verifies, want %d and 0", i, exchanges, verifies, wantExchanges)
		}
	}
	if _, err := forged.ExchangeAPIKey(ctx, unknownKey); !errors.Is(err, stpeter.ErrAPIKeyRejected) {
		t.Fatalf("ExchangeAPIKey with an unknown key: %v", err)
	}
	if _, err := stpeter.Connect(server.target(), stpeter.WithAPIKey("")); !errors.Is(err, stpeter.ErrAPIKeyRejected) {
		t.Fatalf("Connect with an empty key: %v", err)
	}
}

func TestARevokedKeyIsRejectedOnceItsTokenIsGone(t *testing.T) {
	t.Parallel()
	server := startServiceServer(t)
	server.addUser(newUser{Handle: "cashier", Password: cashierPassword})
	till := server.addService("till", "st-peter:lookup")
	ctx := context.Background()
	// One client hears of the revocation on the feed; the other, with the feed off, only
	// from st-peter refusing its token.
	client, watch := watchedClient(t, server.target(), stpeter.WithAPIKey(till.APIKey))
	unfollowed, unfollowedWatch := watchedClient(t, server.target(), stpeter.WithAPIKey(till.APIKey),
		stpeter.WithRevocationFeed(false), stpeter.WithInvalidTokenTTL(0))
	session := login(t, client, "cashier", cashierPassword)
	for _, c := range []*stpeter.Client{client, unfollowed} {
		if _, err := c.VerifyToken(ctx, session.Token); err != nil {
			t.Fatal(err)
		}
		if _, err := c.LookupUserAsService(ctx, "cashier"); err != nil {
			t.Fatal(err)
		}
	}
	awaitFeed(t, client, "the subscription", func(s stpeter.FeedStatus) bool { return s.Subscribed })
	before := client.FeedStatus().LastSequence

	server.revokeKey(till.KeyID)
	took := awaitFeed(t, client, "the key's revocation on the feed", func(s stpeter.FeedStatus) bool { return s.LastSequence > before })
	_, err := client.VerifyToken(ctx, noToken)
	if !errors.Is(err, stpeter.ErrAPIKeyRejected) {
		t.Fatalf("verify after the feed told of the key's revocation: %v", err)
	}
	// The feed dropped the token: the client exchanged at once, and sent it no more.
	if got := watch.codes("VerifyToken"); slices.Contains(got, codes.PermissionDenied) {
		t.Fatalf("the revoked service token was still sent: VerifyToken answers %v", got)
	}
	t.Logf("the feed told of the revocation after %s", took.Round(time.Millisecond))

	// The other exchanges again when its token is refused, and that is refused too.
	start := time.Now()
	for {
		_, err := unfollowed.VerifyToken(ctx, noToken)
		if errors.Is(err, stpeter.ErrAPIKeyRejected) {
			break
		}
		if !errors.Is(err, stpeter.ErrInvalidToken) {
			t.Fatalf("verify after the key was revoked: %v, want ErrInvalidToken until ErrAPIKeyRejected", err)
		}
		if time.Since(start) > feedDeadline {
			t.Fatalf("the revoked key's token still works %s after the revocation", feedDeadline)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := unfollowedWatch.codes("VerifyToken"); got[len(got)-1] != codes.PermissionDenied {
		t.Fatalf("want the last verify refused for its credentials, got %v", got)
	}
	if _, err := unfollowed.LookupUserAsService(ctx, "cashier"); !errors.Is(err, stpeter.ErrAPIKeyRejected) {
		t.Fatalf("lookup after the key was revoked: %v", err)
	}

	// A person's token verified now is not called invalid; a cached verdict would be
	// ErrInvalidToken the second time.
	fresh := login(t, client, "cashier", cashierPassword)
	for range 2 {
		_, err := client.VerifyToken(ctx, fresh.Token)
		if !errors.Is(err, stpeter.ErrAPIKeyRejected) || errors.Is(err, stpeter.ErrInvalidToken) {
			t.Fatalf("verify with a revoked key: %v", err)
		}
	}
	// The person's token was good all along: a new key of the service verifies it.
	replacement := server.createKey("till")
	other, _ := watchedClient(t, server.target(), stpeter.WithAPIKey(replacement.APIKey))
	if verified, err := other.VerifyToken(ctx, fresh.Token); err != nil || verified.User.Handle != "cashier" {
		t.Fatalf("verify with a new key: %+v, %v", verified, err)
	}
	if _, err := other.ExchangeAPIKey(ctx, till.APIKey); !errors.Is(err, stpeter.ErrAPIKeyRejected) {
		t.Fatalf("exchange of the revoked key: %v", err)
	}
}

func TestTheRevocationFeedRunsOnServiceCredentials(t *testing.T) {
	t.Parallel()
	server := startServiceServer(t)
	server.addUser(newUser{Handle: "cashier", Password: cashierPassword})
	till := server.addService("till") // verifying and the feed need no role
	client, watch := watchedClient(t, server.target(), append(longTTLs, stpeter.WithAPIKey(till.APIKey))...)
	ctx := context.Background()
	client.VerifyToken(ctx, "stp_feed-warm-up-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	awaitFeed(t, client, "the subscription on service credentials", func(s stpeter.FeedStatus) bool { return s.Subscribed })

	// Login and Logout ask for no caller credentials.
	elsewhere, _ := watchedClient(t, server.target(), stpeter.WithCacheTTL(0))
	token := login(t, elsewhere, "cashier", cashierPassword).Token
	if _, err := client.VerifyToken(ctx, token); err != nil {
		t.Fatal(err)
	}
	verifies := watch.count("VerifyToken")
	if _, err := client.VerifyToken(ctx, token); err != nil || watch.count("VerifyToken") != verifies {
		t.Fatalf("the second verify was not answered from the cache: %v", err)
	}

	if err := elsewhere.Logout(ctx, token); err != nil {
		t.Fatal(err)
	}
	took := awaitRefused(t, client, token, "a token logged out elsewhere")
	t.Logf("refused %s after the logout elsewhere returned (contract: about 1 s)", took.Round(time.Millisecond))

	sent := watch.sentBearers()
	for _, bearer := range watch.streamBearers() {
		if !slices.Contains(sent, bearer) {
			t.Fatal("a subscription was opened without the service token")
		}
	}
}

func TestTheServiceTokenIsRefreshedBeforeItExpires(t *testing.T) {
	t.Parallel()
	server := startServiceServer(t)
	cashierID := server.addUser(newUser{Handle: "cashier", Password: cashierPassword})
	till := server.addService("till", "st-peter:lookup")
	client, watch := watchedClient(t, server.target(), stpeter.WithAPIKey(till.APIKey), stpeter.WithInvalidTokenTTL(0))
	ctx := context.Background()
	session := login(t, client, "cashier", cashierPassword)

	// Refreshed once less than a third of 3 s is left: about every 2 s. The person's
	// token is verified from the cache mostly, noToken at st-peter every time; a lookup
	// once a second.
	const run = 10 * time.Second
	calls, lookups := 0, 0
	for start := time.Now(); time.Since(start) < run; calls++ {
		if _, err := client.VerifyToken(ctx, session.Token); err != nil {
			t.Fatalf("verify %d: %v", calls, err)
		}
		if _, err := client.VerifyToken(ctx, noToken); !errors.Is(err, stpeter.ErrInvalidToken) {
			t.Fatalf("verify %d of no token: %v", calls, err)
		}
		if time.Since(start) >= time.Duration(lookups)*time.Second {
			if found, err := client.LookupUserAsService(ctx, "cashier"); err != nil || found.UserID != cashierID {
				t.Fatalf("lookup %d: %+v, %v", lookups, found, err)
			}
			lookups++
		}
		time.Sleep(50 * time.Millisecond) // pacing, not waiting for anything
	}

	exchanges := watch.count("ExchangeApiKey")
	if exchanges < 3 || exchanges > 7 {
		t.Fatalf("%d exchanges in %s of %s tokens, want 5 or 6 (at least 3, never one per call)", exchanges, run, serviceTokenTTL)
	}
	if n := len(watch.sentBearers()); n != exchanges {
		t.Fatalf("%d service tokens sent for %d exchanges", n, exchanges)
	}
	// st-peter's own count: an audit line per exchange, written as it answers.
	deadline := time.Now().Add(2 * time.Second)
	for server.audits("api_key", "exchanged", till.UserID) < exchanges && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if audited := server.audits("api_key", "exchanged", till.UserID); audited != exchanges {
		t.Fatalf("the audit log has %d exchanges of the service, the wire %d", audited, exchanges)
	}
	// Refreshed before it expired, not after a refusal: no call was turned away.
	for _, method := range []string{"VerifyToken", "LookupUser", "ExchangeApiKey"} {
		refused := map[codes.Code]int{}
		for _, code := range watch.codes(method) {
			if code != codes.OK && !(method == "VerifyToken" && code == codes.Unauthenticated) {
				refused[code]++
			}
		}
		if len(refused) > 0 {
			t.Fatalf("%s answered %v (of %d calls)", method, refused, watch.count(method))
		}
	}
	awaitFeed(t, client, "the feed after the refreshes", func(s stpeter.FeedStatus) bool { return s.Subscribed })
	t.Logf("%d rounds, %d lookups, %d VerifyToken RPCs, %d exchanges, %d subscriptions of the feed with %d distinct tokens",
		calls, lookups, watch.count("VerifyToken"), exchanges, client.FeedStatus().Subscriptions, len(distinct(watch.streamBearers())))
}

func distinct(list []string) []string {
	var out []string
	for _, s := range list {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func TestConcurrentCallersAtARefreshShareOneExchange(t *testing.T) {
	t.Parallel()
	server := startServiceServer(t)
	till := server.addService("till", "st-peter:lookup")
	clock := newStoppedClock()
	// The feed off: a resubscription would need a token too, and this counts exchanges.
	client, watch := watchedClient(t, server.target(), stpeter.WithAPIKey(till.APIKey),
		stpeter.WithClock(clock.now), stpeter.WithRevocationFeed(false))
	ctx := context.Background()
	if _, err := client.LookupUserAsService(ctx, "till"); err != nil {
		t.Fatal(err)
	}

	// Three quarters of the token's life gone, on the client's clock (it is still good at
	// st-peter): the next callers refresh it, while the exchange stays in flight. Half
	// look up (st-peter allows 20 lookups at once), half verify tokens of their own.
	clock.advance(serviceTokenTTL * 3 / 4)
	watch.delayExchanges(300 * time.Millisecond)
	const callers = 32
	gate := make(chan struct{})
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-gate
			if i%2 == 0 {
				_, err := client.LookupUserAsService(ctx, "till")
				errs <- err
				return
			}
			_, err := client.VerifyToken(ctx, fmt.Sprintf("%s%02d", noToken[:len(noToken)-2], i))
			if errors.Is(err, stpeter.ErrInvalidToken) {
				err = nil // the right answer about a token that is no token
			}
			errs <- err
		})
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a caller at the refresh: %v", err)
		}
	}
	if exchanges, atOnce := watch.count("ExchangeApiKey"), watch.mostExchangesAtOnce(); exchanges != 2 || atOnce != 1 {
		t.Fatalf("%d exchanges, %d at once; want 2 (the first and one refresh) and 1", exchanges, atOnce)
	}
	lookups, verifies, tokens := watch.count("LookupUser"), watch.count("VerifyToken"), len(watch.sentBearers())
	if lookups != callers/2+1 || verifies != callers/2 || tokens != 2 {
		t.Fatalf("%d lookups and %d verifies with %d tokens, want %d and %d with 2", lookups, verifies, tokens, callers/2+1, callers/2)
	}
}

func TestARefusedServiceTokenIsReplacedAndTheCallMadeOnceMore(t *testing.T) {
	t.Parallel()
	server := startServiceServer(t)
	till := server.addService("till", "st-peter:lookup")
	// The feed off: it would drop a revoked service token before a call is refused for it.
	client, watch := watchedClient(t, server.target(), stpeter.WithAPIKey(till.APIKey), stpeter.WithRevocationFeed(false))
	ctx := context.Background()
	if _, err := client.LookupUserAsService(ctx, "till"); err != nil {
		t.Fatal(err)
	}
	first := watch.sentBearers()[0]

	// The service token revoked with the admin CLI, its key still good. The server learns
	// of a revocation made on its database from the database, within moments; this
	// client sends nothing until another service sees the token refused.
	auditor := server.addService("auditor")
	checker, _ := watchedClient(t, server.target(), stpeter.WithAPIKey(auditor.APIKey),
		stpeter.WithCacheTTL(0), stpeter.WithInvalidTokenTTL(0))
	revoke := func(token string) {
		t.Helper()
		server.revokeSession(token)
		start := time.Now()
		for {
			_, err := checker.VerifyToken(ctx, token)
			if errors.Is(err, stpeter.ErrInvalidToken) {
				return
			}
			if err != nil || time.Since(start) > feedDeadline {
				t.Fatalf("the revoked service token is still valid at st-peter after %s: %v", time.Since(start), err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	revoke(first)
	if found, err := client.LookupUserAsService(ctx, "till"); err != nil || found.UserID != till.UserID {
		t.Fatalf("lookup after the service token was revoked: %+v, %v", found, err)
	}
	want := []codes.Code{codes.OK, codes.PermissionDenied, codes.OK}
	if got := watch.codes("LookupUser"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("LookupUser answers %v, want %v", got, want)
	}
	second := watch.sentBearers()[1]

	// VerifyToken likewise; its answer is then about the token asked, the first one.
	revoke(second)
	if _, err := client.VerifyToken(ctx, first); !errors.Is(err, stpeter.ErrInvalidToken) {
		t.Fatalf("verify of the revoked first service token: %v", err)
	}
	want = []codes.Code{codes.PermissionDenied, codes.Unauthenticated}
	if got := watch.codes("VerifyToken"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("VerifyToken answers %v, want %v", got, want)
	}
	if n := watch.count("ExchangeApiKey"); n != 3 {
		t.Fatalf("exchanges = %d, want 3", n)
	}
}
