//! Identifier grammar (spec appendix "Identifier Grammar"): user IDs, room
//! IDs, room aliases, event IDs and server names.
//!
//! Owns: what a well-formed identifier looks like and how to take one apart.
//! Never: decides whether an identifier *exists* or belongs to this server;
//! that needs the store.

use thiserror::Error;

/// Every identifier, sigil and domain included, is capped at this many bytes.
pub const MAX_ID_LEN_BYTES: usize = 255;

/// Why a user ID localpart (or a whole new user ID) was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    #[error("the localpart is empty")]
    Empty,
    #[error(
        "the localpart contains {0:?}; only a-z, 0-9, '.', '_', '=', '-', '/' and '+' are allowed"
    )]
    InvalidCharacter(char),
    #[error("the user ID would be {len_bytes} bytes long; the maximum is {max_bytes}")]
    TooLong { len_bytes: usize, max_bytes: usize },
    #[error("{0:?} is not a valid server name")]
    InvalidServerName(String),
}

/// The characters the current grammar allows in a user ID localpart.
fn is_user_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')
}

/// Checks a localpart offered at registration against the current grammar.
///
/// The length bound assumes the shortest possible domain is still to be
/// appended (`@`, `:` and at least one domain byte); use
/// [`validate_new_user_id`] when the server name is known, which checks the
/// real total.
pub fn validate_user_localpart(localpart: &str) -> Result<(), IdError> {
    if localpart.is_empty() {
        return Err(IdError::Empty);
    }
    if let Some(bad) = localpart.chars().find(|c| !is_user_localpart_char(*c)) {
        return Err(IdError::InvalidCharacter(bad));
    }
    // "@" + localpart + ":" + at least one byte of domain.
    let shortest_len_bytes = localpart.len() + 3;
    if shortest_len_bytes > MAX_ID_LEN_BYTES {
        return Err(IdError::TooLong {
            len_bytes: shortest_len_bytes,
            max_bytes: MAX_ID_LEN_BYTES,
        });
    }
    Ok(())
}

/// Checks that `@localpart:server_name` would be a valid, compliant user ID.
pub fn validate_new_user_id(localpart: &str, server_name: &str) -> Result<(), IdError> {
    validate_user_localpart(localpart)?;
    if !is_valid_server_name(server_name) {
        return Err(IdError::InvalidServerName(server_name.to_owned()));
    }
    let len_bytes = localpart.len() + server_name.len() + 2;
    if len_bytes > MAX_ID_LEN_BYTES {
        return Err(IdError::TooLong {
            len_bytes,
            max_bytes: MAX_ID_LEN_BYTES,
        });
    }
    Ok(())
}

/// `@localpart:server_name`, without validation.
pub fn user_id(localpart: &str, server_name: &str) -> String {
    format!("@{localpart}:{server_name}")
}

/// Splits a sigilled `&localpart:domain` identifier. The localpart can never
/// contain `:`, so the first colon is the separator and the domain keeps any
/// port.
fn split_sigilled(id: &str) -> Option<(char, &str, &str)> {
    let mut chars = id.chars();
    let sigil = chars.next()?;
    if !matches!(sigil, '@' | '!' | '#' | '$') {
        return None;
    }
    let rest = chars.as_str();
    let (local, domain) = rest.split_once(':')?;
    Some((sigil, local, domain))
}

/// The localpart of a sigilled identifier (`@l:s` → `l`), if it has one.
pub fn localpart(id: &str) -> Option<&str> {
    split_sigilled(id).map(|(_, local, _)| local)
}

/// The domain of a sigilled identifier (`@l:s` → `s`), if it has one.
pub fn server_name(id: &str) -> Option<&str> {
    split_sigilled(id).map(|(_, _, domain)| domain)
}

/// Server name grammar: `hostname [ ":" port ]`, hostname being an IPv4
/// literal, a bracketed IPv6 literal or a DNS name.
pub fn is_valid_server_name(name: &str) -> bool {
    let (host, port) = if name.starts_with('[') {
        let Some(close) = name.find(']') else {
            return false;
        };
        let inner = &name[1..close];
        let inner_ok = (2..=45).contains(&inner.len())
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        if !inner_ok {
            return false;
        }
        let rest = &name[close + 1..];
        if rest.is_empty() {
            return true;
        }
        match rest.strip_prefix(':') {
            Some(port) => (None, Some(port)),
            None => return false,
        }
    } else {
        match name.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(name), None),
        }
    };
    if let Some(host) = host {
        let host_ok = (1..=255).contains(&host.len())
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !host_ok {
            return false;
        }
    }
    match port {
        None => true,
        Some(port) => (1..=5).contains(&port.len()) && port.chars().all(|c| c.is_ascii_digit()),
    }
}

/// A compliant user ID: `@` + current-grammar localpart + `:` + server name,
/// at most 255 bytes. Historical (non-compliant) localparts are refused:
/// without federation every user is one of ours and was created under the
/// current grammar.
pub fn is_valid_user_id(s: &str) -> bool {
    if s.len() > MAX_ID_LEN_BYTES {
        return false;
    }
    match split_sigilled(s) {
        Some(('@', local, domain)) => {
            !local.is_empty()
                && local.chars().all(is_user_localpart_char)
                && is_valid_server_name(domain)
        }
        _ => false,
    }
}

/// Opaque localparts (room IDs, aliases) may hold anything but `:` and NUL.
fn is_valid_opaque_localpart(local: &str) -> bool {
    !local.is_empty() && !local.contains('\0')
}

/// The URL-safe unpadded base64 alphabet that domainless IDs are made of.
fn is_url_safe_base64(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A room ID: `!opaque:domain` (room versions 1 to 11) or the domainless
/// `!hash` form of later versions, at most 255 bytes.
pub fn is_valid_room_id(s: &str) -> bool {
    if s.len() > MAX_ID_LEN_BYTES || !s.starts_with('!') {
        return false;
    }
    match split_sigilled(s) {
        Some((_, local, domain)) => {
            is_valid_opaque_localpart(local) && is_valid_server_name(domain)
        }
        None => is_url_safe_base64(&s[1..]),
    }
}

/// A room alias: `#localpart:domain`, at most 255 bytes.
pub fn is_valid_room_alias(s: &str) -> bool {
    if s.len() > MAX_ID_LEN_BYTES {
        return false;
    }
    match split_sigilled(s) {
        Some(('#', local, domain)) => {
            is_valid_opaque_localpart(local) && is_valid_server_name(domain)
        }
        _ => false,
    }
}

/// An event ID: `$` + opaque part, at most 255 bytes. Room versions 1 and 2
/// used `$local:domain`; later ones use a domainless base64 hash. Servers
/// are free in how they mint opaque parts, so anything printable without
/// spaces is accepted, and a domain, if present, must be a server name.
pub fn is_valid_event_id(s: &str) -> bool {
    if s.len() > MAX_ID_LEN_BYTES {
        return false;
    }
    let Some(rest) = s.strip_prefix('$') else {
        return false;
    };
    if rest.is_empty() || rest.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    match rest.split_once(':') {
        Some((local, domain)) => !local.is_empty() && is_valid_server_name(domain),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localpart_grammar() {
        assert_eq!(validate_user_localpart("alice"), Ok(()));
        assert_eq!(validate_user_localpart("a.b_c=d-e/f+g9"), Ok(()));
        assert_eq!(validate_user_localpart(""), Err(IdError::Empty));
        assert_eq!(
            validate_user_localpart("Alice"),
            Err(IdError::InvalidCharacter('A'))
        );
        assert_eq!(
            validate_user_localpart("a b"),
            Err(IdError::InvalidCharacter(' '))
        );
        assert_eq!(
            validate_user_localpart("a:b"),
            Err(IdError::InvalidCharacter(':'))
        );
        assert_eq!(
            validate_user_localpart("é"),
            Err(IdError::InvalidCharacter('é'))
        );
        assert_eq!(validate_user_localpart(&"a".repeat(252)), Ok(()));
        assert!(matches!(
            validate_user_localpart(&"a".repeat(253)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn new_user_id_counts_the_domain() {
        assert_eq!(validate_new_user_id("alice", "example.org"), Ok(()));
        let long = "a".repeat(250);
        assert_eq!(
            validate_new_user_id(&long, "example.org"),
            Err(IdError::TooLong {
                len_bytes: 250 + 11 + 2,
                max_bytes: 255
            })
        );
        assert!(matches!(
            validate_new_user_id("alice", "bad host"),
            Err(IdError::InvalidServerName(_))
        ));
    }

    #[test]
    fn split_ids() {
        assert_eq!(
            user_id("alice", "example.org:8448"),
            "@alice:example.org:8448"
        );
        assert_eq!(localpart("@alice:example.org:8448"), Some("alice"));
        assert_eq!(
            server_name("@alice:example.org:8448"),
            Some("example.org:8448")
        );
        assert_eq!(server_name("!room:example.org"), Some("example.org"));
        assert_eq!(localpart("#alias:example.org"), Some("alias"));
        assert_eq!(localpart("alice"), None);
        assert_eq!(server_name("@alice"), None);
        assert_eq!(server_name(""), None);
    }

    #[test]
    fn server_names() {
        for ok in [
            "matrix.org",
            "matrix.org:8888",
            "1.2.3.4",
            "1.2.3.4:1234",
            "[1234:5678::abcd]",
            "[1234:5678::abcd]:5678",
            "localhost",
        ] {
            assert!(is_valid_server_name(ok), "{ok}");
        }
        for bad in [
            "",
            "matrix.org:",
            "matrix.org:123456",
            "matrix.org:abc",
            "[::1",
            "[zz]",
            "under_score.org",
            "a b",
            "[1234::1]x",
        ] {
            assert!(!is_valid_server_name(bad), "{bad}");
        }
    }

    #[test]
    fn user_ids() {
        assert!(is_valid_user_id("@alice:example.org"));
        assert!(is_valid_user_id("@a:localhost:8008"));
        assert!(!is_valid_user_id("@Alice:example.org"));
        assert!(!is_valid_user_id("@:example.org"));
        assert!(!is_valid_user_id("alice:example.org"));
        assert!(!is_valid_user_id("@alice"));
        assert!(!is_valid_user_id("!alice:example.org"));
        assert!(!is_valid_user_id(&format!(
            "@{}:example.org",
            "a".repeat(250)
        )));
    }

    #[test]
    fn room_ids_aliases_event_ids() {
        assert!(is_valid_room_id("!abcDEF123:example.org"));
        assert!(is_valid_room_id(
            "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"
        ));
        assert!(!is_valid_room_id("!:example.org"));
        assert!(!is_valid_room_id("!abc:"));
        assert!(!is_valid_room_id("abc:example.org"));
        assert!(!is_valid_room_id("!"));

        assert!(is_valid_room_alias("#room:example.org"));
        assert!(is_valid_room_alias("#rööm:example.org"));
        assert!(!is_valid_room_alias("#:example.org"));
        assert!(!is_valid_room_alias("#room"));
        assert!(!is_valid_room_alias("@room:example.org"));

        assert!(is_valid_event_id(
            "$acR1l0raoZnm60CBwAVgqbZqoO_mYU81xysh1u7XcJk"
        ));
        assert!(is_valid_event_id("$abc:example.org"));
        assert!(!is_valid_event_id("$"));
        assert!(!is_valid_event_id("abc"));
        assert!(!is_valid_event_id("$a b"));
        assert!(!is_valid_event_id(&format!("${}", "a".repeat(255))));
    }
}
