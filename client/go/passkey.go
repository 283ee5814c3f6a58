package stpeter

import (
	"context"
	"time"

	pb "github.com/st-peter/st-peter/client/go/genpb/stpeter/authv1"
)

// PasskeyOptionsJSON is what st-peter answers for the browser: the WebAuthn options as
// JSON, under a "publicKey" key, binary fields base64url. BeginPasskeyLogin's are for
// navigator.credentials.get, BeginPasskeyRegistration's for navigator.credentials.create.
// Send it to the page as it is; there, JSON.parse(options).publicKey goes to
// PublicKeyCredential.parseRequestOptionsFromJSON (or parseCreationOptionsFromJSON) where
// the browser has it, or has its challenge, user.id and credential ids decoded from
// base64url. Its own type so that it cannot be passed where a PasskeyCredentialJSON goes.
type PasskeyOptionsJSON string

// PasskeyCredentialJSON is the browser's answer: the PublicKeyCredential that
// navigator.credentials.create or .get resolved to, as JSON (what its toJSON() gives),
// for FinishPasskeyRegistration and FinishPasskeyLogin. Convert the page's JSON to it
// (PasskeyCredentialJSON(body)); it is passed through unchanged, and st-peter answers
// ErrInvalidArgument naming credential_json when it is malformed.
type PasskeyCredentialJSON string

// PasskeyLoginOptions say who BeginPasskeyLogin is for: at most one of the two, or
// neither for a discoverable sign-in (the browser offers any passkey it keeps for the
// site, and the passkey tells who it is).
type PasskeyLoginOptions struct {
	// Identifier is the email, phone or handle of the user signing in: the options name
	// that user's passkeys.
	Identifier string
	// TwoFactorID is the TwoFactorID of a Login that answered *TwoFactor with
	// PasskeyMethod among its Methods: the assertion completes that login, no password
	// again.
	TwoFactorID string
}

// PasskeyLoginChallenge is a passkey sign-in waiting for the browser, from
// BeginPasskeyLogin.
type PasskeyLoginChallenge struct {
	// ChallengeID goes back to FinishPasskeyLogin with the browser's answer ("stw_" and
	// 43 characters); single-use, it lives about two minutes.
	ChallengeID string
	// OptionsJSON is for navigator.credentials.get.
	OptionsJSON PasskeyOptionsJSON
}

// BeginPasskeyLogin starts a passkey sign-in: send OptionsJSON to the page for
// navigator.credentials.get, then its answer with ChallengeID to FinishPasskeyLogin. A
// st-peter without WebAuthn settings (--webauthn-rp-id, --webauthn-origin) answers
// ErrFailedPrecondition; while the login throttles hold for the identifier or the
// caller's address, ErrRateLimited.
func (c *Client) BeginPasskeyLogin(ctx context.Context, opts PasskeyLoginOptions) (*PasskeyLoginChallenge, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	response, err := c.rpc.BeginPasskeyLogin(ctx, &pb.BeginPasskeyLoginRequest{
		Identifier:  opts.Identifier,
		TwoFactorId: opts.TwoFactorID,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &PasskeyLoginChallenge{
		ChallengeID: response.GetChallengeId(),
		OptionsJSON: PasskeyOptionsJSON(response.GetOptionsJson()),
	}, nil
}

// FinishPasskeyLogin finishes a passkey sign-in with the browser's answer. It answers
// like Login: *Authenticated, or *Failed with InvalidCredentials (the assertion does not
// verify: an unknown passkey, a wrong origin or signature, a replay, a sign counter that
// went backwards), ChallengeExpired (an unknown, used or expired challengeID) or
// RateLimited. Malformed JSON is ErrInvalidArgument naming credential_json.
func (c *Client) FinishPasskeyLogin(ctx context.Context, challengeID string, credential PasskeyCredentialJSON) (LoginResult, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	response, err := c.rpc.FinishPasskeyLogin(ctx, &pb.FinishPasskeyLoginRequest{
		ChallengeId:    challengeID,
		CredentialJson: string(credential),
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return loginResultFrom(response), nil
}

// PasskeyRegistration is a passkey registration waiting for the browser, from
// BeginPasskeyRegistration.
type PasskeyRegistration struct {
	// RegistrationID goes back to FinishPasskeyRegistration with the browser's answer
	// ("stw_" and 43 characters); single-use, it lives about five minutes.
	RegistrationID string
	// OptionsJSON is for navigator.credentials.create.
	OptionsJSON PasskeyOptionsJSON
}

// Passkey is one of the user's passkeys. Neither its key nor its credential id leaves
// st-peter.
type Passkey struct {
	// PasskeyID names the passkey for RemovePasskey: a UUID.
	PasskeyID string
	// Name is the one given at registration ("work laptop").
	Name string
	// CreatedAt is when it was registered.
	CreatedAt time.Time
	// LastUsedAt is when it last signed the user in; the zero time when never.
	LastUsedAt time.Time
}

func passkeyFrom(p *pb.Passkey) Passkey {
	passkey := Passkey{
		PasskeyID: p.GetPasskeyId(),
		Name:      p.GetName(),
		CreatedAt: p.GetCreatedAt().AsTime(),
	}
	if p.GetLastUsedAt() != nil {
		passkey.LastUsedAt = p.GetLastUsedAt().AsTime()
	}
	return passkey
}

// BeginPasskeyRegistration starts registering a passkey for the user: send OptionsJSON
// to the page for navigator.credentials.create, then its answer with RegistrationID to
// FinishPasskeyRegistration. A wrong currentPassword is ErrPermissionDenied (it counts
// towards the login throttle, like a failed login); a st-peter without WebAuthn settings
// (--webauthn-rp-id, --webauthn-origin) answers ErrFailedPrecondition.
func (a *Account) BeginPasskeyRegistration(ctx context.Context, currentPassword string) (*PasskeyRegistration, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.BeginPasskeyRegistration(ctx, &pb.BeginPasskeyRegistrationRequest{
		CurrentPassword: currentPassword,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &PasskeyRegistration{
		RegistrationID: response.GetRegistrationId(),
		OptionsJSON:    PasskeyOptionsJSON(response.GetOptionsJson()),
	}, nil
}

// FinishPasskeyRegistration stores the passkey the browser created under name (1 to 100
// characters) and answers it. From then on a password login asks for a second factor,
// which the passkey can give. A credential that does not verify (a wrong origin or
// challenge, no user verification) or is malformed is ErrInvalidArgument naming
// credential_json; an unknown, used or expired registrationID (or another user's) is
// ErrFailedPrecondition.
func (a *Account) FinishPasskeyRegistration(ctx context.Context, registrationID string, credential PasskeyCredentialJSON, name string) (*Passkey, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.FinishPasskeyRegistration(ctx, &pb.FinishPasskeyRegistrationRequest{
		RegistrationId: registrationID,
		CredentialJson: string(credential),
		Name:           name,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	passkey := passkeyFrom(response.GetPasskey())
	return &passkey, nil
}

// ListPasskeys answers the user's passkeys, oldest first.
func (a *Account) ListPasskeys(ctx context.Context) ([]Passkey, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	response, err := a.client.account.ListPasskeys(ctx, &pb.ListPasskeysRequest{})
	if err != nil {
		return nil, fromRPC(err)
	}
	passkeys := make([]Passkey, 0, len(response.GetPasskeys()))
	for _, p := range response.GetPasskeys() {
		passkeys = append(passkeys, passkeyFrom(p))
	}
	return passkeys, nil
}

// RemovePasskey removes one of the user's passkeys by its PasskeyID (from ListPasskeys).
// A wrong currentPassword is ErrPermissionDenied; an unknown passkey, or another user's,
// is ErrNotFound.
func (a *Account) RemovePasskey(ctx context.Context, passkeyID, currentPassword string) error {
	ctx, cancel := a.call(ctx)
	defer cancel()
	_, err := a.client.account.RemovePasskey(ctx, &pb.RemovePasskeyRequest{
		PasskeyId:       passkeyID,
		CurrentPassword: currentPassword,
	})
	return fromRPC(err)
}
