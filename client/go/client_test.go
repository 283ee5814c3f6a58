package stpeter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	stpeter "github.com/st-peter/st-peter/client/go"
)

func login(t *testing.T, client *stpeter.Client, identifier, password string) *stpeter.Authenticated {
	t.Helper()
	result, err := client.Login(context.Background(), identifier, password)
	if err != nil {
		t.Fatalf("login %s: %v", identifier, err)
	}
	session, ok := result.(*stpeter.Authenticated)
	if !ok {
		t.Fatalf("login %s: want *Authenticated, got %#v", identifier, result)
	}
	return session
}

func TestLoginVerifyLookupAndLogout(t *testing.T) {
	server := startServer(t)
	bakerID := server.addUser(newUser{Handle: "lead-baker", Email: "lead-baker@bakery.example", Phone: "+15551234567", DisplayName: "Lead Baker", Password: "open sesame, said Ali Baba"})
	server.grantRole("lead-baker", "baker")
	server.grantRole("lead-baker", "admin")
	cashierID := server.addUser(newUser{Handle: "cashier", Email: "cashier@bakery.example", Password: "knock knock, who goes there"})
	client, counter := countingClient(t, server.target())
	ctx := context.Background()

	session := login(t, client, "LEAD-BAKER@Bakery.Example", "open sesame, said Ali Baba")
	want := stpeter.User{UserID: bakerID, Handle: "lead-baker", Email: "lead-baker@bakery.example", Phone: "+15551234567", DisplayName: "Lead Baker", Kind: stpeter.UserKindHuman}
	if session.User != want {
		t.Fatalf("session user = %+v, want %+v", session.User, want)
	}
	if !strings.HasPrefix(session.Token, "stp_") || !session.ExpiresAt.After(time.Now()) {
		t.Fatalf("session token or expiry looks wrong: %v", session.ExpiresAt)
	}
	for _, printed := range []string{fmt.Sprint(session), fmt.Sprintf("%v %+v %#v %s", session, session, session, session)} {
		if strings.Contains(printed, session.Token) {
			t.Fatalf("printing a session shows its token: %s", printed)
		}
	}

	verified, err := client.VerifyToken(ctx, session.Token)
	if err != nil {
		t.Fatal(err)
	}
	if verified.User != want || !slices.Equal(verified.Roles, []string{"admin", "baker"}) || !verified.HasRole("baker") || verified.HasRole("owner") {
		t.Fatalf("verified = %+v", verified)
	}
	if !verified.ExpiresAt.Equal(session.ExpiresAt) {
		t.Fatalf("verified expiry %v != session expiry %v", verified.ExpiresAt, session.ExpiresAt)
	}

	found, err := client.LookupUser(ctx, bakerID, session.Token, "CASHIER@bakery.example")
	if err != nil || found.UserID != cashierID || found.Handle != "cashier" || found.Phone != "" {
		t.Fatalf("lookup = %+v, %v", found, err)
	}
	_, err = client.LookupUser(ctx, bakerID, session.Token, "ghost")
	if !errors.Is(err, stpeter.ErrNotFound) {
		t.Fatalf("lookup of nobody: %v", err)
	}
	_, err = client.LookupUser(ctx, cashierID, session.Token, "cashier")
	if !errors.Is(err, stpeter.ErrInvalidToken) {
		t.Fatalf("lookup with someone else's token: %v", err)
	}

	if err := client.Logout(ctx, session.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := client.VerifyToken(ctx, session.Token); !errors.Is(err, stpeter.ErrInvalidToken) {
		t.Fatalf("verify after logout: %v", err)
	}
	if got := counter.get("VerifyToken"); got != 2 {
		t.Fatalf("VerifyToken RPCs = %d, want 2 (logout evicts the cached answer)", got)
	}
	// Logging out an unknown or already revoked token succeeds.
	if err := client.Logout(ctx, session.Token); err != nil {
		t.Fatal(err)
	}
}

func TestFailedLoginsAreResultsNotErrors(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "cashier", Password: "knock knock, who goes there"})
	client, _ := countingClient(t, server.target())
	ctx := context.Background()
	wrong, err := client.Login(ctx, "cashier", "wrong-password")
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := client.Login(ctx, "nobody", "knock knock, who goes there")
	if err != nil {
		t.Fatal(err)
	}
	for _, result := range []stpeter.LoginResult{wrong, unknown} {
		failed, ok := result.(*stpeter.Failed)
		if !ok || failed.Reason != stpeter.InvalidCredentials || failed.RetryAfter != 0 {
			t.Fatalf("want invalid credentials, got %#v", result)
		}
	}
}

func TestTwoFactorLogin(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "night-owl", Password: "whooo-whooo"})
	uri := server.enrollTOTP("night-owl")
	client, _ := countingClient(t, server.target())
	ctx := context.Background()

	challenge := func() *stpeter.TwoFactor {
		result, err := client.Login(ctx, "night-owl", "whooo-whooo")
		if err != nil {
			t.Fatal(err)
		}
		tf, ok := result.(*stpeter.TwoFactor)
		if !ok || tf.TwoFactorID == "" || !slices.Contains(tf.Methods, stpeter.TOTP) || !tf.ExpiresAt.After(time.Now()) {
			t.Fatalf("want a TOTP challenge, got %#v", result)
		}
		return tf
	}

	first := challenge()
	wrong, err := client.VerifyTwoFactor(ctx, first.TwoFactorID, wrongTOTPCode(t, uri, time.Now()))
	if failed, ok := wrong.(*stpeter.Failed); err != nil || !ok || failed.Reason != stpeter.InvalidCode {
		t.Fatalf("wrong code: %#v, %v", wrong, err)
	}
	code := totpCode(t, uri, time.Now())
	result, err := client.VerifyTwoFactor(ctx, first.TwoFactorID, code)
	session, ok := result.(*stpeter.Authenticated)
	if err != nil || !ok || session.User.Handle != "night-owl" {
		t.Fatalf("right code: %#v, %v", result, err)
	}
	verified, err := client.VerifyToken(ctx, session.Token)
	if err != nil || verified.User.Handle != "night-owl" {
		t.Fatalf("verify two-factor session: %+v, %v", verified, err)
	}

	// The same code again, on a new challenge: a replay.
	replay, err := client.VerifyTwoFactor(ctx, challenge().TwoFactorID, code)
	if failed, ok := replay.(*stpeter.Failed); err != nil || !ok || failed.Reason != stpeter.InvalidCode {
		t.Fatalf("replayed code: %#v, %v", replay, err)
	}
}

func TestMalformedInputIsInvalidArgumentNamingTheField(t *testing.T) {
	server := startServer(t)
	client, _ := countingClient(t, server.target())
	ctx := context.Background()
	_, err := client.Login(ctx, "", "x")
	var e *stpeter.Error
	if !errors.Is(err, stpeter.ErrInvalidArgument) || !errors.As(err, &e) || e.Message != "identifier: must not be empty" {
		t.Fatalf("empty identifier: %v", err)
	}
	_, err = client.VerifyToken(ctx, "")
	if !errors.Is(err, stpeter.ErrInvalidArgument) || !errors.As(err, &e) || e.Message != "token: must not be empty" {
		t.Fatalf("empty token: %v", err)
	}
	if errors.Is(err, stpeter.ErrInvalidToken) || errors.Is(err, stpeter.ErrUnavailable) {
		t.Fatalf("one error, one kind: %v", err)
	}
}

func TestInvalidTargetsAreRefusedAtConnect(t *testing.T) {
	for _, target := range []string{"", "http://", "http://127.0.0.1", "https://example.invalid:443/path"} {
		if _, err := stpeter.Connect(target); !errors.Is(err, stpeter.ErrInvalidTarget) {
			t.Errorf("Connect(%q) = %v, want ErrInvalidTarget", target, err)
		}
	}
}

func TestVersionIsTheRepositoryVersion(t *testing.T) {
	file, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(file)); stpeter.Version != want {
		t.Fatalf("Version = %q, VERSION file says %q", stpeter.Version, want)
	}
}
