package stpeter_test

import (
	"context"
	"errors"
	"testing"
	"time"

	stpeter "github.com/st-peter/st-peter/client/go"
)

func TestNothingListeningIsUnavailable(t *testing.T) {
	client, err := stpeter.Connect("http://"+freeAddr(t), stpeter.WithRequestTimeout(2*time.Second))
	if err != nil {
		t.Fatalf("Connect must be lazy, got %v", err)
	}
	defer client.Close()
	ctx := context.Background()
	_, err = client.VerifyToken(ctx, "stp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	if !errors.Is(err, stpeter.ErrUnavailable) || errors.Is(err, stpeter.ErrInvalidToken) {
		t.Fatalf("verify with nothing listening: %v", err)
	}
	if _, err := client.Login(ctx, "cashier", "knock knock, who goes there"); !errors.Is(err, stpeter.ErrUnavailable) {
		t.Fatalf("login with nothing listening: %v", err)
	}
	if _, err := client.VerifyTwoFactor(ctx, "stc_x", "123456"); !errors.Is(err, stpeter.ErrUnavailable) {
		t.Fatalf("verify two-factor with nothing listening: %v", err)
	}
	if _, err := client.LookupUser(ctx, "a", "b", "c"); !errors.Is(err, stpeter.ErrUnavailable) {
		t.Fatalf("lookup with nothing listening: %v", err)
	}
	if err := client.Logout(ctx, "stp_x"); !errors.Is(err, stpeter.ErrUnavailable) {
		t.Fatalf("logout with nothing listening: %v", err)
	}
	if client.CachedAnswers() != 0 {
		t.Fatal("a transport error was cached")
	}
}

func TestStoppedServerIsUnavailableAndNotCached(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client, counter := countingClient(t, server.target(), stpeter.WithRequestTimeout(2*time.Second))
	ctx := context.Background()
	token := login(t, client, "cashier", "knock knock, who goes there").Token

	server.stop()
	for range 2 {
		if _, err := client.VerifyToken(ctx, token); !errors.Is(err, stpeter.ErrUnavailable) {
			t.Fatalf("verify with the server stopped: %v", err)
		}
	}
	if got := counter.get("VerifyToken"); got != 2 {
		t.Fatalf("RPCs = %d, want 2 (errors are not cached)", got)
	}

	server.start()
	// The channel reconnects with backoff; the answer comes once it has.
	deadline := time.Now().Add(20 * time.Second)
	for {
		verified, err := client.VerifyToken(ctx, token)
		if err == nil {
			if verified.User.Handle != "cashier" {
				t.Fatalf("verified %+v", verified)
			}
			break
		}
		if !errors.Is(err, stpeter.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("verify after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCallerCancellationDoesNotWaitForTheRPC(t *testing.T) {
	client, err := stpeter.Connect("http://" + freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = client.VerifyToken(ctx, "stp_x")
	if !errors.Is(err, stpeter.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled verify: %v", err)
	}
}
