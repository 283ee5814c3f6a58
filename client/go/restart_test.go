package stpeter_test

// One client, made before the first restart, while the real st-peter process is stopped
// with SIGTERM and started again on the same port and database several times.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	stpeter "github.com/st-peter/st-peter/client/go"
)

const (
	restarts = 3
	// outage is how long the server stays down, so calls land in it.
	outage = 400 * time.Millisecond
	// recovery bounds how long the client may take to reach a server that is back.
	recovery = 20 * time.Second
)

// uncachedClient makes every verify an RPC: the cache would hide the outage.
func uncachedClient(t *testing.T, server *testServer) *stpeter.Client {
	t.Helper()
	client, err := stpeter.Connect(server.target(),
		stpeter.WithCacheTTL(0),
		stpeter.WithInvalidTokenTTL(0),
		stpeter.WithRequestTimeout(2*time.Second),
		stpeter.WithConnectTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func TestCallsAcrossRestartsAreUnavailableOrRightAndSucceedOnceBack(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client := uncachedClient(t, server)
	token := login(t, client, "cashier", "knock knock, who goes there").Token
	bogus := "stp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

	var answered, unavailable atomic.Int64
	var stop atomic.Bool
	wrong := make(chan []string, 1)
	go func() {
		var seen []string
		defer func() {
			if p := recover(); p != nil {
				seen = append(seen, fmt.Sprintf("panic: %v", p))
			}
			wrong <- seen
		}()
		ctx := context.Background()
		deadline := time.Now().Add(2 * time.Minute)
		for i := 0; i < 100_000 && !stop.Load() && time.Now().Before(deadline); i++ {
			// A valid token is valid or unanswerable; a bogus one is invalid or
			// unanswerable. Any other answer is a wrong verdict.
			_, err := client.VerifyToken(ctx, token)
			switch {
			case err == nil:
				answered.Add(1)
			case errors.Is(err, stpeter.ErrUnavailable):
				unavailable.Add(1)
			default:
				seen = append(seen, fmt.Sprintf("valid token: %v", err))
			}
			_, err = client.VerifyToken(ctx, bogus)
			switch {
			case errors.Is(err, stpeter.ErrInvalidToken):
				answered.Add(1)
			case errors.Is(err, stpeter.ErrUnavailable):
				unavailable.Add(1)
			default:
				seen = append(seen, fmt.Sprintf("bogus token: %v", err))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	answeredSince := func(since int64) {
		t.Helper()
		deadline := time.Now().Add(recovery)
		for answered.Load() <= since {
			if time.Now().After(deadline) {
				stop.Store(true)
				t.Fatalf("no call succeeded within %s of st-peter being back", recovery)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	answeredSince(0)
	for range restarts {
		if err := server.terminate(); err != nil {
			t.Errorf("on SIGTERM: %v", err)
		}
		time.Sleep(outage)
		server.start()
		answeredSince(answered.Load())
	}
	stop.Store(true)
	if seen := <-wrong; len(seen) > 0 {
		t.Fatalf("wrong verdicts (%d): %q", len(seen), seen)
	}
	if unavailable.Load() == 0 {
		t.Fatal("no call landed in an outage")
	}
	if _, err := client.VerifyToken(context.Background(), login(t, client, "cashier", "knock knock, who goes there").Token); err != nil {
		t.Fatalf("verify after the restarts: %v", err)
	}
}

func TestTheFirstCallOnAnIdleConnectionAfterARestartSucceeds(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client := uncachedClient(t, server)
	token := login(t, client, "cashier", "knock knock, who goes there").Token
	ctx := context.Background()
	if _, err := client.VerifyToken(ctx, token); err != nil {
		t.Fatal(err)
	}
	for restart := 1; restart <= restarts; restart++ {
		// A graceful stop sends GOAWAY on the idle connection, then closes it.
		if err := server.terminate(); err != nil {
			t.Errorf("on SIGTERM: %v", err)
		}
		server.start()
		if _, err := client.VerifyToken(ctx, token); err != nil {
			t.Fatalf("first call after restart %d: %v", restart, err)
		}
	}
}
