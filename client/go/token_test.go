package stpeter_test

import (
	"net/http"
	"testing"

	stpeter "github.com/st-peter/st-peter/client/go"
)

func TestTokenFromHeaders(t *testing.T) {
	if got := stpeter.Bearer("stp_x"); got != "Bearer stp_x" {
		t.Fatalf("Bearer = %q", got)
	}
	if stpeter.SessionCookie != "aura_session" {
		t.Fatalf("SessionCookie = %q", stpeter.SessionCookie)
	}
	cases := []struct {
		authorization, cookie, want string
	}{
		{"Bearer stp_a", "aura_session=stp_b", "stp_a"},
		{"bearer  stp_a ", "", "stp_a"},
		{"Basic abc", "aura_session=stp_b", "stp_b"},
		{"", "theme=dark; aura_session=stp_b; x=y", "stp_b"},
		{"", `aura_session="stp_q"`, "stp_q"},
		{"", "aura_session_old=stp_c", ""},
		{"Bearer ", "", ""},
		{"", "", ""},
	}
	for _, c := range cases {
		got, ok := stpeter.TokenFromHeaders(c.authorization, c.cookie)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("TokenFromHeaders(%q, %q) = %q, %v; want %q", c.authorization, c.cookie, got, ok, c.want)
		}
	}
}

func TestTokenFromRequestSearchesEveryCookieHeader(t *testing.T) {
	r, _ := http.NewRequest("GET", "http://bakery.example/", nil)
	r.Header.Add("Cookie", "theme=dark")
	r.Header.Add("Cookie", "aura_session=stp_b")
	if got, ok := stpeter.TokenFromRequest(r); !ok || got != "stp_b" {
		t.Fatalf("cookie token = %q, %v", got, ok)
	}
	r.Header.Set("Authorization", stpeter.Bearer("stp_a"))
	if got, _ := stpeter.TokenFromRequest(r); got != "stp_a" {
		t.Fatalf("bearer token = %q", got)
	}
}

func TestTOTPCodeMatchesRFC6238(t *testing.T) {
	// RFC 6238 appendix B, SHA-1 secret "12345678901234567890" at T = 59 s: 94287082.
	uri := "otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	if got := totpCode(t, uri, timeUnix(59)); got != "287082" {
		t.Fatalf("code = %s", got)
	}
	if wrong := wrongTOTPCode(t, uri, timeUnix(59)); wrong == "287082" || len(wrong) != 6 {
		t.Fatalf("wrong code = %s", wrong)
	}
}
