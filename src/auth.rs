//! `--auth-token`: finding the token in a request and comparing it in constant time.
//!
//! Accepts the forms InfluxDB and Prometheus clients send: `Authorization: Token T`,
//! `Authorization: Bearer T`, `Authorization: Basic base64(user:T)` (any user), and the v1
//! query parameter `p=T`. The token is never logged, and comparisons take the same time
//! wherever the first differing byte is.

use base64::Engine;
use subtle::ConstantTimeEq;

/// Does the request carry `token`? `authorization` is the raw header value, `query` the raw
/// query string.
pub fn authorized(token: &str, authorization: Option<&[u8]>, query: &str) -> bool {
    let expected = token.as_bytes();
    if let Some(value) = authorization {
        if let Some((scheme, rest)) = split_scheme(value) {
            if scheme.eq_ignore_ascii_case(b"token") || scheme.eq_ignore_ascii_case(b"bearer") {
                if ct_eq(rest, expected) {
                    return true;
                }
            } else if scheme.eq_ignore_ascii_case(b"basic") {
                if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) {
                    if let Some(colon) = decoded.iter().position(|&b| b == b':') {
                        if ct_eq(&decoded[colon + 1..], expected) {
                            return true;
                        }
                    }
                }
            }
        }
    }
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name == "p" && ct_eq(value.as_bytes(), expected) {
            return true;
        }
    }
    false
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = value.iter().position(|&b| b == b' ')?;
    let rest = &value[sp + 1..];
    let start = rest.iter().position(|&b| b != b' ')?;
    Some((&value[..sp], &rest[start..]))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    // `subtle` compares equal-length slices without early exit; a length mismatch is
    // already a refusal and reveals only the length.
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_form() {
        let t = "s3cr3t";
        assert!(authorized(t, Some(b"Token s3cr3t"), ""));
        assert!(authorized(t, Some(b"token s3cr3t"), ""));
        assert!(authorized(t, Some(b"Bearer s3cr3t"), ""));
        // "anyone:s3cr3t"
        assert!(authorized(t, Some(b"Basic YW55b25lOnMzY3IzdA=="), ""));
        // ":s3cr3t" (empty user)
        assert!(authorized(t, Some(b"Basic OnMzY3IzdA=="), ""));
        assert!(authorized(t, None, "db=x&p=s3cr3t"));
        assert!(authorized(t, None, "u=me&p=s3cr%33t"));
    }

    #[test]
    fn refusals() {
        let t = "s3cr3t";
        assert!(!authorized(t, None, ""));
        assert!(!authorized(t, Some(b"Token wrong"), ""));
        assert!(!authorized(t, Some(b"Token s3cr3tX"), ""));
        assert!(!authorized(t, Some(b"s3cr3t"), ""));
        assert!(!authorized(t, Some(b"Digest s3cr3t"), ""));
        // "me:wrong"
        assert!(!authorized(t, Some(b"Basic bWU6d3Jvbmc="), ""));
        assert!(!authorized(t, Some(b"Basic !!!"), ""));
        assert!(!authorized(t, None, "p=wrong"));
        assert!(!authorized(t, None, "pp=s3cr3t"));
    }
}
