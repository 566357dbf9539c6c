//! The WebSocket opening handshake (RFC 6455 §4.2), without I/O: whether
//! a `GET` with `Upgrade: websocket` is a valid handshake (and what is
//! wrong with it when not), the `Sec-WebSocket-Accept` answer, and the
//! permessage-deflate negotiation (RFC 7692 §7.1).
//!
//! The server compresses each event once with a fresh context and shares
//! the frame, so it accepts permessage-deflate only with
//! `server_no_context_takeover`, always in its answer; an offer that
//! would bind it to a window under 2^15 (which the compressor cannot
//! promise), or that carries an unknown or repeated parameter, is declined
//! and the next one is tried. Client parameters are accepted and have no
//! effect: the stream takes no data frames.

use base64::Engine;

use crate::http::RequestHead;

/// RFC 6455 §1.3: appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only version there is (RFC 6455 §4.4).
pub const VERSION: &str = "13";

/// The extension answer when permessage-deflate is accepted.
pub const DEFLATE_RESPONSE: &str = "permessage-deflate; server_no_context_takeover";

/// Why a handshake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `Sec-WebSocket-Version` is not 13: 426 with `Sec-WebSocket-Version: 13`.
    Version,
    /// Anything else: 400 with this text.
    Bad(&'static str),
}

/// A valid handshake, answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept`.
    pub accept: String,
    /// permessage-deflate was offered acceptably (and the server can
    /// compress).
    pub deflate: bool,
}

/// Whether `head` (a `GET` whose `Upgrade` names websocket) is a valid
/// opening handshake; `can_deflate`: this build compresses. The caller
/// has checked the method.
pub fn accept(head: &RequestHead, can_deflate: bool) -> Result<Accepted, Refused> {
    if !head.http11 {
        return Err(Refused::Bad("a WebSocket handshake needs HTTP/1.1"));
    }
    if !head.connection_upgrade {
        return Err(Refused::Bad(
            "a WebSocket handshake needs `Connection: Upgrade`",
        ));
    }
    let ws = head.websocket.as_deref();
    match ws.and_then(|w| w.version.as_deref()) {
        None => {
            return Err(Refused::Bad(
                "a WebSocket handshake needs `Sec-WebSocket-Version: 13`",
            ))
        }
        Some(v) if v.trim() != VERSION => return Err(Refused::Version),
        Some(_) => {}
    }
    let Some(key) = ws.and_then(|w| w.key.as_deref()).map(str::trim) else {
        return Err(Refused::Bad(
            "a WebSocket handshake needs a `Sec-WebSocket-Key`",
        ));
    };
    let nonce = base64::engine::general_purpose::STANDARD.decode(key);
    if !nonce.is_ok_and(|n| n.len() == 16) {
        return Err(Refused::Bad(
            "`Sec-WebSocket-Key` must be 16 bytes in base64",
        ));
    }
    let deflate = can_deflate && ws.is_some_and(|w| offers_deflate(&w.extensions));
    Ok(Accepted {
        accept: accept_key(key),
        deflate,
    })
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// Whether some offer in `Sec-WebSocket-Extensions` is a permessage-deflate
/// this server can accept (see the module documentation).
pub fn offers_deflate(extensions: &str) -> bool {
    extensions.split(',').any(|offer| {
        let mut parts = offer.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
        {
            return false;
        }
        let mut seen: Vec<String> = Vec::new();
        for param in parts {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            let name = name.to_ascii_lowercase();
            if seen.contains(&name) {
                return false;
            }
            let window = |v: Option<&str>| v.and_then(|v| v.parse::<u8>().ok());
            let ok = match (name.as_str(), value) {
                ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
                // Our window is 2^15: only that bound can be kept.
                ("server_max_window_bits", v) => window(v) == Some(15),
                ("client_max_window_bits", None) => true,
                ("client_max_window_bits", v) => window(v).is_some_and(|b| (8..=15).contains(&b)),
                _ => false,
            };
            if !ok {
                return false;
            }
            seen.push(name);
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn head(extra: &str) -> RequestHead {
        let text = format!("GET /a HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        parse_head(text.as_bytes(), 64).unwrap().unwrap().0
    }

    const GOOD: &str = "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn the_rfc_example_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let ok = accept(&head(GOOD), true).unwrap();
        assert_eq!(ok.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(!ok.deflate, "not offered");
    }

    #[test]
    fn what_is_wrong_is_said() {
        let without = |name: &str| {
            let kept: String = GOOD
                .split_inclusive("\r\n")
                .filter(|l| !l.starts_with(name))
                .collect();
            accept(&head(&kept), true)
        };
        assert!(matches!(without("Connection"), Err(Refused::Bad(t)) if t.contains("Connection")));
        assert!(matches!(without("Sec-WebSocket-Key"), Err(Refused::Bad(t)) if t.contains("Key")));
        assert!(
            matches!(without("Sec-WebSocket-Version"), Err(Refused::Bad(t)) if t.contains("Version"))
        );
        let v8 = GOOD.replace("Version: 13", "Version: 8");
        assert_eq!(accept(&head(&v8), true), Err(Refused::Version));
        let short = GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
        assert!(matches!(accept(&head(&short), true), Err(Refused::Bad(t)) if t.contains("16")));
        let text = format!("GET /a HTTP/1.0\r\n{GOOD}\r\n");
        let h10 = parse_head(text.as_bytes(), 64).unwrap().unwrap().0;
        assert!(matches!(accept(&h10, true), Err(Refused::Bad(t)) if t.contains("HTTP/1.1")));
    }

    #[test]
    fn deflate_offers() {
        for yes in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=\"15\"; client_max_window_bits=10",
            "x-webkit-deflate-frame, permessage-deflate",
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
        ] {
            assert!(offers_deflate(yes), "{yes}");
        }
        for no in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert!(!offers_deflate(no), "{no}");
        }
        let offered = format!("{GOOD}Sec-WebSocket-Extensions: permessage-deflate\r\n");
        assert!(accept(&head(&offered), true).unwrap().deflate);
        assert!(!accept(&head(&offered), false).unwrap().deflate);
    }
}
