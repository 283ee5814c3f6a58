package stpeter_test

// The shared conformance cases (proto/conformance/cases.json), run against a real server.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	stpeter "github.com/st-peter/st-peter/client/go"
)

type conformanceFile struct {
	Users []struct {
		Handle      string   `json:"handle"`
		Email       string   `json:"email"`
		Phone       string   `json:"phone"`
		DisplayName string   `json:"display_name"`
		Password    string   `json:"password"`
		Roles       []string `json:"roles"`
		TOTP        bool     `json:"totp"`
		Disabled    bool     `json:"disabled"`
	} `json:"users"`
	Cases []struct {
		Name   string                     `json:"name"`
		Call   string                     `json:"call"`
		Input  map[string]json.RawMessage `json:"input"`
		Expect map[string]json.RawMessage `json:"expect"`
	} `json:"cases"`
}

type conformance struct {
	t         *testing.T
	client    *stpeter.Client
	passwords map[string]string
	userIDs   map[string]string
	totpURIs  map[string]string
}

// resolve turns an input value (a string, or a reference such as {"token_of": H}) into
// the string to send.
func (c *conformance) resolve(raw json.RawMessage) string {
	t := c.t
	t.Helper()
	var literal string
	if json.Unmarshal(raw, &literal) == nil {
		return literal
	}
	var ref map[string]string
	if err := json.Unmarshal(raw, &ref); err != nil || len(ref) != 1 {
		t.Fatalf("not a value or a reference: %s", raw)
	}
	ctx := context.Background()
	for kind, handle := range ref {
		switch kind {
		case "user_id_of":
			return c.userIDs[handle]
		case "token_of", "logged_out_token_of":
			result, err := c.client.Login(ctx, handle, c.passwords[handle])
			session, ok := result.(*stpeter.Authenticated)
			if err != nil || !ok {
				t.Fatalf("setup: login of %s: %#v, %v", handle, result, err)
			}
			if kind == "logged_out_token_of" {
				if err := c.client.Logout(ctx, session.Token); err != nil {
					t.Fatalf("setup: logout: %v", err)
				}
			}
			return session.Token
		case "challenge_of":
			result, err := c.client.Login(ctx, handle, c.passwords[handle])
			challenge, ok := result.(*stpeter.TwoFactor)
			if err != nil || !ok {
				t.Fatalf("setup: login of %s: %#v, %v", handle, result, err)
			}
			return challenge.TwoFactorID
		case "totp_code_of":
			return totpCode(t, c.totpURIs[handle], time.Now())
		case "wrong_totp_code_of":
			return wrongTOTPCode(t, c.totpURIs[handle], time.Now())
		}
		t.Fatalf("unknown reference %q", kind)
	}
	return ""
}

// outcome is what the client answered, in the vocabulary of cases.json.
type outcome struct {
	result     string
	user       *stpeter.User
	roles      []string
	methods    []string
	reason     string
	retryAfter time.Duration
	expiresAt  time.Time
}

func fromLogin(r stpeter.LoginResult) outcome {
	switch r := r.(type) {
	case *stpeter.Authenticated:
		return outcome{result: "authenticated", user: &r.User, expiresAt: r.ExpiresAt}
	case *stpeter.TwoFactor:
		methods := []string{}
		for _, m := range r.Methods {
			methods = append(methods, string(m))
		}
		return outcome{result: "two_factor", methods: methods, expiresAt: r.ExpiresAt}
	case *stpeter.Failed:
		return outcome{result: "failed", reason: string(r.Reason), retryAfter: r.RetryAfter}
	}
	return outcome{result: "unknown"}
}

func (c *conformance) call(name string, in map[string]string) (outcome, error) {
	ctx := context.Background()
	switch name {
	case "login":
		r, err := c.client.Login(ctx, in["identifier"], in["password"])
		if err != nil {
			return outcome{}, err
		}
		return fromLogin(r), nil
	case "verify_two_factor":
		r, err := c.client.VerifyTwoFactor(ctx, in["two_factor_id"], in["code"])
		if err != nil {
			return outcome{}, err
		}
		return fromLogin(r), nil
	case "verify_token":
		v, err := c.client.VerifyToken(ctx, in["token"])
		if err != nil {
			return outcome{}, err
		}
		return outcome{result: "verified", user: &v.User, roles: v.Roles, expiresAt: v.ExpiresAt}, nil
	case "lookup_user":
		u, err := c.client.LookupUser(ctx, in["actor_id"], in["actor_token"], in["identifier"])
		if err != nil {
			return outcome{}, err
		}
		return outcome{result: "user", user: u}, nil
	case "logout":
		if err := c.client.Logout(ctx, in["token"]); err != nil {
			return outcome{}, err
		}
		return outcome{result: "ok"}, nil
	}
	c.t.Fatalf("unknown call %q", name)
	return outcome{}, nil
}

var errorKinds = map[string]error{
	"invalid_token":    stpeter.ErrInvalidToken,
	"invalid_argument": stpeter.ErrInvalidArgument,
	"not_found":        stpeter.ErrNotFound,
	"unavailable":      stpeter.ErrUnavailable,
}

func TestConformance(t *testing.T) {
	data, err := os.ReadFile("../../proto/conformance/cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var file conformanceFile
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	server := startServer(t)
	c := &conformance{passwords: map[string]string{}, userIDs: map[string]string{}, totpURIs: map[string]string{}}
	for _, u := range file.Users {
		c.passwords[u.Handle] = u.Password
		c.userIDs[u.Handle] = server.addUser(newUser{Handle: u.Handle, Email: u.Email, Phone: u.Phone, DisplayName: u.DisplayName, Password: u.Password})
		for _, role := range u.Roles {
			server.grantRole(u.Handle, role)
		}
		if u.TOTP {
			c.totpURIs[u.Handle] = server.enrollTOTP(u.Handle)
		}
		if u.Disabled {
			server.disable(u.Handle)
		}
	}
	c.client, _ = countingClient(t, server.target())

	for _, tc := range file.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			c.t = t
			in := map[string]string{}
			for key, raw := range tc.Input {
				in[key] = c.resolve(raw)
			}
			var want map[string]any
			wantRaw, _ := json.Marshal(tc.Expect)
			json.Unmarshal(wantRaw, &want)

			got, err := c.call(tc.Call, in)
			if kind, ok := want["error"].(string); ok {
				if !errors.Is(err, errorKinds[kind]) {
					t.Fatalf("want error %s, got %+v, %v", kind, got, err)
				}
				var e *stpeter.Error
				if message, ok := want["message"].(string); ok && (!errors.As(err, &e) || e.Message != message) {
					t.Fatalf("message = %v, want %q", err, message)
				}
				return
			}
			if err != nil {
				t.Fatalf("want %v, got error %v", want["result"], err)
			}
			if got.result != want["result"] {
				t.Fatalf("result = %+v, want %v", got, want["result"])
			}
			if wantUser, ok := want["user"].(map[string]any); ok {
				for key, value := range wantUser {
					var actual any
					switch key {
					case "user_id":
						actual = got.user.UserID
					case "handle":
						actual = got.user.Handle
					case "email":
						actual = got.user.Email
					case "phone":
						actual = got.user.Phone
					case "display_name":
						actual = got.user.DisplayName
					case "disabled":
						actual = got.user.Disabled
					default:
						t.Fatalf("unknown user field %s", key)
					}
					expected := value
					switch v := value.(type) {
					case nil:
						expected = "" // none is "" in Go
					case map[string]any:
						raw, _ := json.Marshal(v)
						expected = c.resolve(raw)
					}
					if actual != expected {
						t.Errorf("user.%s = %#v, want %#v", key, actual, expected)
					}
				}
			}
			if roles, ok := tc.Expect["roles"]; ok {
				var wantRoles []string
				json.Unmarshal(roles, &wantRoles)
				if !slices.Equal(got.roles, wantRoles) {
					t.Errorf("roles = %v, want %v", got.roles, wantRoles)
				}
			}
			if methods, ok := tc.Expect["methods_include"]; ok {
				var wantMethods []string
				json.Unmarshal(methods, &wantMethods)
				for _, m := range wantMethods {
					if !slices.Contains(got.methods, m) {
						t.Errorf("methods = %v, want %s among them", got.methods, m)
					}
				}
			}
			if reason, ok := want["reason"]; ok && got.reason != reason {
				t.Errorf("reason = %s, want %v", got.reason, reason)
			}
			if retry, ok := want["retry_after"]; ok && retry == nil && got.retryAfter != 0 {
				t.Errorf("retry_after = %v, want none", got.retryAfter)
			}
			switch got.result {
			case "authenticated", "two_factor", "verified":
				if !got.expiresAt.After(time.Now()) {
					t.Errorf("expires_at %v is not in the future", got.expiresAt)
				}
			}
		})
	}
}
