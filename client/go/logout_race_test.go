package stpeter_test

// Logout(T) racing an in-flight VerifyToken(T) on the same client: once Logout has
// returned, no answer from before the revocation may be served, from the cache or from a
// fetch that began before it.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	stpeter "github.com/st-peter/st-peter/client/go"
)

// responseHold holds the next VerifyToken response, already answered by st-peter, until
// released: a slow network at a chosen moment, which a real server cannot be asked for.
type responseHold struct {
	mu      sync.Mutex
	armed   bool
	reached chan struct{}
	release chan struct{}
}

func (h *responseHold) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed = true
	h.reached = make(chan struct{})
	h.release = make(chan struct{})
}

func (h *responseHold) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		h.mu.Lock()
		held := h.armed && strings.HasSuffix(method, "/VerifyToken")
		h.armed = h.armed && !held
		reached, release := h.reached, h.release
		h.mu.Unlock()
		if held {
			close(reached)
			<-release
		}
		return err
	}
}

func TestLogoutRacingAnInFlightVerifyLeavesNoStaleAnswer(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	hold := &responseHold{}
	client, err := stpeter.Connect(server.target(),
		stpeter.WithDialOptions(grpc.WithChainUnaryInterceptor(hold.interceptor())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()
	// Production argon2 in the server binary makes logins the slow part: two tokens per
	// login would be a different test, so one login per round, few rounds.
	const rounds = 20
	staleLate, staleCached := 0, 0
	for range rounds {
		token := login(t, client, "cashier", "knock knock, who goes there").Token
		hold.arm()
		early := make(chan error, 1)
		go func() { _, err := client.VerifyToken(ctx, token); early <- err }()
		select {
		case <-hold.reached:
		case <-time.After(10 * time.Second):
			t.Fatal("the held verify never reached st-peter")
		}
		if err := client.Logout(ctx, token); err != nil {
			t.Fatal(err)
		}
		// Started after Logout returned: must not share the fetch from before it.
		late := make(chan error, 1)
		go func() { _, err := client.VerifyToken(ctx, token); late <- err }()
		time.Sleep(5 * time.Millisecond)
		close(hold.release)
		<-early // concurrent with the logout: either answer is right
		select {
		case err := <-late:
			if err == nil {
				staleLate++
			} else if !errors.Is(err, stpeter.ErrInvalidToken) {
				t.Fatalf("late verify: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the late verify did not answer")
		}
		if _, err := client.VerifyToken(ctx, token); err == nil {
			staleCached++
		} else if !errors.Is(err, stpeter.ErrInvalidToken) {
			t.Fatalf("verify after logout: %v", err)
		}
	}
	if staleLate+staleCached > 0 {
		t.Fatalf("stale answers after logout in %d rounds: %d from a fetch begun before it, %d from the cache",
			rounds, staleLate, staleCached)
	}
}
