//! Where a request carries its token: `Authorization: Bearer` (RFC 6750
//! 2.1), else the configured query parameter, else the configured cookie.
//! An explicit header wins over the query, and the query (chosen per
//! request) over the cookie (sent with every request to the origin).
//! `Authorization` with another scheme (Basic) means "no token here": the
//! Basic check takes it, and neither query nor cookie is looked at.
//!
//! The cookie counts for a `GET` only (a subscription, a WebSocket
//! handshake): a browser sends it with any request to the origin, so a
//! page of another site could otherwise publish in its user's name with a
//! plain cross-site form post (no CORS preflight stops that). A publish
//! carries its token in `Authorization` or the query, which such a page
//! cannot fill in.
//!
//! Pure and cheap on a request without a token: no allocation unless a
//! query string or a `Cookie` header is there to look into.

use std::borrow::Cow;

use crate::http::{Method, RequestHead};

/// The token a request carries, as sent (untrimmed of nothing but the
/// scheme and surrounding whitespace).
pub fn find<'a>(
    head: &'a RequestHead,
    cookie: Option<&str>,
    query: Option<&str>,
) -> Option<Cow<'a, str>> {
    if let Some(value) = head.authorization.as_deref() {
        return bearer(value).map(Cow::Borrowed);
    }
    if let Some(name) = query {
        if head.has_query() {
            if let Some(token) = head.query_param(name) {
                return Some(Cow::Owned(token));
            }
        }
    }
    let (name, header) = (cookie?, head.cookie.as_deref()?);
    if head.method != Method::Get {
        return None;
    }
    cookie_value(header, name).map(Cow::Borrowed)
}

/// The token of an `Authorization: Bearer <token>` value; `None` for any
/// other scheme.
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b="2"`), quotes
/// removed; the first of several with that name.
fn cookie_value<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| {
            let value = value.trim();
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn head(lines: &str) -> RequestHead {
        let text = format!("GET {}\r\n\r\n", lines.replace('\n', "\r\n"));
        parse_head(text.as_bytes(), 64)
            .expect("parses")
            .expect("complete")
            .0
    }

    fn found(lines: &str) -> Option<String> {
        find(&head(lines), Some("pubsub_token"), Some("access_token")).map(|t| t.into_owned())
    }

    #[test]
    fn each_carrier_in_its_order() {
        assert_eq!(
            found("/a HTTP/1.1\nAuthorization: Bearer  abc.def.ghi "),
            Some("abc.def.ghi".into())
        );
        assert_eq!(
            found("/a HTTP/1.1\nAuthorization: bearer x"),
            Some("x".into())
        );
        assert_eq!(
            found("/a?access_token=q.r.s HTTP/1.1"),
            Some("q.r.s".into())
        );
        assert_eq!(
            found("/a?x=1&access_token=q%2Er HTTP/1.1"),
            Some("q.r".into())
        );
        assert_eq!(
            found("/a HTTP/1.1\nCookie: other=1; pubsub_token=c.d.e"),
            Some("c.d.e".into())
        );
        assert_eq!(
            found("/a HTTP/1.1\nCookie: pubsub_token=\"c.d\""),
            Some("c.d".into())
        );
        assert_eq!(
            found("/a HTTP/1.1\nCookie: a=1\nCookie: pubsub_token=two"),
            Some("two".into())
        );
        // Header over query over cookie.
        let all = "/a?access_token=query HTTP/1.1\nAuthorization: Bearer header\nCookie: pubsub_token=cookie";
        assert_eq!(found(all), Some("header".into()));
        let two = "/a?access_token=query HTTP/1.1\nCookie: pubsub_token=cookie";
        assert_eq!(found(two), Some("query".into()));
    }

    #[test]
    fn basic_credentials_or_nothing_is_no_token() {
        assert_eq!(
            found("/a HTTP/1.1\nAuthorization: Basic YTpi\nCookie: pubsub_token=c"),
            None
        );
        assert_eq!(found("/a HTTP/1.1"), None);
        assert_eq!(found("/a?access_tokens=x&token=y HTTP/1.1"), None);
        assert_eq!(
            found("/a HTTP/1.1\nCookie: xpubsub_token=c; pubsub_tokenx=d"),
            None
        );
        assert_eq!(found("/a HTTP/1.1\nAuthorization: Bearer"), None);
        // Not the cookie of a publish (cross-site request forgery).
        let put = parse_head(b"PUT /a HTTP/1.1\r\nCookie: pubsub_token=c\r\n\r\n", 64)
            .expect("parses")
            .expect("complete")
            .0;
        assert_eq!(find(&put, Some("pubsub_token"), None), None);
        // Names not configured are not looked at.
        let h = head("/a?access_token=q HTTP/1.1\nCookie: pubsub_token=c");
        assert_eq!(find(&h, None, None), None);
    }

    #[test]
    fn the_logged_target_never_shows_a_value() {
        let h = head("/a/b?access_token=SECRET&lastEventID=1 HTTP/1.1\nAuthorization: Bearer SECRET2\nCookie: pubsub_token=SECRET3");
        assert_eq!(h.target_for_log(), "/a/b?access_token=…&lastEventID=…");
        let debug = format!("{h:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert_eq!(head("/a HTTP/1.1").target_for_log(), "/a");
    }
}
