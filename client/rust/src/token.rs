//! Carrying tokens in HTTP and gRPC requests.

/// The cookie a browser session carries its token in.
pub const SESSION_COOKIE: &str = "aura_session";

/// The value of an `authorization` header for a token: `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The token of a request: from `authorization: Bearer <token>` (scheme case-insensitive),
/// else from the `aura_session` cookie. Pass the raw header values.
pub fn token_from_headers<'a>(
    authorization: Option<&'a str>,
    cookie: Option<&'a str>,
) -> Option<&'a str> {
    authorization
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .or_else(|| {
            cookie?
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == SESSION_COOKIE)
                .map(|(_, value)| value.trim().trim_matches('"'))
                .filter(|token| !token.is_empty())
        })
}

/// The token of an `http` request (also a tonic request's underlying headers).
pub fn token_from_http<B>(request: &http::Request<B>) -> Option<&str> {
    token_from_header_map(request.headers())
}

pub(crate) fn token_from_header_map(headers: &http::HeaderMap) -> Option<&str> {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Browsers may send several Cookie headers over HTTP/2: look in each.
    let from_bearer = token_from_headers(authorization, None);
    from_bearer.or_else(|| {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|cookie| token_from_headers(None, Some(cookie)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_wins_over_cookie() {
        assert_eq!(bearer("stp_x"), "Bearer stp_x");
        assert_eq!(
            token_from_headers(Some("Bearer stp_a"), Some("aura_session=stp_b")),
            Some("stp_a")
        );
        assert_eq!(
            token_from_headers(Some("bearer  stp_a "), None),
            Some("stp_a")
        );
        assert_eq!(
            token_from_headers(Some("Basic abc"), Some("aura_session=stp_b")),
            Some("stp_b")
        );
        assert_eq!(
            token_from_headers(None, Some("theme=dark; aura_session=stp_b; x=y")),
            Some("stp_b")
        );
        assert_eq!(
            token_from_headers(None, Some("aura_session_old=stp_c")),
            None
        );
        assert_eq!(token_from_headers(Some("Bearer "), None), None);
        assert_eq!(token_from_headers(None, None), None);
    }
}
