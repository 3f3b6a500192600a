//! The copy of a request kept for the one retry after a rejection (B6),
//! and where a response future keeps it: inline with
//! [`RetryOnce`](crate::reject::RetryOnce), nowhere with
//! [`Return`](crate::reject::Return).

use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::body::TryCloneBody;

/// Where a response future keeps the copy of a request for the retry:
/// [`Replay`] with [`RetryOnce`], [`NoCopy`] with
/// [`Return`](crate::reject::Return). Not for use outside this crate.
#[doc(hidden)]
pub trait Slot<S, B>: Sized {
    /// Takes the copy, before the request is sent.
    #[doc(hidden)]
    fn capture(inner: &S, req: &Request<B>, release_wait: Duration) -> Self
    where
        S: Clone,
        B: TryCloneBody;

    /// The copy, after a rejection.
    #[doc(hidden)]
    fn into_replay(self) -> Option<Replay<S, B>>;
}

/// No copy: [`Return`](crate::reject::Return) never retries. Not for use
/// outside this crate.
#[doc(hidden)]
#[derive(Debug)]
pub struct NoCopy;

impl<S, B> Slot<S, B> for NoCopy {
    #[inline]
    fn capture(_: &S, _: &Request<B>, _: Duration) -> Self {
        NoCopy
    }

    fn into_replay(self) -> Option<Replay<S, B>> {
        None
    }
}

impl<S, B> Slot<S, B> for Option<Replay<S, B>> {
    #[inline]
    fn capture(inner: &S, req: &Request<B>, release_wait: Duration) -> Self
    where
        S: Clone,
        B: TryCloneBody,
    {
        let body = req.body().try_clone_body()?;
        Some(Replay {
            service: inner.clone(),
            head: Head::of(req),
            body,
            release_wait,
        })
    }

    fn into_replay(self) -> Option<Replay<S, B>> {
        self
    }
}

/// The copy of a request kept for the one retry after a rejection, with a
/// clone of the inner service to send it with. Not for use outside this
/// crate.
#[doc(hidden)]
pub struct Replay<S, B> {
    pub(crate) service: S,
    pub(crate) head: Head,
    pub(crate) body: B,
    /// How long to hold a rejection while the first attempt still holds
    /// the body.
    pub(crate) release_wait: Duration,
}

/// A request without its body: method, URI, version, extensions and
/// headers (`Request<B>` itself is `Clone` only for `B: Clone`).
pub(crate) struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    extensions: Extensions,
    headers: HeaderBytes,
}

impl Head {
    #[inline]
    pub(crate) fn of<B>(req: &Request<B>) -> Head {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            extensions: req.extensions().clone(),
            headers: HeaderBytes::of(req.headers()),
        }
    }

    /// The [`TokenParams`](crate::TokenParams) the request carried.
    pub(crate) fn params(&self) -> Option<&crate::TokenParams> {
        self.extensions.get::<crate::TokenParams>()
    }

    /// The request to send again, with `authorization` in place of the
    /// rejected token; `None` if a header cannot be rebuilt (never, for
    /// headers that came from a `HeaderMap`).
    pub(crate) fn into_request<B>(self, body: B, authorization: HeaderValue) -> Option<Request<B>> {
        let mut headers = self.headers.into_map()?;
        headers.insert(AUTHORIZATION, authorization);
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.extensions_mut() = self.extensions;
        *request.headers_mut() = headers;
        Some(request)
    }
}

/// The bytes of a request's headers, for the retry. A retry is rare; the
/// copy is taken for every replayable request. Cloning the `HeaderMap`
/// would allocate its two tables, and cloning a header value built from a
/// string moves its bytes to shared storage, an allocation per value;
/// copying the bytes into one buffer of the exact size allocates once, and
/// not at all for a request without headers.
///
/// Per value: the name's length (2 bytes) and the value's (4 bytes), little
/// endian, a sensitive flag (1 byte), the name, the value. The
/// `Authorization` the request carries is ours and is not copied: the retry
/// carries the new token.
struct HeaderBytes(Vec<u8>);

/// Bytes per header value besides the name and the value.
const PER_VALUE: usize = 7;

impl HeaderBytes {
    #[inline]
    fn of(headers: &HeaderMap) -> Self {
        let len: usize = headers
            .iter()
            .filter(|(name, _)| *name != AUTHORIZATION)
            .map(|(name, value)| PER_VALUE + name.as_str().len() + value.len())
            .sum();
        if len == 0 {
            return HeaderBytes(Vec::new());
        }
        let mut bytes = Vec::with_capacity(len);
        for (name, value) in headers {
            if name == AUTHORIZATION {
                continue;
            }
            // Names are far shorter than 64 KiB, values than 4 GiB (hyper
            // refuses a head of more than a few hundred KiB); a record
            // that says otherwise is cut, fails to parse, and the retry is
            // not sent.
            let name = name.as_str().as_bytes();
            let name = &name[..name.len().min(usize::from(u16::MAX))];
            let sensitive = value.is_sensitive();
            let value = value.as_bytes();
            let value = &value[..value.len().min(u32::MAX as usize)];
            bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
            bytes.push(u8::from(sensitive));
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(value);
        }
        HeaderBytes(bytes)
    }

    fn into_map(self) -> Option<HeaderMap> {
        let bytes = self.0;
        let mut map = HeaderMap::new();
        let mut at = 0;
        while at < bytes.len() {
            let meta = bytes.get(at..at + PER_VALUE)?;
            let name_len = usize::from(u16::from_le_bytes([meta[0], meta[1]]));
            let value_len =
                usize::try_from(u32::from_le_bytes([meta[2], meta[3], meta[4], meta[5]])).ok()?;
            let sensitive = meta[6] == 1;
            let name_at = at + PER_VALUE;
            let value_at = name_at + name_len;
            let end = value_at + value_len;
            let name = HeaderName::from_bytes(bytes.get(name_at..value_at)?).ok()?;
            let mut value = HeaderValue::from_bytes(bytes.get(value_at..end)?).ok()?;
            value.set_sensitive(sensitive);
            map.append(name, value);
            at = end;
        }
        Some(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy<B>(req: &Request<B>, body: B) -> Request<B> {
        Head::of(req)
            .into_request(body, HeaderValue::from_static("Bearer new"))
            .unwrap()
    }

    #[test]
    fn the_retry_copy_keeps_every_header_but_ours_with_its_sensitivity() {
        let mut secret = HeaderValue::from_static("s3cr3t");
        secret.set_sensitive(true);
        let long = "v".repeat(70_000);
        let req = Request::post("https://api.example/v1?x=1")
            .header("accept", "application/json")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("x-api-key", secret)
            .header("x-long", long.as_str())
            .header(AUTHORIZATION, "Bearer old")
            .extension(7u32)
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        let copy = copy(&req, ());
        assert_eq!(copy.method(), Method::POST);
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.version(), Version::HTTP_2);
        assert_eq!(copy.extensions().get::<u32>(), Some(&7));
        assert_eq!(copy.headers()["accept"], "application/json");
        let multi: Vec<_> = copy.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert!(copy.headers()["x-api-key"].is_sensitive());
        assert!(!copy.headers()["accept"].is_sensitive());
        assert_eq!(copy.headers()["x-long"], long.as_str());
        let auth: Vec<_> = copy.headers().get_all(AUTHORIZATION).iter().collect();
        assert_eq!(auth, ["Bearer new"]);
        assert_eq!(copy.headers().len(), 6);
    }

    #[test]
    fn a_request_with_no_headers_but_ours_copies_without_allocating() {
        let req = Request::get("/")
            .header(AUTHORIZATION, "Bearer old")
            .body(())
            .unwrap();
        assert_eq!(HeaderBytes::of(req.headers()).0.capacity(), 0);
        let req = Request::get("/").body(()).unwrap();
        assert_eq!(HeaderBytes::of(req.headers()).0.capacity(), 0);
        assert_eq!(copy(&req, ()).headers().len(), 1);
    }
}
