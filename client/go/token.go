package stpeter

import (
	"net/http"
	"strings"
)

// SessionCookie is the cookie a browser session carries its token in.
const SessionCookie = "aura_session"

// Bearer is the value of an authorization header for a token: "Bearer <token>".
func Bearer(token string) string { return "Bearer " + token }

// TokenFromHeaders finds the token of a request: from "authorization: Bearer <token>"
// (scheme case-insensitive), else from the aura_session cookie. Pass the raw header
// values ("" when absent).
func TokenFromHeaders(authorization, cookie string) (string, bool) {
	if scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " "); ok &&
		strings.EqualFold(scheme, "bearer") {
		if token = strings.TrimSpace(token); token != "" {
			return token, true
		}
	}
	for _, pair := range strings.Split(cookie, ";") {
		name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && name == SessionCookie {
			if value = strings.Trim(strings.TrimSpace(value), `"`); value != "" {
				return value, true
			}
		}
	}
	return "", false
}

// TokenFromRequest finds the token of an HTTP request (see TokenFromHeaders); every
// Cookie header is searched.
func TokenFromRequest(r *http.Request) (string, bool) {
	if token, ok := TokenFromHeaders(r.Header.Get("Authorization"), ""); ok {
		return token, true
	}
	for _, cookie := range r.Header.Values("Cookie") {
		if token, ok := TokenFromHeaders("", cookie); ok {
			return token, true
		}
	}
	return "", false
}
