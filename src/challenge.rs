//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1), parsed into values:
//! what a rejection says about why, and what would be accepted instead.
//!
//! A header may carry several challenges, and a response several headers:
//! [`Challenges::from_headers`] reads them all, in order. Scheme and
//! parameter names compare without regard to case; quoted values are
//! unescaped. A malformed header yields the challenges before the fault
//! and stops there: never an error to handle, never a panic.
//!
//! # Example
//!
//! ```
//! use http::{header::WWW_AUTHENTICATE, HeaderMap, HeaderValue};
//! use tower_bearer::challenge::Challenges;
//!
//! let mut headers = HeaderMap::new();
//! headers.append(WWW_AUTHENTICATE, HeaderValue::from_static(
//!     r#"Bearer realm="api", error="insufficient_scope", scope="api:write", Basic realm="api""#,
//! ));
//! let challenges = Challenges::from_headers(&headers);
//! let bearer = challenges.bearer().unwrap();
//! assert_eq!(bearer.param("error"), Some("insufficient_scope"));
//! assert_eq!(bearer.param("SCOPE"), Some("api:write"));
//! assert_eq!(challenges.iter().count(), 2);
//! ```

use std::fmt;

use http::HeaderMap;
use http::header::WWW_AUTHENTICATE;

/// One challenge: a scheme, and either a token68 or parameters.
///
/// `Display` writes it back in the header's syntax, quoting every value
/// (which parses back to the same challenge). Its `Debug` shows the scheme
/// and parameter names only: values can echo secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    scheme: String,
    token68: Option<String>,
    params: Vec<(String, String)>,
}

impl Challenge {
    /// A challenge of `scheme` with no parameters.
    ///
    /// ```
    /// use tower_bearer::challenge::Challenge;
    ///
    /// let challenge = Challenge::new("Bearer").with_param("error", "invalid_token");
    /// assert_eq!(challenge.to_string(), r#"Bearer error="invalid_token""#);
    /// ```
    pub fn new(scheme: impl Into<String>) -> Self {
        Challenge {
            scheme: scheme.into(),
            token68: None,
            params: Vec::new(),
        }
    }

    /// The same challenge with a parameter added.
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.token68 = None;
        self.params.push((name.into(), value.into()));
        self
    }

    /// The same challenge with a token68 instead of parameters.
    pub fn with_token68(mut self, token68: impl Into<String>) -> Self {
        self.params.clear();
        self.token68 = Some(token68.into());
        self
    }

    /// The scheme, as the server spelled it.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Whether the scheme is `scheme`, without regard to case.
    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The token68 (`Negotiate a87421…`), if the challenge has one.
    pub fn token68(&self) -> Option<&str> {
        self.token68.as_deref()
    }

    /// The first parameter named `name` (without regard to case), unquoted.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` parameter (RFC 6750 §3: `invalid_token`,
    /// `insufficient_scope`, …; `insufficient_claims` for claims
    /// challenges, `use_dpop_nonce` for DPoP).
    pub fn error(&self) -> Option<&str> {
        self.param("error")
    }

    /// The `scope` parameter: with `insufficient_scope`, the scope the
    /// resource needs (space-separated).
    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// The `resource_metadata` parameter (RFC 9728 §5.1): the URL of the
    /// protected resource's metadata. Never fetched by this crate.
    pub fn resource_metadata(&self) -> Option<&str> {
        self.param("resource_metadata")
    }

    /// The `claims` parameter of a claims challenge, decoded: the JSON
    /// object to send as the `claims` request parameter. Servers send it
    /// base64-encoded (Microsoft Entra ID's continuous access evaluation:
    /// standard or URL-safe alphabet, padded or not) or as JSON. `None`
    /// when absent, or when it is neither a JSON object nor the base64 of
    /// one.
    ///
    /// ```
    /// use tower_bearer::challenge::Challenges;
    ///
    /// let header = r#"Bearer error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZX19fQ==""#;
    /// let challenges = Challenges::parse(header);
    /// let claims = challenges.bearer().unwrap().claims().unwrap();
    /// assert_eq!(claims, r#"{"access_token":{"nbf":{"essential":true}}}"#);
    /// ```
    pub fn claims(&self) -> Option<String> {
        decode_claims(self.param("claims")?)
    }

    /// Every parameter, in order, names as the server spelled them.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        if let Some(token68) = &self.token68 {
            return write!(f, " {token68}");
        }
        for (i, (name, value)) in self.params.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            write!(f, "{name}=\"")?;
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Challenge")
            .field("scheme", &self.scheme)
            .field("token68", &self.token68.as_ref().map(|_| "…"))
            .field("params", &names)
            .finish()
    }
}

/// The challenges of a response, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenges(Vec<Challenge>);

impl Challenges {
    /// The challenges in every `WWW-Authenticate` header of `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut all = Vec::new();
        for value in headers.get_all(WWW_AUTHENTICATE) {
            // Header values are bytes; a challenge is ASCII (quoted strings
            // may carry obs-text, read as Latin-1 like HTTP does).
            let text: String = value.as_bytes().iter().map(|&b| char::from(b)).collect();
            all.extend(parse(&text));
        }
        Challenges(all)
    }

    /// The challenges in one header value.
    ///
    /// ```
    /// use tower_bearer::challenge::Challenges;
    ///
    /// let challenges = Challenges::parse(r#"Negotiate a87421==, Bearer error="invalid_token""#);
    /// let all: Vec<_> = challenges.iter().map(|c| c.scheme()).collect();
    /// assert_eq!(all, ["Negotiate", "Bearer"]);
    /// ```
    pub fn parse(value: &str) -> Self {
        Challenges(parse(value))
    }

    /// Every challenge.
    pub fn iter(&self) -> impl Iterator<Item = &Challenge> {
        self.0.iter()
    }

    /// The first challenge of the `Bearer` scheme (RFC 6750 §3).
    pub fn bearer(&self) -> Option<&Challenge> {
        self.0.iter().find(|c| c.is("Bearer"))
    }

    /// The first challenge of `scheme`, without regard to case.
    pub fn of(&self, scheme: &str) -> Option<&Challenge> {
        self.0.iter().find(|c| c.is(scheme))
    }

    /// Whether there is no challenge.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A claims request, as JSON or as the base64 of JSON; `None` unless it
/// is a JSON object.
fn decode_claims(value: &str) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    let value = value.trim();
    let json = if value.starts_with('{') {
        value.to_owned()
    } else {
        let bytes = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(value).ok())?;
        String::from_utf8(bytes).ok()?
    };
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(serde_json::Value::Object(_)) => Some(json),
        _ => None,
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// `token68` characters before its `=` padding (RFC 9110 §11.2).
fn is_token68_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/".contains(c)
}

struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    fn skip_ws_and_commas(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let end = self
            .rest
            .find(|c: char| !is_tchar(c))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(token)
    }

    /// A quoted string, unescaped; `None` (and nothing consumed) when the
    /// closing quote is missing.
    fn quoted(&mut self) -> Option<String> {
        let body = self.rest.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &body[i + 1..];
                    return Some(value);
                }
                '\\' => value.push(chars.next()?.1),
                c => value.push(c),
            }
        }
        None
    }
}

/// Parses the challenges of one header value, up to the first fault.
fn parse(value: &str) -> Vec<Challenge> {
    let mut cursor = Cursor { rest: value };
    let mut challenges = Vec::new();
    loop {
        cursor.skip_ws_and_commas();
        let Some(scheme) = cursor.token() else {
            return challenges;
        };
        let mut challenge = Challenge::new(scheme);
        // A scheme alone, then the next challenge or the end.
        let before_ws = cursor.rest;
        cursor.skip_ws();
        if cursor.rest.len() == before_ws.len() && !matches!(cursor.peek(), None | Some(',')) {
            // No space after the scheme, and not the end of it: malformed.
            return challenges;
        }
        if let Some(token68) = token68(&mut cursor) {
            challenges.push(challenge.with_token68(token68));
            continue;
        }
        // auth-params, until something that is not `name = value`.
        loop {
            let save = cursor.rest;
            cursor.skip_ws_and_commas();
            let param_start = cursor.rest;
            let Some(name) = cursor.token() else {
                cursor.rest = save;
                break;
            };
            cursor.skip_ws();
            if !cursor.eat('=') {
                // The next challenge's scheme.
                cursor.rest = param_start;
                break;
            }
            cursor.skip_ws();
            let value = if cursor.peek() == Some('"') {
                match cursor.quoted() {
                    Some(value) => value,
                    None => {
                        challenges.push(challenge);
                        return challenges;
                    }
                }
            } else {
                match cursor.token() {
                    Some(value) => value.to_owned(),
                    None => {
                        challenges.push(challenge);
                        return challenges;
                    }
                }
            };
            challenge.params.push((name.to_owned(), value));
        }
        challenges.push(challenge);
    }
}

/// A token68 right after the scheme: its characters and `=` padding, then
/// the end, a comma, or spaces before a comma. Consumed only if it is one
/// (an `auth-param` starts with a token then `=` and a value).
fn token68<'a>(cursor: &mut Cursor<'a>) -> Option<&'a str> {
    let rest = cursor.rest;
    let body_end = rest
        .find(|c: char| !is_token68_char(c))
        .unwrap_or(rest.len());
    if body_end == 0 {
        return None;
    }
    let padded_end = body_end
        + rest[body_end..]
            .find(|c: char| c != '=')
            .unwrap_or(rest.len() - body_end);
    let after = rest[padded_end..].trim_start_matches([' ', '\t']);
    if !(after.is_empty() || after.starts_with(',')) {
        return None;
    }
    // `name=value`, a parameter: the `=` is followed by a value.
    if padded_end > body_end && rest[..body_end].chars().all(is_tchar) {
        let value_follows = !rest[body_end..padded_end].is_empty()
            && rest[padded_end..]
                .trim_start_matches([' ', '\t'])
                .starts_with(|c: char| is_tchar(c) || c == '"');
        if value_follows {
            return None;
        }
    }
    cursor.rest = &rest[padded_end..];
    Some(&rest[..padded_end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schemes(value: &str) -> Vec<String> {
        parse(value).iter().map(|c| c.scheme.clone()).collect()
    }

    #[test]
    fn rfc_9110_and_6750_examples() {
        // RFC 9110 §11.6.1.
        let c = parse(
            r#"Basic realm="simple", Newauth realm="apps", type=1, title="Login to \"apps\"""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme(), "Basic");
        assert_eq!(c[0].param("realm"), Some("simple"));
        assert_eq!(c[1].scheme(), "Newauth");
        assert_eq!(c[1].param("type"), Some("1"));
        assert_eq!(c[1].param("title"), Some(r#"Login to "apps""#));
        // RFC 6750 §3.
        let c = parse(
            r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("error"), Some("invalid_token"));
        assert_eq!(
            c[0].param("error_description"),
            Some("The access token expired")
        );
        assert_eq!(
            parse(r#"Bearer realm="example""#)[0].param("realm"),
            Some("example")
        );
        assert!(parse("Bearer")[0].params().next().is_none());
    }

    #[test]
    fn token68_and_parameters_are_told_apart() {
        let c = parse("Negotiate a87421000492aa874209af8bc028");
        assert_eq!(c[0].token68(), Some("a87421000492aa874209af8bc028"));
        let c = parse("Basic YWxhZGRpbjpvcGVuc2VzYW1l==, Bearer error=invalid_token");
        assert_eq!(c[0].token68(), Some("YWxhZGRpbjpvcGVuc2VzYW1l=="));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
        let c = parse("Bearer error=invalid_token");
        assert_eq!(c[0].token68(), None);
        assert_eq!(c[0].param("error"), Some("invalid_token"));
    }

    #[test]
    fn names_compare_without_regard_to_case_and_several_challenges_follow_each_other() {
        let c =
            parse(r#"bEaReR ERROR="x", scope="a b" ,DPoP algs="ES256", error="use_dpop_nonce""#);
        assert_eq!(
            schemes(r#"bEaReR ERROR="x", scope="a b" ,DPoP algs="ES256""#),
            ["bEaReR", "DPoP"]
        );
        assert!(c[0].is("Bearer"));
        assert_eq!(c[0].param("error"), Some("x"));
        assert_eq!(c[0].param("Scope"), Some("a b"));
        assert_eq!(c[1].param("algs"), Some("ES256"));
        assert_eq!(c[1].param("error"), Some("use_dpop_nonce"));
    }

    #[test]
    fn malformed_headers_give_what_came_before_the_fault() {
        assert!(parse("").is_empty());
        assert!(parse(" , ,").is_empty());
        assert!(parse("=").is_empty());
        let c = parse(r#"Bearer realm="unterminated"#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("realm"), None);
        let c = parse(r#"Bearer error="a", realm=, Basic"#);
        assert_eq!(c[0].param("error"), Some("a"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn claims_are_decoded_from_json_or_either_base64_alphabet() {
        let json = r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#;
        let with = |claims: &str| {
            Challenge::new("Bearer")
                .with_param("error", "insufficient_claims")
                .with_param("claims", claims)
                .claims()
        };
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        assert_eq!(with(json).as_deref(), Some(json));
        assert_eq!(with(&STANDARD.encode(json)).as_deref(), Some(json));
        assert_eq!(with(&URL_SAFE_NO_PAD.encode(json)).as_deref(), Some(json));
        assert_eq!(with("not base64 at all!"), None);
        assert_eq!(with(&STANDARD.encode("[1,2]")), None, "not an object");
        assert_eq!(with("{broken"), None);
    }

    #[test]
    fn debug_shows_no_value() {
        let c = Challenge::new("Bearer").with_param("error_description", "token s3cr3t rejected");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!format!("{c:?}").contains("Bearer s3"));
    }

    fn challenge() -> impl Strategy<Value = Challenge> {
        let name = "[A-Za-z][A-Za-z0-9_-]{0,10}";
        let value = "[ -~]{0,20}";
        (
            name,
            prop_oneof![Just(None), "[A-Za-z0-9+/]{1,20}={0,2}".prop_map(Some),],
            proptest::collection::vec((name, value), 0..4),
        )
            .prop_map(|(scheme, token68, params)| {
                let mut c = Challenge::new(scheme);
                match token68 {
                    Some(t) if params.is_empty() => c = c.with_token68(t),
                    _ => {
                        for (n, v) in params {
                            c = c.with_param(n, v);
                        }
                    }
                }
                c
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100_000))]

        #[test]
        fn any_input_parses_without_panicking(input in ".{0,200}") {
            let _ = parse(&input);
        }

        #[test]
        fn what_display_writes_parses_back(challenges in proptest::collection::vec(challenge(), 1..4)) {
            let header = challenges.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            prop_assert_eq!(parse(&header), challenges);
        }
    }
}
