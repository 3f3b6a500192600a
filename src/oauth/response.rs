//! RFC 6749 token responses: a §5.1 success becomes a [`Token`], a §5.2
//! error (or anything else) a typed [`Error`]. The rules are documented on
//! [`parse_token_response`].

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Number, Value};

use crate::token::REDACTED;
use crate::{Error, OAuthError, OAuthErrorCode, Token, TokenType};

/// The longest lifetime a token response can give a token: one year.
///
/// A larger `expires_in` (`1e30`, or years) is capped to it. Nothing real
/// hands out access tokens for longer, refetching once a year costs
/// nothing, and the cap keeps expiry arithmetic far from overflow.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest `error_description` or `error_uri` kept, in characters.
const MAX_DESCRIPTION: usize = 256;
/// The longest excerpt of an error page kept, in characters.
const MAX_EXCERPT: usize = 48;
/// The longest content type quoted, in characters.
const MAX_CONTENT_TYPE: usize = 40;
/// How much of an error page is searched for its title.
const SCAN: usize = 4096;

/// Parses a token endpoint's response into a [`Token`] or a typed
/// [`Error`]: RFC 6749 §5.1 successes and §5.2 errors, and whatever else an
/// endpoint may send. It never panics, whatever the input.
///
/// Call it as soon as the response arrives: a relative `expires_in` counts
/// from that moment (B1). The grants of this module use it; it is public
/// for custom token sources that reach an RFC 6749-shaped endpoint by
/// other means.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderMap, StatusCode};
/// use tower_bearer::oauth::parse_token_response;
/// use tower_bearer::{ErrorKind, OAuthErrorCode};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let body = br#"{"access_token":"t0k3n","token_type":"bearer","expires_in":"3600"}"#;
/// let token = parse_token_response(StatusCode::OK, &HeaderMap::new(), body).unwrap();
/// assert_eq!(token.access_token().secret(), "t0k3n");
/// assert_eq!(token.expires_at(), Some(token.issued_at() + Duration::from_secs(3600)));
///
/// let body = br#"{"error":"invalid_client","error_description":"client authentication failed"}"#;
/// let err = parse_token_response(StatusCode::UNAUTHORIZED, &HeaderMap::new(), body).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::OAuth);
/// assert_eq!(err.oauth_error().unwrap().code(), &OAuthErrorCode::InvalidClient);
/// assert!(err.is_permanent());
/// # }
/// ```
///
/// # Success (§5.1)
///
/// | member | what is accepted |
/// | --- | --- |
/// | `access_token` | required, a non-empty string |
/// | `token_type` | `bearer` in any case, or absent (many servers omit it): sent as `Bearer`. `DPoP` in any case: a [`TokenType::DPoP`] token, which the cache sends only with a proof from the key it is bound to (feature `dpop`) and refuses otherwise. Anything else is an [`ErrorKind::InvalidResponse`](crate::ErrorKind::InvalidResponse) |
/// | `expires_in` | a number or a numeric string, in seconds, counted from the moment the response is parsed. At most [`MAX_EXPIRES_IN`]; zero or negative means "do not reuse": the token goes to the callers waiting for it and the next call fetches another. `null` or absent: the expiry is left unset, and the cache uses the JWT `exp` claim or its default lifetime (B1). Anything else is an [`ErrorKind::InvalidResponse`](crate::ErrorKind::InvalidResponse) |
/// | `refresh_token` | a string; an empty one counts as absent |
/// | `scope` | a string (or, leniently, an array of strings, joined with spaces) |
/// | anything else | kept, see [`Token::extra`] |
///
/// # Failures (§5.2 and the rest)
///
/// * A JSON object with an `error` member is an [`ErrorKind::OAuth`](crate::ErrorKind::OAuth) error
///   with its code, `error_description`, `error_uri` and HTTP status,
///   whatever the status is: a 200 carrying `error` is an error.
/// * Any other non-2xx response is an [`ErrorKind::Status`](crate::ErrorKind::Status) error. 5xx, 408
///   and 429 are transient (B4); 3xx are permanent, as redirects are not
///   followed (B9).
/// * A `Retry-After` header (seconds or an HTTP date) is attached to the
///   error, and the cache waits that long before its next attempt.
/// * A 2xx that is not a JSON object, or lacks a usable `access_token`, is
///   an [`ErrorKind::InvalidResponse`](crate::ErrorKind::InvalidResponse).
///
/// # What error messages quote
///
/// Never the body as a whole: an error page may echo the request. A status
/// error says the content type, the length, and for an HTML page its
/// `<title>` (or for plain text its first line), cut to 48 printable ASCII
/// characters, so a message stays under 120 characters. The grants of this
/// module scrub their own secrets (client secret, password, refresh token,
/// in every encoding they were sent in, and HTML-escaped in a title) from
/// that excerpt and from `error_description` first (B8). A 2xx body that is
/// not a JSON object is described by its content type and length only: it
/// may be a token response in another format, tokens included.
///
/// # Errors
///
/// [`ErrorKind::OAuth`](crate::ErrorKind::OAuth), [`ErrorKind::Status`](crate::ErrorKind::Status) or
/// [`ErrorKind::InvalidResponse`](crate::ErrorKind::InvalidResponse), as described above.
pub fn parse_token_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Token, Error> {
    parse(status, headers, body, &[], Reading::default())
}

/// How a grant reads its responses.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reading<'a> {
    /// The response's fields named `fields[i].1` are read as `fields[i].0`
    /// (custom endpoints).
    pub(crate) fields: &'a [(&'static str, String)],
    /// `token_type` `N_A` (RFC 8693 §2.2.1) is accepted: a token exchange
    /// that asked for a token that is not an access token.
    pub(crate) not_applicable: bool,
}

/// [`parse_token_response`], scrubbing `secrets` from anything quoted, read
/// as `reading` says.
pub(crate) fn parse(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[String],
    reading: Reading<'_>,
) -> Result<Token, Error> {
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut object)) => {
            for (standard, theirs) in reading.fields {
                let value = object.remove(theirs.as_str());
                object.remove(*standard);
                if let Some(value) = value {
                    object.insert((*standard).to_owned(), value);
                }
            }
            Some(object)
        }
        _ => None,
    };
    let retry_after = retry_after(headers);
    let with_retry_after = |error: Error| match retry_after {
        Some(delay) => error.with_retry_after(delay),
        None => error,
    };

    if let Some(object) = &object
        && let Some(code) = object.get("error")
    {
        if let Value::String(code) = code {
            return Err(with_retry_after(oauth_error(status, code, object, secrets)));
        }
        if status.is_success() {
            return Err(Error::invalid_response("the error member is not a string"));
        }
    }
    if !status.is_success() {
        let mut what = describe(headers, body, secrets);
        if status.is_redirection() {
            what.insert_str(0, "redirects are not followed; ");
        }
        return Err(with_retry_after(Error::status(status, Some(what))));
    }
    match object {
        Some(object) => success(object, reading.not_applicable),
        // B8: a 2xx body is where tokens travel (a form-encoded or
        // truncated token response, say): describe it, never quote it.
        None => Err(Error::invalid_response(format!(
            "not a JSON object ({})",
            shape(headers, body)
        ))),
    }
}

/// A §5.1 success response.
fn success(mut object: Map<String, Value>, not_applicable: bool) -> Result<Token, Error> {
    let access_token = match object.remove("access_token") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err(Error::invalid_response("the access_token is empty")),
        Some(Value::Null) | None => {
            return Err(Error::invalid_response("the response has no access_token"));
        }
        Some(_) => return Err(Error::invalid_response("the access_token is not a string")),
    };
    let token_type = match object.remove("token_type") {
        None | Some(Value::Null) => TokenType::Bearer,
        Some(Value::String(s)) => match TokenType::parse(&s) {
            TokenType::Bearer => TokenType::Bearer,
            // Sent only with a proof from the key it is bound to: the
            // cache refuses it when there is none.
            TokenType::DPoP => TokenType::DPoP,
            // RFC 8693 §2.2.1: the issued token is not an access token
            // (an ID token, a SAML assertion). Accepted only when asked
            // for; the cache never sends it in a header.
            TokenType::Other(other) if not_applicable && other == NOT_APPLICABLE => {
                TokenType::Other(other)
            }
            _ => {
                return Err(Error::invalid_response(format!(
                    "unsupported token type \"{}\"",
                    printable(&s, 20)
                )));
            }
        },
        Some(_) => return Err(Error::invalid_response("the token_type is not a string")),
    };
    let lifetime = match object.remove("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(lifetime_from_number(&n)),
        Some(Value::String(s)) => Some(
            lifetime_from_str(&s)
                .ok_or_else(|| Error::invalid_response("the expires_in is not a number"))?,
        ),
        Some(_) => return Err(Error::invalid_response("the expires_in is not a number")),
    };
    let refresh_token = match object.remove("refresh_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(Error::invalid_response("the refresh_token is not a string")),
    };
    let scope = match object.remove("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Some(other) => {
            // Not a scope this crate understands: keep it as it came.
            object.insert("scope".to_owned(), other);
            None
        }
    };

    // B1: the token's clock starts now, as the response arrives.
    let mut token = Token::new(access_token).with_token_type(token_type);
    if let Some(lifetime) = lifetime {
        token = token.with_expires_in(lifetime);
    }
    if let Some(refresh_token) = refresh_token {
        token = token.with_refresh_token(refresh_token);
    }
    if let Some(scope) = scope {
        token = token.with_scope(scope);
    }
    Ok(token.with_extra(object))
}

/// The `token_type` of a token exchange's answer that is not an access
/// token (RFC 8693 §2.2.1).
pub(crate) const NOT_APPLICABLE: &str = "N_A";

/// `expires_in` as a JSON number: zero or negative is "do not reuse",
/// anything above [`MAX_EXPIRES_IN`] is capped.
fn lifetime_from_number(n: &Number) -> Duration {
    if let Some(secs) = n.as_u64() {
        return Duration::from_secs(secs).min(MAX_EXPIRES_IN);
    }
    if n.as_i64().is_some() {
        // An integer that is not a u64 is negative.
        return Duration::ZERO;
    }
    n.as_f64().map_or(Duration::ZERO, lifetime_from_f64)
}

fn lifetime_from_f64(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else if secs >= MAX_EXPIRES_IN.as_secs_f64() {
        MAX_EXPIRES_IN
    } else {
        Duration::from_secs_f64(secs)
    }
}

/// `expires_in` as a string, as PayPal and others send it: `"3600"`,
/// `" 3600 "`, `"-5"`, `"1e3"`. Not `"inf"`, `"NaN"` or words.
fn lifetime_from_str(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_EXPIRES_IN));
    }
    if s.parse::<i64>().is_ok() {
        return Some(Duration::ZERO);
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(lifetime_from_f64)
}

/// A §5.2 error response.
fn oauth_error(
    status: StatusCode,
    code: &str,
    object: &Map<String, Value>,
    secrets: &[String],
) -> Error {
    let code = OAuthErrorCode::parse(&printable(&scrub(code, secrets), MAX_DESCRIPTION));
    let mut error = OAuthError::new(code).with_status(status);
    if let Some(Value::String(description)) = object.get("error_description") {
        error = error.with_description(printable(&scrub(description, secrets), MAX_DESCRIPTION));
    }
    if let Some(Value::String(uri)) = object.get("error_uri") {
        error = error.with_uri(printable(&scrub(uri, secrets), MAX_DESCRIPTION));
    }
    Error::oauth(error)
}

/// `Retry-After`: delay-seconds, or an HTTP date (a date in the past is no
/// delay).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// What an error page was, for an error message: its [`shape`], and the
/// title of an HTML page or the first line of plain text, scrubbed of
/// `secrets` and cut short. Only for non-2xx responses: a 2xx body may carry
/// tokens and is never quoted.
fn describe(headers: &HeaderMap, body: &[u8], secrets: &[String]) -> String {
    let mut out = shape(headers, body);
    if let Some(excerpt) = excerpt(headers, body, secrets) {
        out.push_str(&format!(": \"{excerpt}\""));
    }
    out
}

/// The content type and the length of a body, and nothing of its content.
fn shape(headers: &HeaderMap, body: &[u8]) -> String {
    match content_type(headers) {
        Some(ct) => format!("{ct}, {} bytes", body.len()),
        None => format!("no content type, {} bytes", body.len()),
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| printable(v, MAX_CONTENT_TYPE))
}

/// The title of an HTML page, or the first line of plain text, with every
/// secret replaced, whitespace collapsed, printable and at most
/// [`MAX_EXCERPT`] characters; `None` for other bodies.
fn excerpt(headers: &HeaderMap, body: &[u8], secrets: &[String]) -> Option<String> {
    // Scrub the whole body before anything is cut: a secret that straddled
    // the end of the scanned head would otherwise leave its start behind.
    let text = scrub(&String::from_utf8_lossy(body), secrets);
    let head = &text[..floor_char_boundary(&text, SCAN)];
    let raw = match html_title(head) {
        Some(title) => decode_entities(title),
        None => {
            let is_text = content_type(headers)
                .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/plain"));
            if !is_text {
                return None;
            }
            Cow::Borrowed(head.lines().find(|l| !l.trim().is_empty()).unwrap_or(""))
        }
    };
    // Scrub again: an HTML page spells a secret's `&` as `&amp;`. And
    // before collapsing whitespace, which could change a secret that
    // contains some, so that it would no longer be found.
    let words = scrub(&raw, secrets)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let excerpt = printable(&words, MAX_EXCERPT);
    (!excerpt.is_empty()).then_some(excerpt)
}

/// The largest index at most `index` that is a char boundary of `text`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut end = index.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// The text of the first `<title>` element, if any.
fn html_title(head: &str) -> Option<&str> {
    let lower = head.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start
        + lower[start..]
            .find("</title")
            .unwrap_or(lower.len() - start);
    head.get(start..end)
}

/// Decodes the character references of HTML text: `&amp;`, `&lt;`, `&gt;`,
/// `&quot;`, `&apos;` and numeric ones (`&#38;`, `&#x26;`). Anything else
/// is left as it is.
fn decode_entities(text: &str) -> Cow<'_, str> {
    /// The longest reference decoded, `&` and `;` included (`&#x10FFFF;`).
    const LONGEST: usize = 10;
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // `rest` starts with `&`, so a `;` is at index 1 or later.
        let decoded = rest
            .find(';')
            .filter(|&end| end < LONGEST)
            .and_then(|end| Some((entity(&rest[1..end])?, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character a reference names (what stands between `&` and `;`).
fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Replaces every occurrence of a secret with `[redacted]`. Longer secrets
/// first, so a secret that contains another is replaced whole.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// Keeps printable ASCII (other characters become `?`) and cuts to `max`
/// characters, marking the cut with `...`.
fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 3));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        out.push(if c == ' ' || c.is_ascii_graphic() {
            c
        } else {
            '?'
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn ok(body: &str) -> Result<Token, Error> {
        parse_token_response(StatusCode::OK, &HeaderMap::new(), body.as_bytes())
    }

    fn lifetime(body: &str) -> Option<Duration> {
        let token = ok(body).unwrap();
        token.expires_at().map(|at| at - token.issued_at())
    }

    #[test]
    fn b1_expires_in_accepts_numbers_and_numeric_strings() {
        let secs = Duration::from_secs;
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":3600}"#),
            Some(secs(3600))
        );
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":"3600"}"#),
            Some(secs(3600))
        );
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":" 60 "}"#),
            Some(secs(60))
        );
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":1.5}"#),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":"1e3"}"#),
            Some(secs(1000))
        );
    }

    #[test]
    fn b1_zero_or_negative_expires_in_means_do_not_reuse() {
        for v in [
            "0",
            "-5",
            "\"-5\"",
            "-0.5",
            "\"0\"",
            "-1e30",
            "-9223372036854775808",
        ] {
            let body = format!(r#"{{"access_token":"a","expires_in":{v}}}"#);
            assert_eq!(lifetime(&body), Some(Duration::ZERO), "{v}");
        }
    }

    #[test]
    fn b1_huge_expires_in_is_capped_to_one_year() {
        for v in [
            "1e30",
            "\"1e30\"",
            "18446744073709551615",
            "31536001",
            "1e308",
        ] {
            let body = format!(r#"{{"access_token":"a","expires_in":{v}}}"#);
            assert_eq!(lifetime(&body), Some(MAX_EXPIRES_IN), "{v}");
        }
    }

    #[test]
    fn b1_missing_or_null_expires_in_leaves_expiry_to_the_cache() {
        assert_eq!(lifetime(r#"{"access_token":"a"}"#), None);
        assert_eq!(lifetime(r#"{"access_token":"a","expires_in":null}"#), None);
    }

    #[test]
    fn non_numeric_expires_in_is_an_invalid_response() {
        for v in ["\"soon\"", "\"inf\"", "\"NaN\"", "true", "[1]", "{}"] {
            let body = format!(r#"{{"access_token":"a","expires_in":{v}}}"#);
            assert_eq!(
                ok(&body).unwrap_err().kind(),
                ErrorKind::InvalidResponse,
                "{v}"
            );
        }
    }

    #[test]
    fn token_type_is_matched_case_insensitively_and_may_be_missing() {
        for body in [
            r#"{"access_token":"a","token_type":"bearer"}"#,
            r#"{"access_token":"a","token_type":"BEARER"}"#,
            r#"{"access_token":"a","token_type":"Bearer"}"#,
            r#"{"access_token":"a"}"#,
        ] {
            assert_eq!(ok(body).unwrap().token_type(), &TokenType::Bearer, "{body}");
        }
    }

    #[test]
    fn other_token_types_are_refused_as_permanent_invalid_responses() {
        for (body, says) in [
            (r#"{"access_token":"a","token_type":"mac"}"#, "\"mac\""),
            (r#"{"access_token":"a","token_type":7}"#, "not a string"),
        ] {
            let err = ok(body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse);
            assert!(err.is_permanent());
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn dpop_token_type_is_kept_for_the_cache_to_prove_or_refuse() {
        let token = ok(r#"{"access_token":"a","token_type":"dpop"}"#).unwrap();
        assert_eq!(token.token_type(), &TokenType::DPoP);
    }

    #[test]
    fn access_token_must_be_a_non_empty_string() {
        for body in [
            r#"{"token_type":"bearer"}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":null}"#,
            r#"{"access_token":42}"#,
            r#"[]"#,
            r#""a""#,
            r#"{"access_token":"a""#,
        ] {
            assert_eq!(
                ok(body).unwrap_err().kind(),
                ErrorKind::InvalidResponse,
                "{body}"
            );
        }
    }

    #[test]
    fn scope_refresh_token_and_unknown_members_are_kept() {
        let token = ok(r#"{"access_token":"a","refresh_token":"r","scope":"x y",
                          "id_token":"i","ext":{"n":1}}"#)
        .unwrap();
        assert_eq!(token.refresh_token().unwrap().secret(), "r");
        assert_eq!(token.scope(), Some("x y"));
        let extra = token.extra().unwrap();
        assert_eq!(extra["id_token"], "i");
        assert_eq!(extra["ext"]["n"], 1);
        assert!(!extra.contains_key("access_token"));

        let token = ok(r#"{"access_token":"a","scope":["x","y"],"refresh_token":""}"#).unwrap();
        assert_eq!(token.scope(), Some("x y"));
        assert!(token.refresh_token().is_none());
    }

    #[test]
    fn b4_oauth_errors_are_typed_with_status_description_and_uri() {
        let body = br#"{"error":"invalid_grant","error_description":"grant request is invalid",
                        "error_uri":"https://idp.example/e"}"#;
        let err =
            parse_token_response(StatusCode::BAD_REQUEST, &HeaderMap::new(), body).unwrap_err();
        let oauth = err.oauth_error().unwrap();
        assert_eq!(oauth.code(), &OAuthErrorCode::InvalidGrant);
        assert_eq!(oauth.description(), Some("grant request is invalid"));
        assert_eq!(oauth.uri(), Some("https://idp.example/e"));
        assert_eq!(oauth.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(err.http_status(), Some(StatusCode::BAD_REQUEST));
        assert!(err.is_permanent());
    }

    #[test]
    fn b4_a_200_carrying_error_is_an_error() {
        let err = ok(r#"{"error":"invalid_scope","access_token":"a"}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OAuth);
        assert_eq!(
            err.oauth_error().unwrap().code(),
            &OAuthErrorCode::InvalidScope
        );
        assert_eq!(err.http_status(), Some(StatusCode::OK));
    }

    #[test]
    fn unknown_error_codes_are_kept_as_strings() {
        let err = ok(r#"{"error":"vendor_thing"}"#).unwrap_err();
        assert_eq!(
            err.oauth_error().unwrap().code(),
            &OAuthErrorCode::Other("vendor_thing".into())
        );
    }

    #[test]
    fn b4_retry_after_seconds_and_dates_are_attached() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "2".parse().unwrap());
        let err = parse_token_response(StatusCode::TOO_MANY_REQUESTS, &headers, b"").unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        assert!(err.is_transient());

        let later = SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            header::RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let delay = retry_after(&headers).unwrap();
        assert!(delay > Duration::from_secs(110) && delay <= Duration::from_secs(120));

        headers.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn html_error_pages_are_status_errors_quoting_only_the_title() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
        let page = b"<html><head><TITLE>502 Bad\n Gateway</TITLE></head>\
                     <body>upstream said: client_secret=hunter2</body></html>";
        let err = parse_token_response(StatusCode::BAD_GATEWAY, &headers, page).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Status);
        assert!(err.is_transient());
        let message = err.to_string();
        assert!(message.contains("\"502 Bad Gateway\""), "{message}");
        assert!(message.contains("text/html"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.len() <= 160, "{message}");
    }

    #[test]
    fn b8_quoted_text_is_scrubbed_of_the_request_secrets() {
        let secrets = vec!["hunter2".to_owned(), "s3cr3t%20x".to_owned()];
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
        let page = b"<title>bad secret hunter2</title>";
        let err = parse(
            StatusCode::BAD_GATEWAY,
            &headers,
            page,
            &secrets,
            Reading::default(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("[redacted]"), "{err}");

        let body =
            br#"{"error":"invalid_client","error_description":"secret s3cr3t%20x is wrong"}"#;
        let err = parse(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            body,
            &secrets,
            Reading::default(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn b8_a_2xx_body_that_is_not_json_is_described_but_never_quoted() {
        // A token response in another format (as GitHub sends without
        // `Accept: application/json`), or cut short: tokens in plain text.
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        for body in [
            "access_token=gho_t0k3n&token_type=bearer&refresh_token=ghr_r3fr3sh",
            r#"{"access_token":"gho_t0k3n","refresh_token":"ghr_r3fr3sh""#,
            "<title>gho_t0k3n</title>",
        ] {
            let err = parse_token_response(StatusCode::OK, &headers, body.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse);
            let message = format!("{err} {err:?}");
            assert!(!message.contains("t0k3n"), "{message}");
            assert!(!message.contains("r3fr3sh"), "{message}");
            assert!(message.contains("text/plain"), "{message}");
        }
    }

    #[test]
    fn b8_a_secret_across_the_end_of_the_scanned_head_is_scrubbed_whole() {
        let secret = "hunter2-very-long-client-secret".to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
        // The title starts just before the end of what is scanned for it,
        // and the secret runs past that end.
        let mut page = " ".repeat(SCAN - 20);
        page.push_str("<title>");
        page.push_str(&secret);
        page.push_str("</title>");
        let err = parse(
            StatusCode::BAD_GATEWAY,
            &headers,
            page.as_bytes(),
            &[secret],
            Reading::default(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn b8_a_secret_html_escaped_in_a_title_is_scrubbed() {
        let secrets = vec!["s3cr3t&amp=eq<x>".to_owned()];
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
        let page = b"<title>bad s3cr3t&amp;amp=eq&lt;x&#62;</title>";
        let err = parse(
            StatusCode::FORBIDDEN,
            &headers,
            page,
            &secrets,
            Reading::default(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(err.to_string().contains("\"bad [redacted]\""), "{err}");
    }

    #[test]
    fn html_character_references_are_decoded_and_odd_ones_left_alone() {
        for (html, text) in [
            ("a &amp; b", "a & b"),
            ("&lt;&gt;&quot;&apos;&#38;&#x26;&#X26;", "<>\"'&&&"),
            (
                "&unknown; & &; &#; &#xZZ; &#1114112; &#x110000;",
                "&unknown; & &; &#; &#xZZ; &#1114112; &#x110000;",
            ),
            ("&amp", "&amp"),
            ("&#x10FFFF;", "\u{10FFFF}"),
            ("é&amp;é", "é&é"),
        ] {
            assert_eq!(decode_entities(html), text, "{html}");
        }
    }

    #[test]
    fn redirects_are_permanent_status_errors() {
        let err = parse_token_response(StatusCode::FOUND, &HeaderMap::new(), b"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Status);
        assert!(err.is_permanent());
        assert!(
            err.to_string().contains("redirects are not followed"),
            "{err}"
        );
    }

    #[test]
    fn quoted_text_is_printable_and_short() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let body = format!("\u{1b}[31m{}\nsecond line", "x".repeat(500));
        let err = parse_token_response(StatusCode::SERVICE_UNAVAILABLE, &headers, body.as_bytes())
            .unwrap_err();
        let message = err.to_string();
        assert!(!message.contains('\u{1b}'), "{message}");
        assert!(!message.contains("second line"), "{message}");
        assert!(message.len() < 140, "{} {message}", message.len());
    }
}
