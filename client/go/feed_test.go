package stpeter_test

// The revocation feed against the real st-peter binary: revocations made elsewhere (a
// second client, the admin CLI on the same SQLite file, while the server is down, on a
// new database) reach a client's cache without waiting for a TTL.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	stpeter "github.com/st-peter/st-peter/client/go"
)

// longTTLs keep cached answers for 10 minutes subscribed or not: only the feed can
// evict them within a test.
var longTTLs = []stpeter.Option{
	stpeter.WithCacheTTL(10 * time.Minute),
	stpeter.WithFallbackCacheTTL(10 * time.Minute),
}

// fastReconnect shortens the connection's reconnect backoff (grpc-go's default starts at
// 1 s and grows by 1.6): the tests that restart the server are about what the feed does
// once it is back, not about how long the channel waits to notice.
var fastReconnect = stpeter.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
	MinConnectTimeout: time.Second,
}))

// awaitRefused verifies token until it is refused as invalid, and answers how long that
// took. An available answer in between is the cache still serving it.
func awaitRefused(t *testing.T, client *stpeter.Client, token, why string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		_, err := client.VerifyToken(context.Background(), token)
		if errors.Is(err, stpeter.ErrInvalidToken) {
			return time.Since(start)
		}
		if err != nil && !errors.Is(err, stpeter.ErrUnavailable) {
			t.Fatalf("%s: verify: %v", why, err)
		}
		if time.Since(start) > feedDeadline {
			t.Fatalf("%s: still not refused after %s (last error %v, feed status %+v)",
				why, feedDeadline, err, client.FeedStatus())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cachedNow verifies token and fails unless the answer came from the cache.
func cachedNow(t *testing.T, client *stpeter.Client, counter *rpcCounter, token string) *stpeter.VerifiedUser {
	t.Helper()
	before := counter.get("VerifyToken")
	verified, err := client.VerifyToken(context.Background(), token)
	if err != nil {
		t.Fatalf("verify of a cached token: %v", err)
	}
	if got := counter.get("VerifyToken"); got != before {
		t.Fatalf("verify made %d RPC(s), want it answered from the cache", got-before)
	}
	return verified
}

func TestATokenLoggedOutByAnotherClientIsRefusedOnceTheFeedSaysSo(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	caching, counter := subscribedClient(t, server.target(), longTTLs...)
	other, _ := countingClient(t, server.target(), stpeter.WithCacheTTL(0))
	token := login(t, other, "cashier", "knock knock, who goes there").Token
	if _, err := caching.VerifyToken(context.Background(), token); err != nil {
		t.Fatal(err)
	}
	cachedNow(t, caching, counter, token)
	if other.FeedStatus().Subscriptions != 0 {
		t.Fatal("a client with its cache off subscribed to the feed")
	}

	if err := other.Logout(context.Background(), token); err != nil {
		t.Fatal(err)
	}
	took := awaitRefused(t, caching, token, "a token logged out by another client")
	t.Logf("refused %s after the other client's logout returned (contract: 1 s)", took.Round(time.Millisecond))
	if status := caching.FeedStatus(); status.LastSequence == 0 || !status.Subscribed || status.Subscriptions != 1 {
		t.Fatalf("feed status after the logout event: %+v", status)
	}
}

func TestARoleGrantedWithTheCLIReachesCachedAnswers(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	server.addUser(newUser{Handle: "baker", Password: "open sesame, said Ali Baba"})
	client, counter := subscribedClient(t, server.target(), longTTLs...)
	ctx := context.Background()
	cashier := login(t, client, "cashier", "knock knock, who goes there").Token
	baker := login(t, client, "baker", "open sesame, said Ali Baba").Token
	for _, token := range []string{cashier, baker} {
		if _, err := client.VerifyToken(ctx, token); err != nil {
			t.Fatal(err)
		}
	}
	if roles := cachedNow(t, client, counter, cashier).Roles; len(roles) != 0 {
		t.Fatalf("roles before the grant: %v", roles)
	}

	start := time.Now()
	server.grantRole("cashier", "till")
	for {
		verified, err := client.VerifyToken(ctx, cashier)
		if err != nil {
			t.Fatal(err)
		}
		if verified.HasRole("till") {
			break
		}
		if time.Since(start) > feedDeadline {
			t.Fatalf("the cached roles did not change within %s: %v (feed status %+v)",
				feedDeadline, verified.Roles, client.FeedStatus())
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("new roles served %s after the CLI grant began (the CLI run included)", time.Since(start).Round(time.Millisecond))
	// Only that user's answers were evicted.
	cachedNow(t, client, counter, baker)
}

func TestAfterAnOutageTheFeedResumesFromItsSequenceAndReplaysWhatItMissed(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client, counter := subscribedClient(t, server.target(), append(longTTLs, fastReconnect)...)
	ctx := context.Background()
	revoked := login(t, client, "cashier", "knock knock, who goes there").Token
	kept := login(t, client, "cashier", "knock knock, who goes there").Token
	// A logout first, so the client has a sequence to resume from: a subscription from
	// zero would drop the whole cache and prove nothing about the replay.
	if err := client.Logout(ctx, login(t, client, "cashier", "knock knock, who goes there").Token); err != nil {
		t.Fatal(err)
	}
	awaitFeed(t, client, "the logout event", func(s stpeter.FeedStatus) bool { return s.LastSequence > 0 })
	for _, token := range []string{revoked, kept} {
		if _, err := client.VerifyToken(ctx, token); err != nil {
			t.Fatal(err)
		}
	}
	before := client.FeedStatus()

	server.stop()
	awaitFeed(t, client, "unsubscribed with the server stopped", func(s stpeter.FeedStatus) bool { return !s.Subscribed })
	server.revokeSession(revoked) // the CLI, on the same SQLite file, while no server runs
	cachedNow(t, client, counter, revoked)
	server.start()

	took := awaitRefused(t, client, revoked, "a token revoked while the server was down")
	t.Logf("refused %s after the server was back", took.Round(time.Millisecond))
	after := client.FeedStatus()
	if after.Subscriptions < 2 || after.LastSequence <= before.LastSequence {
		t.Fatalf("feed status before the outage %+v, after %+v: want a resubscription past the old sequence", before, after)
	}
	// A replay, not a dropped cache: the other token is still answered from it.
	cachedNow(t, client, counter, kept)
}

func TestAServerOnANewDatabaseTellsTheClientToResetItsCache(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client, _ := subscribedClient(t, server.target(), append(longTTLs, fastReconnect)...)
	ctx := context.Background()
	first := login(t, client, "cashier", "knock knock, who goes there").Token
	second := login(t, client, "cashier", "knock knock, who goes there").Token
	if err := client.Logout(ctx, login(t, client, "cashier", "knock knock, who goes there").Token); err != nil {
		t.Fatal(err)
	}
	awaitFeed(t, client, "the logout event", func(s stpeter.FeedStatus) bool { return s.LastSequence > 0 })
	for _, token := range []string{first, second} {
		if _, err := client.VerifyToken(ctx, token); err != nil {
			t.Fatal(err)
		}
	}
	if client.CachedAnswers() != 2 {
		t.Fatalf("cached answers = %d, want 2", client.CachedAnswers())
	}

	// The new log is empty: the client's sequence cannot be from it.
	server.restartOnNewDatabase()
	took := awaitRefused(t, client, first, "a token the new database does not know")
	t.Logf("refused %s after the server was back on a new database", took.Round(time.Millisecond))
	// Everything went, not only the token asked for: at most the refusal just made is
	// cached.
	if client.CachedAnswers() > 1 {
		t.Fatalf("cached answers after the reset = %d, want 1", client.CachedAnswers())
	}
	if _, err := client.VerifyToken(ctx, second); !errors.Is(err, stpeter.ErrInvalidToken) {
		t.Fatalf("the other token after the reset: %v", err)
	}
}

func TestAResubscriptionFromNowDropsWhatWasCachedBeforeIt(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client, counter := subscribedClient(t, server.target(), append(longTTLs, fastReconnect)...)
	token := login(t, client, "cashier", "knock knock, who goes there").Token
	if _, err := client.VerifyToken(context.Background(), token); err != nil {
		t.Fatal(err)
	}
	cachedNow(t, client, counter, token)
	if seq := client.FeedStatus().LastSequence; seq != 0 {
		t.Fatalf("last sequence %d on a log nothing was revoked in, want 0", seq)
	}

	// With no sequence to resume from, the client cannot learn what changed while it was
	// away: the first checkpoint of the new stream drops everything.
	server.stop()
	awaitFeed(t, client, "unsubscribed with the server stopped", func(s stpeter.FeedStatus) bool { return !s.Subscribed })
	server.start()
	awaitFeed(t, client, "subscribed again", func(s stpeter.FeedStatus) bool { return s.Subscribed })
	if n := client.CachedAnswers(); n != 0 {
		t.Fatalf("cached answers after a resubscription from now = %d, want 0", n)
	}
}

func TestWhileUnsubscribedACachedAnswerIsServedForTheFallbackTTLOnly(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	clock := newStoppedClock()
	const fallback = 300 * time.Millisecond
	client, counter := subscribedClient(t, server.target(), stpeter.WithClock(clock.now),
		stpeter.WithCacheTTL(10*time.Minute), stpeter.WithFallbackCacheTTL(fallback))
	ctx := context.Background()
	older := login(t, client, "cashier", "knock knock, who goes there").Token
	newer := login(t, client, "cashier", "knock knock, who goes there").Token
	if _, err := client.VerifyToken(ctx, older); err != nil {
		t.Fatal(err)
	}
	// Subscribed: the long TTL applies.
	clock.advance(time.Second)
	cachedNow(t, client, counter, older)
	if _, err := client.VerifyToken(ctx, newer); err != nil {
		t.Fatal(err)
	}

	server.stop()
	awaitFeed(t, client, "unsubscribed with the server stopped", func(s stpeter.FeedStatus) bool { return !s.Subscribed })
	cachedNow(t, client, counter, newer) // filled now: within the fallback TTL
	if _, err := client.VerifyToken(ctx, older); !errors.Is(err, stpeter.ErrUnavailable) {
		t.Fatalf("an answer filled 1 s ago, unsubscribed with a %s fallback: %v", fallback, err)
	}
	clock.advance(fallback - time.Millisecond)
	cachedNow(t, client, counter, newer)
	clock.advance(2 * time.Millisecond)
	if _, err := client.VerifyToken(ctx, newer); !errors.Is(err, stpeter.ErrUnavailable) {
		t.Fatalf("past the fallback TTL with the server stopped: %v", err)
	}
}

func TestManyConcurrentVerifiesStartOneSubscription(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client, _ := countingClient(t, server.target())
	tokens := []string{
		login(t, client, "cashier", "knock knock, who goes there").Token,
		login(t, client, "cashier", "knock knock, who goes there").Token,
		login(t, client, "cashier", "knock knock, who goes there").Token,
	}
	for i := range 30 {
		tokens = append(tokens, fmt.Sprintf("stp_%043d", i)) // well-formed, unknown
	}
	if n := client.FeedStatus().Subscriptions; n != 0 {
		t.Fatalf("%d subscriptions before the first verify, want none (lazy)", n)
	}

	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range tokens {
				client.VerifyToken(context.Background(), tokens[(g+i)%len(tokens)])
			}
		}()
	}
	close(start)
	wg.Wait()
	awaitFeed(t, client, "the subscription", func(s stpeter.FeedStatus) bool { return s.Subscribed })
	if n := client.FeedStatus().Subscriptions; n != 1 {
		t.Fatalf("%d subscriptions for one client, want 1", n)
	}
	// One per client, not one per process.
	second, _ := countingClient(t, server.target())
	second.VerifyToken(context.Background(), tokens[0])
	awaitFeed(t, second, "the second client's subscription", func(s stpeter.FeedStatus) bool { return s.Subscribed })
	if a, b := client.FeedStatus().Subscriptions, second.FeedStatus().Subscriptions; a != 1 || b != 1 {
		t.Fatalf("subscriptions: %d and %d, want 1 each", a, b)
	}
}

func TestCloseEndsTheSubscription(t *testing.T) {
	server := startServer(t)
	streams := &streamWatch{slowEnd: 200 * time.Millisecond}
	client, err := stpeter.Connect(server.target(), stpeter.WithDialOptions(grpc.WithStreamInterceptor(streams.interceptor())))
	if err != nil {
		t.Fatal(err)
	}
	client.VerifyToken(context.Background(), "stp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	awaitFeed(t, client, "the subscription", func(s stpeter.FeedStatus) bool { return s.Subscribed })
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waits for the subscription to end, however slowly its stream ends.
	status := client.FeedStatus()
	if opened, ended := streams.opened.Load(), streams.ended.Load(); opened != 1 || ended != 1 || status.Subscribed {
		t.Fatalf("after Close: %d streams opened, %d ended, status %+v", opened, ended, status)
	}
	client.VerifyToken(context.Background(), "stp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	if n := client.FeedStatus().Subscriptions; n != 1 || streams.opened.Load() != 1 {
		t.Fatalf("a verify after Close subscribed again: %d subscriptions", n)
	}
}
