package stpeter_test

// Passkeys against the real server, with a software authenticator
// (github.com/descope/virtualwebauthn) playing the browser and the platform passkey.

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/descope/virtualwebauthn"

	stpeter "github.com/st-peter/st-peter/client/go"
)

const (
	passkeyRPID   = "localhost"
	passkeyOrigin = "https://localhost"
)

// webauthnArgs are the server flags of a st-peter that does passkeys for passkeyOrigin.
var webauthnArgs = []string{"--webauthn-rp-id", passkeyRPID, "--webauthn-origin", passkeyOrigin}

// softPasskey is a browser with one authenticator holding at most one credential (a
// discoverable one: it keeps the user handle the registration options gave).
type softPasskey struct {
	t             *testing.T
	rp            virtualwebauthn.RelyingParty
	authenticator virtualwebauthn.Authenticator
	credential    virtualwebauthn.Credential
}

func newSoftPasskey(t *testing.T, origin string) *softPasskey {
	return &softPasskey{
		t:             t,
		rp:            virtualwebauthn.RelyingParty{ID: passkeyRPID, Name: "st-peter", Origin: origin},
		authenticator: virtualwebauthn.NewAuthenticator(),
		credential:    virtualwebauthn.NewCredential(virtualwebauthn.KeyTypeEC2),
	}
}

// create is navigator.credentials.create with st-peter's options: the attestation as the
// page would post it.
func (p *softPasskey) create(options stpeter.PasskeyOptionsJSON) stpeter.PasskeyCredentialJSON {
	p.t.Helper()
	parsed, err := virtualwebauthn.ParseAttestationOptions(string(options))
	if err != nil {
		p.t.Fatalf("creation options %s: %v", options, err)
	}
	p.authenticator.Options.UserHandle = []byte(parsed.UserID)
	return stpeter.PasskeyCredentialJSON(virtualwebauthn.CreateAttestationResponse(p.rp, p.authenticator, p.credential, *parsed))
}

// get is navigator.credentials.get with st-peter's options: the assertion as the page
// would post it, the sign counter one up.
func (p *softPasskey) get(options stpeter.PasskeyOptionsJSON) stpeter.PasskeyCredentialJSON {
	p.t.Helper()
	parsed, err := virtualwebauthn.ParseAssertionOptions(string(options))
	if err != nil {
		p.t.Fatalf("request options %s: %v", options, err)
	}
	p.credential.Counter++
	return stpeter.PasskeyCredentialJSON(virtualwebauthn.CreateAssertionResponse(p.rp, p.authenticator, p.credential, *parsed))
}

// credentialID is the credential's id as the options' credential lists name it.
func (p *softPasskey) credentialID() string {
	return base64.RawURLEncoding.EncodeToString(p.credential.ID)
}

// publicKeyOptions parses options JSON as a browser page does (JSON.parse(...).publicKey).
func publicKeyOptions(t *testing.T, options stpeter.PasskeyOptionsJSON) map[string]any {
	t.Helper()
	var parsed struct {
		PublicKey map[string]any `json:"publicKey"`
	}
	if err := json.Unmarshal([]byte(options), &parsed); err != nil || parsed.PublicKey == nil {
		t.Fatalf("options are not {\"publicKey\": {...}}: %v: %s", err, options)
	}
	challenge, _ := parsed.PublicKey["challenge"].(string)
	if raw, err := base64.RawURLEncoding.DecodeString(challenge); err != nil || len(raw) < 16 {
		t.Fatalf("publicKey.challenge %q is not base64url of 16 bytes or more: %v", challenge, err)
	}
	return parsed.PublicKey
}

func wantAuthenticated(t *testing.T, what string, result stpeter.LoginResult, err error, handle string) *stpeter.Authenticated {
	t.Helper()
	authenticated, ok := result.(*stpeter.Authenticated)
	if err != nil || !ok || authenticated.User.Handle != handle || authenticated.Token == "" {
		t.Fatalf("%s: want %s authenticated, got %#v, %v", what, handle, result, err)
	}
	return authenticated
}

func wantFailed(t *testing.T, what string, result stpeter.LoginResult, err error, reason stpeter.FailureReason) {
	t.Helper()
	if failed, ok := result.(*stpeter.Failed); err != nil || !ok || failed.Reason != reason {
		t.Fatalf("%s: want failed %s, got %#v, %v", what, reason, result, err)
	}
}

func TestPasskeyCeremoniesWithoutWebauthnSettingsAreFailedPrecondition(t *testing.T) {
	server := startServer(t)
	server.addUser(newUser{Handle: "night-baker", Password: firstPassword})
	client, _ := countingClient(t, server.target())
	ctx := context.Background()
	token := login(t, client, "night-baker", firstPassword).Token
	account := client.Account(token)

	_, err := client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{})
	wantKind(t, "begin a discoverable passkey login", err, stpeter.ErrFailedPrecondition, "--webauthn-rp-id")
	_, err = client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{Identifier: "night-baker"})
	wantKind(t, "begin a passkey login by identifier", err, stpeter.ErrFailedPrecondition, "--webauthn-rp-id")
	_, err = account.BeginPasskeyRegistration(ctx, firstPassword)
	wantKind(t, "begin a passkey registration", err, stpeter.ErrFailedPrecondition, "--webauthn-rp-id")
	_, err = client.FinishPasskeyLogin(ctx, "stw_"+strings.Repeat("A", 43), stpeter.PasskeyCredentialJSON("{}"))
	wantKind(t, "finish a passkey login", err, stpeter.ErrFailedPrecondition, "--webauthn-rp-id")
	_, err = account.FinishPasskeyRegistration(ctx, "stw_"+strings.Repeat("A", 43), stpeter.PasskeyCredentialJSON("{}"), "laptop")
	wantKind(t, "finish a passkey registration", err, stpeter.ErrFailedPrecondition, "--webauthn-rp-id")

	// Listing and removing still work (passkeys made before the settings went).
	if passkeys, err := account.ListPasskeys(ctx); err != nil || len(passkeys) != 0 {
		t.Fatalf("list: want none, got %+v, %v", passkeys, err)
	}
	err = account.RemovePasskey(ctx, "00000000-0000-4000-8000-000000000000", firstPassword)
	wantKind(t, "remove an unknown passkey", err, stpeter.ErrNotFound, "passkey")
	info, err := account.Get(ctx)
	if err != nil || info.Passkeys != 0 {
		t.Fatalf("get: want 0 passkeys, got %+v, %v", info, err)
	}
}

func TestPasskeyRegistrationOptionsAndRefusals(t *testing.T) {
	server := startServer(t, webauthnArgs...)
	userID := server.addUser(newUser{Handle: "night-baker", DisplayName: "Night Baker", Password: firstPassword})
	client, _ := countingClient(t, server.target())
	ctx := context.Background()
	account := client.Account(login(t, client, "night-baker", firstPassword).Token)

	_, err := account.BeginPasskeyRegistration(ctx, secondPassword)
	wantKind(t, "begin with a wrong password", err, stpeter.ErrPermissionDenied, "current_password")

	registration, err := account.BeginPasskeyRegistration(ctx, firstPassword)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(registration.RegistrationID, "stw_") || len(registration.RegistrationID) != 4+43 {
		t.Fatalf("registration id %q is not stw_ and 43 characters", registration.RegistrationID)
	}
	options := publicKeyOptions(t, registration.OptionsJSON)
	rp, _ := options["rp"].(map[string]any)
	user, _ := options["user"].(map[string]any)
	if rp["id"] != passkeyRPID {
		t.Fatalf("publicKey.rp.id: want %q, got %v", passkeyRPID, rp["id"])
	}
	userHandle, _ := user["id"].(string)
	if raw, err := base64.RawURLEncoding.DecodeString(userHandle); err != nil || len(raw) != 16 ||
		strings.ReplaceAll(userID, "-", "") != hex.EncodeToString(raw) {
		t.Fatalf("publicKey.user.id %q is not the user's id %s as 16 bytes: %v", userHandle, userID, err)
	}
	selection, _ := options["authenticatorSelection"].(map[string]any)
	if selection["userVerification"] != "required" {
		t.Fatalf("publicKey.authenticatorSelection.userVerification: want required, got %v", selection["userVerification"])
	}

	// A credential made for another origin does not verify; the registration is spent.
	stranger := newSoftPasskey(t, "https://evil.example")
	_, err = account.FinishPasskeyRegistration(ctx, registration.RegistrationID, stranger.create(registration.OptionsJSON), "evil")
	wantKind(t, "finish with a wrong origin", err, stpeter.ErrInvalidArgument, "credential_json")
	passkey := newSoftPasskey(t, passkeyOrigin)
	_, err = account.FinishPasskeyRegistration(ctx, registration.RegistrationID, passkey.create(registration.OptionsJSON), "laptop")
	wantKind(t, "finish a spent registration", err, stpeter.ErrFailedPrecondition, "registration_id")

	// Without user verification: refused.
	registration, err = account.BeginPasskeyRegistration(ctx, firstPassword)
	if err != nil {
		t.Fatal(err)
	}
	unverifying := newSoftPasskey(t, passkeyOrigin)
	unverifying.authenticator.Options.UserNotVerified = true
	_, err = account.FinishPasskeyRegistration(ctx, registration.RegistrationID, unverifying.create(registration.OptionsJSON), "laptop")
	wantKind(t, "finish without user verification", err, stpeter.ErrInvalidArgument, "credential_json")

	registration, err = account.BeginPasskeyRegistration(ctx, firstPassword)
	if err != nil {
		t.Fatal(err)
	}
	_, err = account.FinishPasskeyRegistration(ctx, registration.RegistrationID, stpeter.PasskeyCredentialJSON("{not json"), "laptop")
	wantKind(t, "finish with malformed JSON", err, stpeter.ErrInvalidArgument, "credential_json")

	passkeys, err := account.ListPasskeys(ctx)
	if err != nil || len(passkeys) != 0 {
		t.Fatalf("list after refusals: want none, got %+v, %v", passkeys, err)
	}
	_, err = client.Account("stp_not-a-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").ListPasskeys(ctx)
	if !errors.Is(err, stpeter.ErrInvalidToken) {
		t.Fatalf("list with a bad token: want ErrInvalidToken, got %v", err)
	}
}

func TestPasskeyRegisterSignInListAndRemove(t *testing.T) {
	server := startServer(t, webauthnArgs...)
	server.addUser(newUser{Handle: "night-baker", Email: "night-baker@bakery.example", Password: firstPassword})
	server.addUser(newUser{Handle: "pastry-chef", Password: secondPassword})
	client, _ := countingClient(t, server.target())
	ctx := context.Background()
	account := client.Account(login(t, client, "night-baker", firstPassword).Token)

	// Register.
	registration, err := account.BeginPasskeyRegistration(ctx, firstPassword)
	if err != nil {
		t.Fatal(err)
	}
	publicKeyOptions(t, registration.OptionsJSON)
	authenticator := newSoftPasskey(t, passkeyOrigin)
	before := time.Now().Add(-time.Second)
	passkey, err := account.FinishPasskeyRegistration(ctx, registration.RegistrationID, authenticator.create(registration.OptionsJSON), "work laptop")
	if err != nil {
		t.Fatal(err)
	}
	if !uuidPattern.MatchString(passkey.PasskeyID) || passkey.Name != "work laptop" ||
		passkey.CreatedAt.Before(before) || !passkey.LastUsedAt.IsZero() {
		t.Fatalf("registered passkey: %+v", passkey)
	}
	passkeys, err := account.ListPasskeys(ctx)
	if err != nil || len(passkeys) != 1 || passkeys[0] != *passkey {
		t.Fatalf("list: want [%+v], got %+v, %v", *passkey, passkeys, err)
	}
	if info, err := account.Get(ctx); err != nil || info.Passkeys != 1 {
		t.Fatalf("get: want 1 passkey, got %+v, %v", info, err)
	}
	// A second registration excludes the credential the user has already.
	again, err := account.BeginPasskeyRegistration(ctx, firstPassword)
	if err != nil {
		t.Fatal(err)
	}
	excluded, _ := publicKeyOptions(t, again.OptionsJSON)["excludeCredentials"].([]any)
	if len(excluded) != 1 || excluded[0].(map[string]any)["id"] != authenticator.credentialID() {
		t.Fatalf("excludeCredentials: want the registered credential %s, got %v", authenticator.credentialID(), excluded)
	}

	// Sign in by identifier: the options name the passkey.
	challenge, err := client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{Identifier: "night-baker@bakery.example"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(challenge.ChallengeID, "stw_") {
		t.Fatalf("challenge id %q", challenge.ChallengeID)
	}
	allowed, _ := publicKeyOptions(t, challenge.OptionsJSON)["allowCredentials"].([]any)
	if len(allowed) != 1 || allowed[0].(map[string]any)["id"] != authenticator.credentialID() {
		t.Fatalf("allowCredentials: want the registered credential, got %v", allowed)
	}
	assertion := authenticator.get(challenge.OptionsJSON)
	result, err := client.FinishPasskeyLogin(ctx, challenge.ChallengeID, assertion)
	session := wantAuthenticated(t, "sign in by identifier", result, err, "night-baker")
	wantValid(t, client, "the passkey session's token", session.Token)
	// The challenge is spent: the same assertion again is refused.
	result, err = client.FinishPasskeyLogin(ctx, challenge.ChallengeID, assertion)
	wantFailed(t, "the same challenge again", result, err, stpeter.ChallengeExpired)
	// And an old assertion does not answer a new challenge.
	challenge, err = client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{Identifier: "night-baker"})
	if err != nil {
		t.Fatal(err)
	}
	result, err = client.FinishPasskeyLogin(ctx, challenge.ChallengeID, assertion)
	wantFailed(t, "a replayed assertion", result, err, stpeter.InvalidCredentials)

	// Discoverable sign-in: no identifier, the passkey says who.
	challenge, err = client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if allowed, _ := publicKeyOptions(t, challenge.OptionsJSON)["allowCredentials"].([]any); len(allowed) != 0 {
		t.Fatalf("a discoverable sign-in names no credentials, got %v", allowed)
	}
	result, err = client.FinishPasskeyLogin(ctx, challenge.ChallengeID, authenticator.get(challenge.OptionsJSON))
	wantAuthenticated(t, "discoverable sign-in", result, err, "night-baker")
	passkeys, err = account.ListPasskeys(ctx)
	if err != nil || len(passkeys) != 1 || passkeys[0].LastUsedAt.Before(passkey.CreatedAt) {
		t.Fatalf("list after sign-ins: want last used set, got %+v, %v", passkeys, err)
	}

	// The wrong origin's assertion does not verify.
	challenge, err = client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{Identifier: "night-baker"})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := *authenticator
	elsewhere.rp.Origin = "https://evil.example"
	result, err = client.FinishPasskeyLogin(ctx, challenge.ChallengeID, elsewhere.get(challenge.OptionsJSON))
	wantFailed(t, "an assertion for another origin", result, err, stpeter.InvalidCredentials)
	authenticator.credential.Counter = elsewhere.credential.Counter

	// A cloned authenticator: the copy signs with a counter the original has used already.
	clone := *authenticator
	challenge, err = client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	result, err = client.FinishPasskeyLogin(ctx, challenge.ChallengeID, authenticator.get(challenge.OptionsJSON))
	wantAuthenticated(t, "the original authenticator", result, err, "night-baker")
	challenge, err = client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	result, err = client.FinishPasskeyLogin(ctx, challenge.ChallengeID, clone.get(challenge.OptionsJSON))
	wantFailed(t, "the clone, its counter behind", result, err, stpeter.InvalidCredentials)

	// Malformed JSON is the caller's fault; an unknown challenge a failed login.
	challenge, err = client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.FinishPasskeyLogin(ctx, challenge.ChallengeID, stpeter.PasskeyCredentialJSON("[]"))
	wantKind(t, "finish with malformed JSON", err, stpeter.ErrInvalidArgument, "credential_json")
	result, err = client.FinishPasskeyLogin(ctx, "stw_"+strings.Repeat("A", 43), authenticator.get(challenge.OptionsJSON))
	wantFailed(t, "an unknown challenge", result, err, stpeter.ChallengeExpired)

	// A password login now asks for a second factor, which the passkey gives.
	result, err = client.Login(ctx, "night-baker", firstPassword)
	twoFactor, ok := result.(*stpeter.TwoFactor)
	if err != nil || !ok || !slices.Contains(twoFactor.Methods, stpeter.PasskeyMethod) {
		t.Fatalf("password login: want two_factor offering a passkey, got %#v, %v", result, err)
	}
	challenge, err = client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{TwoFactorID: twoFactor.TwoFactorID})
	if err != nil {
		t.Fatal(err)
	}
	result, err = client.FinishPasskeyLogin(ctx, challenge.ChallengeID, authenticator.get(challenge.OptionsJSON))
	wantAuthenticated(t, "the passkey as second factor", result, err, "night-baker")

	// Removal: the password, the user's own passkey only.
	err = account.RemovePasskey(ctx, passkey.PasskeyID, secondPassword)
	wantKind(t, "remove with a wrong password", err, stpeter.ErrPermissionDenied, "current_password")
	other := client.Account(login(t, client, "pastry-chef", secondPassword).Token)
	err = other.RemovePasskey(ctx, passkey.PasskeyID, secondPassword)
	wantKind(t, "remove another user's passkey", err, stpeter.ErrNotFound, "passkey")
	if err := account.RemovePasskey(ctx, passkey.PasskeyID, firstPassword); err != nil {
		t.Fatal(err)
	}
	passkeys, err = account.ListPasskeys(ctx)
	if err != nil || len(passkeys) != 0 {
		t.Fatalf("list after removal: want none, got %+v, %v", passkeys, err)
	}
	err = account.RemovePasskey(ctx, passkey.PasskeyID, firstPassword)
	wantKind(t, "remove it again", err, stpeter.ErrNotFound, "passkey")
	challenge, err = client.BeginPasskeyLogin(ctx, stpeter.PasskeyLoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	result, err = client.FinishPasskeyLogin(ctx, challenge.ChallengeID, authenticator.get(challenge.OptionsJSON))
	wantFailed(t, "sign in with a removed passkey", result, err, stpeter.InvalidCredentials)
	// And the password alone logs in again.
	login(t, client, "night-baker", firstPassword)
}
