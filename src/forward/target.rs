//! A forward target: the URL given to `--remote-write-url` or `--influx-write-url`, split
//! into what is sent (the URL without userinfo, and the userinfo as basic auth) and what
//! may be shown (`https://user:***@host/...`).
//!
//! It owns the only copy of a target's password and must never let it reach a log line,
//! an error, `/stats` or a panic message: `Display` and `Debug` print the redacted form,
//! and parse errors never quote the URL.

use std::fmt;

use base64::Engine;
use percent_encoding::percent_decode_str;

use super::Format;

/// Query parameters that carry a secret (InfluxDB 1.x takes the password as `p`).
const SECRET_PARAMS: &[&str] = &["p", "password", "token"];

/// Where and how one target receives points.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    format: Format,
    /// The URL requests go to: userinfo and fragment removed, query kept.
    url: String,
    /// `Basic base64(user:password)` when the URL had userinfo.
    authorization: Option<String>,
    /// The URL with the password and secret query values replaced by `***`.
    redacted: String,
}

/// Why a forward URL was refused. Never contains the URL (it may hold a password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError(pub String);

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetError {}

impl Target {
    /// Parses an `http` or `https` URL with a host.
    pub fn parse(format: Format, text: &str) -> Result<Target, TargetError> {
        let mut url = url::Url::parse(text.trim())
            .map_err(|e| TargetError(format!("not a valid URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(TargetError("no host".to_string()));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let user = decode(url.username());
        let password = url.password().map(decode);
        let authorization = (!user.is_empty() || password.is_some()).then(|| {
            let pair = format!("{user}:{}", password.as_deref().unwrap_or(""));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        url.set_fragment(None);
        let mut redacted = url.clone();
        // Both only fail for URLs that cannot have userinfo (no host), refused above.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        if password.is_some() {
            let _ = redacted.set_password(Some("***"));
        }
        if redacted
            .query_pairs()
            .any(|(k, _)| SECRET_PARAMS.contains(&k.as_ref()))
        {
            let pairs: Vec<(String, String)> = redacted
                .query_pairs()
                .map(|(k, v)| {
                    let v = if SECRET_PARAMS.contains(&k.as_ref()) {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            redacted.query_pairs_mut().clear().extend_pairs(pairs);
        }
        Ok(Target {
            format,
            url: url.into(),
            authorization,
            redacted: redacted.as_str().replace("%2A%2A%2A", "***"),
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The URL to send to. It may carry a secret in its query (`p=`): never log it, log
    /// [`Target::redacted`].
    pub fn request_url(&self) -> &str {
        &self.url
    }

    /// The `Authorization` header value, when the URL had userinfo. Never log it.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// The value of query parameter `name` in the URL, if present (never for logging:
    /// it may be a secret).
    pub fn query_value(&self, name: &str) -> Option<String> {
        let url = url::Url::parse(&self.url).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The URL as it may be shown in logs and `/stats`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("format", &self.format)
            .field("url", &self.redacted)
            .field("basic_auth", &self.authorization.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(url: &str) -> Target {
        Target::parse(Format::RemoteWrite, url).expect("valid")
    }

    #[test]
    fn userinfo_becomes_basic_auth_and_is_redacted() {
        let t = rw("https://alice:s%40cret@vm.example:8428/api/v1/write#frag");
        assert_eq!(t.request_url(), "https://vm.example:8428/api/v1/write");
        // base64("alice:s@cret")
        assert_eq!(t.authorization(), Some("Basic YWxpY2U6c0BjcmV0"));
        assert_eq!(
            t.redacted(),
            "https://alice:***@vm.example:8428/api/v1/write"
        );
        for shown in [t.to_string(), format!("{t:?}"), format!("{t:#?}")] {
            assert!(!shown.contains("cret"), "{shown}");
            assert!(!shown.contains("YWxp"), "{shown}");
        }
        assert!(format!("{t:?}").contains("alice:***@"));
    }

    #[test]
    fn user_without_password_and_no_userinfo() {
        let t = rw("http://bob@127.0.0.1:9/w");
        assert_eq!(t.authorization(), Some("Basic Ym9iOg=="));
        assert_eq!(t.redacted(), "http://bob@127.0.0.1:9/w");
        assert_eq!(t.request_url(), "http://127.0.0.1:9/w");
        let t = rw("http://[::1]:8086/write?db=x");
        assert_eq!(t.authorization(), None);
        assert_eq!(t.request_url(), "http://[::1]:8086/write?db=x");
        assert_eq!(t.to_string(), "http://[::1]:8086/write?db=x");
    }

    #[test]
    fn secret_query_values_are_redacted_but_sent() {
        let t = Target::parse(
            Format::LineProtocol,
            "http://h:8086/write?db=metrics&u=me&p=hunter2",
        )
        .expect("valid");
        assert_eq!(
            t.request_url(),
            "http://h:8086/write?db=metrics&u=me&p=hunter2"
        );
        assert_eq!(t.redacted(), "http://h:8086/write?db=metrics&u=me&p=***");
        assert!(!format!("{t:?}").contains("hunter2"));
        assert_eq!(t.format(), Format::LineProtocol);
    }

    #[test]
    fn refused_urls_never_quote_the_url() {
        for bad in [
            "ftp://u:hunter2@h/x",
            "http://u:hunter2@/x",
            "hunter2",
            "unix:/u:hunter2",
        ] {
            let e = Target::parse(Format::RemoteWrite, bad).expect_err(bad);
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
