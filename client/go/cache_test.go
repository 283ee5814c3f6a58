package stpeter_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	stpeter "github.com/st-peter/st-peter/client/go"
)

// movableClock is the clock the client's cache reads; tests move it instead of sleeping.
type movableClock struct{ offset atomic.Int64 }

func (c *movableClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *movableClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func TestSecondVerifyIsAnsweredFromTheCache(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	clock := &movableClock{}
	client, counter := subscribedClient(t, server.target(), stpeter.WithClock(clock.now))
	ctx := context.Background()
	token := login(t, client, "cashier", "knock knock, who goes there").Token

	first, err := client.VerifyToken(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	first.Roles = append(first.Roles, "tampered")
	second, err := client.VerifyToken(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if got := counter.get("VerifyToken"); got != 1 {
		t.Fatalf("VerifyToken RPCs = %d, want 1", got)
	}
	if second.User.Handle != "cashier" || len(second.Roles) != 0 {
		t.Fatalf("cached answer = %+v (a caller's change leaked into the cache?)", second)
	}
	if client.CachedAnswers() != 1 {
		t.Fatalf("cached answers = %d", client.CachedAnswers())
	}

	// While the feed is subscribed the answer lives the default 5 minutes, far past the
	// fallback TTL.
	clock.advance(4*time.Minute + 59*time.Second)
	client.VerifyToken(ctx, token)
	if got := counter.get("VerifyToken"); got != 1 {
		t.Fatalf("VerifyToken RPCs at 4 min 59 s = %d, want 1", got)
	}
	clock.advance(2 * time.Second)
	if _, err := client.VerifyToken(ctx, token); err != nil {
		t.Fatal(err)
	}
	if got := counter.get("VerifyToken"); got != 2 {
		t.Fatalf("VerifyToken RPCs at 5 min 1 s = %d, want 2", got)
	}
}

func TestWithoutTheFeedAnswersLiveTheFallbackTTL(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	clock := &movableClock{}
	streams := &streamWatch{}
	client, counter := countingClient(t, server.target(), stpeter.WithClock(clock.now),
		stpeter.WithRevocationFeed(false), stpeter.WithDialOptions(grpc.WithStreamInterceptor(streams.interceptor())))
	ctx := context.Background()
	token := login(t, client, "cashier", "knock knock, who goes there").Token
	if _, err := client.VerifyToken(ctx, token); err != nil {
		t.Fatal(err)
	}
	clock.advance(4 * time.Second)
	client.VerifyToken(ctx, token)
	if got := counter.get("VerifyToken"); got != 1 {
		t.Fatalf("VerifyToken RPCs at 4 s = %d, want 1", got)
	}
	clock.advance(2 * time.Second)
	client.VerifyToken(ctx, token)
	if got := counter.get("VerifyToken"); got != 2 {
		t.Fatalf("VerifyToken RPCs at 6 s = %d, want 2 (the 5 s fallback TTL)", got)
	}
	if status, opened := client.FeedStatus(), streams.opened.Load(); status != (stpeter.FeedStatus{}) || opened != 0 {
		t.Fatalf("feed off, yet status %+v, %d streams opened", status, opened)
	}

	// The shorter of the two TTLs applies; a longer fallback is a setting.
	long, counter := countingClient(t, server.target(), stpeter.WithClock(clock.now),
		stpeter.WithRevocationFeed(false), stpeter.WithFallbackCacheTTL(time.Minute))
	long.VerifyToken(ctx, token)
	clock.advance(59 * time.Second)
	long.VerifyToken(ctx, token)
	if got := counter.get("VerifyToken"); got != 1 {
		t.Fatalf("VerifyToken RPCs at 59 s with a 1 min fallback = %d, want 1", got)
	}
	clock.advance(2 * time.Second)
	long.VerifyToken(ctx, token)
	if got := counter.get("VerifyToken"); got != 2 {
		t.Fatalf("VerifyToken RPCs at 61 s with a 1 min fallback = %d, want 2", got)
	}
}

func TestConcurrentVerifiesOfOneTokenMakeOneRPC(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client, counter := subscribedClient(t, server.target())
	token := login(t, client, "cashier", "knock knock, who goes there").Token

	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			verified, err := client.VerifyToken(context.Background(), token)
			if err == nil && verified.User.Handle != "cashier" {
				err = errors.New("wrong user " + verified.User.Handle)
			}
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := counter.get("VerifyToken"); got != 1 {
		t.Fatalf("100 concurrent verifies made %d RPCs, want 1", got)
	}
}

func TestCacheNeverServesPastTheTokensExpiry(t *testing.T) {
	// Sessions live 30 s here, less than the 5 min cache TTL.
	server := startServer(t, "--session-ttl", "30s")
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	clock := &movableClock{}
	client, counter := subscribedClient(t, server.target(), stpeter.WithClock(clock.now))
	ctx := context.Background()
	session := login(t, client, "cashier", "knock knock, who goes there")
	verified, err := client.VerifyToken(ctx, session.Token)
	if err != nil {
		t.Fatal(err)
	}
	if d := verified.ExpiresAt.Sub(time.Now()); d > 30*time.Second || d < 20*time.Second {
		t.Fatalf("token expires in %v, want about 30 s", d)
	}
	clock.advance(verified.ExpiresAt.Sub(clock.now()) - 3*time.Second)
	client.VerifyToken(ctx, session.Token)
	if got := counter.get("VerifyToken"); got != 1 {
		t.Fatalf("RPCs before expiry = %d, want 1", got)
	}
	clock.advance(4 * time.Second)
	client.VerifyToken(ctx, session.Token) // the server's own clock has not moved: still valid
	if got := counter.get("VerifyToken"); got != 2 {
		t.Fatalf("RPCs past the token's expiry = %d, want 2 (served a stale answer)", got)
	}
}

func TestInvalidTokensAreCachedBriefly(t *testing.T) {
	server := startServer(t)
	clock := &movableClock{}
	client, counter := subscribedClient(t, server.target(), stpeter.WithClock(clock.now))
	ctx := context.Background()
	bogus := "stp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	for range 3 {
		if _, err := client.VerifyToken(ctx, bogus); !errors.Is(err, stpeter.ErrInvalidToken) {
			t.Fatalf("bogus token: %v", err)
		}
	}
	if got := counter.get("VerifyToken"); got != 1 {
		t.Fatalf("RPCs = %d, want 1", got)
	}
	clock.advance(6 * time.Second)
	client.VerifyToken(ctx, bogus)
	if got := counter.get("VerifyToken"); got != 2 {
		t.Fatalf("RPCs after 6 s = %d, want 2", got)
	}

	// Zero turns it off.
	uncached, counter2 := countingClient(t, server.target(), stpeter.WithInvalidTokenTTL(0))
	uncached.VerifyToken(ctx, bogus)
	uncached.VerifyToken(ctx, bogus)
	if got := counter2.get("VerifyToken"); got != 2 {
		t.Fatalf("RPCs without invalid caching = %d, want 2", got)
	}
}

func TestCacheTTLAndCapacityAreSettings(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	clock := &movableClock{}
	client, counter := subscribedClient(t, server.target(), stpeter.WithClock(clock.now),
		stpeter.WithCacheTTL(20*time.Second), stpeter.WithCacheCapacity(2))
	ctx := context.Background()
	tokens := []string{
		login(t, client, "cashier", "knock knock, who goes there").Token,
		login(t, client, "cashier", "knock knock, who goes there").Token,
		login(t, client, "cashier", "knock knock, who goes there").Token,
	}
	for _, token := range tokens {
		if _, err := client.VerifyToken(ctx, token); err != nil {
			t.Fatal(err)
		}
	}
	if client.CachedAnswers() != 2 {
		t.Fatalf("cached answers = %d, want the capacity 2", client.CachedAnswers())
	}
	// The least recently used (the first) was evicted; the last two are cached.
	client.VerifyToken(ctx, tokens[2])
	client.VerifyToken(ctx, tokens[1])
	if got := counter.get("VerifyToken"); got != 3 {
		t.Fatalf("RPCs = %d, want 3", got)
	}
	client.VerifyToken(ctx, tokens[0])
	if got := counter.get("VerifyToken"); got != 4 {
		t.Fatalf("RPCs = %d, want 4 (the first token was evicted)", got)
	}
	clock.advance(19 * time.Second)
	client.VerifyToken(ctx, tokens[0])
	if got := counter.get("VerifyToken"); got != 4 {
		t.Fatalf("RPCs within the 20 s TTL = %d, want 4", got)
	}
	clock.advance(2 * time.Second)
	client.VerifyToken(ctx, tokens[0])
	if got := counter.get("VerifyToken"); got != 5 {
		t.Fatalf("RPCs after the 20 s TTL = %d, want 5", got)
	}
}

func TestLogoutEvictsOnlyItsOwnToken(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client, counter := subscribedClient(t, server.target())
	ctx := context.Background()
	leaving := login(t, client, "cashier", "knock knock, who goes there").Token
	staying := login(t, client, "cashier", "knock knock, who goes there").Token
	client.VerifyToken(ctx, leaving)
	client.VerifyToken(ctx, staying)
	if err := client.Logout(ctx, leaving); err != nil {
		t.Fatal(err)
	}
	if client.CachedAnswers() != 1 {
		t.Fatalf("cached answers after logout = %d, want 1", client.CachedAnswers())
	}
	if _, err := client.VerifyToken(ctx, staying); err != nil {
		t.Fatal(err)
	}
	if _, err := client.VerifyToken(ctx, leaving); !errors.Is(err, stpeter.ErrInvalidToken) {
		t.Fatalf("logged-out token: %v", err)
	}
	if got := counter.get("VerifyToken"); got != 3 {
		t.Fatalf("RPCs = %d, want 3", got)
	}
}
