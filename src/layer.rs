//! [`AuthLayer`] and [`AuthService`]: attach a fresh token to every request,
//! and retry once when the server rejects it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_bearer::{source, AuthLayer, Token, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let cache = TokenCache::new(source::from_fn(|_previous| async {
//!     Ok(Token::new("t0k3n").with_expires_in(Duration::from_secs(3600)))
//! }));
//!
//! // Any `Service<http::Request<B>>`: a hyper-util client, a tonic channel…
//! // Here, one that echoes the header it got.
//! let api = tower::service_fn(|req: Request<Full<Bytes>>| async move {
//!     let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
//!     Ok::<_, std::convert::Infallible>(Response::new(auth))
//! });
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(AuthLayer::new(cache))
//!     .service(api);
//!
//! let response = client.ready().await?.call(Request::new(Full::default())).await?;
//! assert_eq!(response.body(), "Bearer t0k3n");
//! # Ok(())
//! # }
//! ```
//!
//! # Differences from tower-http's `AddAuthorization`
//!
//! `AddAuthorization` inserts one fixed header value. `AuthLayer` takes the
//! value from a [`TokenCache`], which refreshes it before it expires, and
//! reacts to 401 / gRPC UNAUTHENTICATED responses. Like `AddAuthorization`
//! with `as_sensitive(true)`, the value is marked sensitive. Unlike it, a
//! request that already carries an `Authorization` header is left alone
//! (B7).
//!
//! # Composing with `tower::retry` and `tower::timeout`
//!
//! Put `AuthLayer` *inside* (below) a retry layer and a timeout:
//! `Retry → Timeout → AuthLayer → client`. Each retry of the outer layer then
//! gets the current token, the timeout bounds the wait for a token and the
//! 401 retry, and the outer policy must not retry 401 itself, or attempts
//! double up.
//!
//! # Readiness
//!
//! `poll_ready` is the inner service's (B10). With a fresh token, `call`
//! calls the inner service at once. When it has to wait for a token, it
//! takes a clone of the inner service into the response future and polls
//! *that* clone ready after the token arrived, so a slow token endpoint holds
//! no capacity of the inner service (a `Buffer` slot, a concurrency permit).
//! The retry also polls its service ready before sending.
//!
//! # A rejection while the body is still being sent
//!
//! A server may answer 401 before it has read the request body to its end
//! (many do, as soon as they have read the headers). The client below may
//! then still hold the body: a streamed body wrapped in a
//! [`ReplayBody`](crate::body::ReplayBody) cannot be replayed while the
//! first attempt's copy is live. The rejection is then held until the
//! client lets go of it, for at most the [release
//! wait](AuthLayer::release_wait) (1 s by default), and retried if it did,
//! returned as it is if not. What lets go, with hyper-util's client and a
//! hyper server (both checked in `tests/replay.rs`):
//!
//! * **HTTP/2**: the server ends the stream with its response and resets
//!   the request half it did not read; the client drops the body on that
//!   reset, usually before the response reaches this layer. Retried.
//! * **HTTP/1.1**: the server closes the connection (or reads the rest of
//!   the body) after its response; the client drops the body when the
//!   connection ends, which races with the response reaching this layer.
//!   The release wait absorbs the race: retried.
//!
//! A client that keeps the body longer than the release wait (a server
//! that neither resets nor closes, a body that is still being produced)
//! gets the rejection returned after the wait; its token is invalidated
//! all the same, so the next request carries a new one.
//!
//! # The rejected response
//!
//! A rejection that is retried is not dropped unread: its body (the inner
//! service's response body, hence the `http_body::Body` bound) is read to
//! its end in a background task, at most 64 KiB for at most 1 s, while the
//! retry goes out. Dropping it would close an HTTP/1.1 connection, and
//! reset an HTTP/2 stream; h2 counts frames that arrive for streams it has
//! reset and forgotten as its own errors and closes the connection after
//! 1024 of them, so a burst of rejections could fail every request on it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::header::{AUTHORIZATION, Entry};
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{DEFAULT_RELEASE_WAIT, TryCloneBody};
use crate::cache::read::Local;
use crate::future::Slot;
use crate::future::{self, ResponseFuture, TokenOrigin};
use crate::reject::{Classify, OnRejection, RetryOnce, Standard};
use crate::{BoxError, Error, TokenCache, TokenParams};

/// Applies [`AuthService`] to a service: a layer over one [`TokenCache`].
///
/// Cheap to clone. Several layers may share one cache (one token for all of
/// them), and one process may hold several layers over different caches
/// (one per API).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_bearer::{reject::Return, source::StaticToken, AuthLayer, TokenCache};
///
/// let cache = TokenCache::new(StaticToken::new("t0k3n"));
/// // Two layers over one cache share its token; this one returns rejections
/// // to the caller instead of retrying them.
/// let retrying = AuthLayer::new(cache.clone());
/// let returning = AuthLayer::new(cache).on_rejection(Return);
///
/// # let client = tower::service_fn(|_: http::Request<String>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// # });
/// // `retry → timeout → AuthLayer → client`
/// let api = ServiceBuilder::new()
///     .timeout(Duration::from_secs(10))
///     .layer(retrying)
///     .service(client);
/// # drop((api, returning));
/// ```
#[derive(Clone)]
pub struct AuthLayer<C = Standard, R = RetryOnce> {
    cache: TokenCache,
    classify: C,
    on_rejection: R,
    release_wait: Duration,
    /// Whether responses carry a [`TokenOrigin`].
    report_origin: bool,
}

impl AuthLayer {
    /// A layer that attaches tokens from `cache`, with the [`Standard`]
    /// rejection rules and [`RetryOnce`].
    pub fn new(cache: TokenCache) -> Self {
        AuthLayer {
            cache,
            classify: Standard::new(),
            on_rejection: RetryOnce,
            release_wait: DEFAULT_RELEASE_WAIT,
            report_origin: false,
        }
    }
}

impl<C, R> AuthLayer<C, R> {
    /// Replaces the rules that decide whether a response rejected its token.
    pub fn classify<C2: Classify>(self, classify: C2) -> AuthLayer<C2, R> {
        AuthLayer {
            cache: self.cache,
            classify,
            on_rejection: self.on_rejection,
            release_wait: self.release_wait,
            report_origin: self.report_origin,
        }
    }

    /// What to do after a rejection: [`RetryOnce`] (the default) or
    /// [`Return`](crate::reject::Return).
    pub fn on_rejection<R2: OnRejection>(self, on_rejection: R2) -> AuthLayer<C, R2> {
        AuthLayer {
            cache: self.cache,
            classify: self.classify,
            on_rejection,
            release_wait: self.release_wait,
            report_origin: self.report_origin,
        }
    }

    /// How long a rejection is held at most while the client still holds
    /// the request body, before the retry is given up (default
    /// [`DEFAULT_RELEASE_WAIT`], 1 s). See [the rejected
    /// response](self#the-rejected-response) and [streamed
    /// bodies](self#a-rejection-while-the-body-is-still-being-sent).
    /// `Duration::ZERO` never holds a rejection.
    pub fn release_wait(mut self, wait: Duration) -> Self {
        self.release_wait = wait;
        self
    }

    /// Puts a [`TokenOrigin`] in the extensions of every response: where
    /// its request's token came from (the cache, a refresh the request
    /// waited for, a stale token while a refresh runs, the retry after a
    /// rejection). Off by default: an extension costs an allocation per
    /// request (a response to a retried request carries
    /// [`TokenOrigin::Retried`] either way).
    ///
    /// ```
    /// use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
    ///
    /// let layer = AuthLayer::new(TokenCache::new(StaticToken::new("k"))).report_token_origin();
    /// # drop(layer);
    /// ```
    pub fn report_token_origin(mut self) -> Self {
        self.report_origin = true;
        self
    }

    /// The cache this layer takes its tokens from.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for AuthLayer<C, R> {
    type Service = AuthService<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.clone(),
            seen: Seen::default(),
        }
    }
}

impl<C, R: fmt::Debug> fmt::Debug for AuthLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("cache", &self.cache)
            .field("on_rejection", &self.on_rejection)
            .finish_non_exhaustive()
    }
}

/// Attaches a fresh token from a [`TokenCache`] to every request and retries
/// once on rejection. See the [module documentation](self).
///
/// `Clone` when the inner service is; `Send + Sync + 'static` when its parts
/// are (B10). Fails with [`BoxError`]: token failures are a
/// [`tower_bearer::Error`](crate::Error) inside it, inner failures are the
/// inner service's error.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use tower::ServiceExt;
/// use tower_bearer::{source::StaticToken, AuthService, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::BoxError> {
/// // An API that wants the token.
/// let api = tower::service_fn(|req: Request<Full<Bytes>>| async move {
///     let ok = req.headers()["authorization"] == "Bearer t0k3n";
///     let status = if ok { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
///     let response = Response::builder().status(status).body(Full::<Bytes>::default());
///     Ok::<_, http::Error>(response?)
/// });
///
/// let service = AuthService::new(api, TokenCache::new(StaticToken::new("t0k3n")));
/// let response = service.oneshot(Request::new(Full::default())).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AuthService<S, C = Standard, R = RetryOnce> {
    inner: S,
    auth: AuthLayer<C, R>,
    seen: Seen,
}

/// The token an [`AuthService`] read last (this thread's copy of it), so
/// that its next call finds it without looking further while the cache's
/// token is the same. A clone starts empty: clones may run on other
/// threads, whose own copies they should use.
#[derive(Default)]
struct Seen(Option<Arc<Local>>);

impl Clone for Seen {
    fn clone(&self) -> Self {
        Seen(None)
    }
}

impl<S> AuthService<S> {
    /// Wraps `inner`, attaching tokens from `cache`.
    pub fn new(inner: S, cache: TokenCache) -> Self {
        AuthLayer::new(cache).layer(inner)
    }

    /// An [`AuthLayer`] over `cache`, the same as [`AuthLayer::new`].
    pub fn layer(cache: TokenCache) -> AuthLayer {
        AuthLayer::new(cache)
    }
}

impl<S, C, R> AuthService<S, C, R> {
    define_inner_service_accessors!();

    /// The cache this service takes its tokens from.
    pub fn cache(&self) -> &TokenCache {
        &self.auth.cache
    }
}

impl<S: fmt::Debug, C, R: fmt::Debug> fmt::Debug for AuthService<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .field("cache", &self.auth.cache)
            .field("on_rejection", &self.auth.on_rejection)
            .finish_non_exhaustive()
    }
}

impl<S, C, R, B, ResB> Service<Request<B>> for AuthService<S, C, R>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    R: OnRejection,
    B: TryCloneBody + Send + 'static,
    ResB: http_body::Body + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C, R>;

    #[inline]
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.auth.call(&mut self.inner, &mut self.seen.0, req)
    }
}

impl<C: Classify, R: OnRejection> AuthLayer<C, R> {
    /// What [`AuthService::call`] does, with `inner` polled ready by the
    /// caller (also used by [`Routed`](crate::route::Routed), which holds
    /// one inner service for several layers). `seen` is what the caller
    /// read last.
    #[inline]
    pub(crate) fn call<S, B, ResB>(
        &self,
        inner: &mut S,
        seen: &mut Option<Arc<Local>>,
        req: Request<B>,
    ) -> ResponseFuture<S, B, C, R>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: TryCloneBody + Send + 'static,
        ResB: http_body::Body + Send + 'static,
    {
        if self.report_origin {
            return self.call_reporting(inner, seen, req);
        }
        self.call_plain(inner, seen, req)
    }

    /// [`call`](Self::call), with the request's [`TokenOrigin`] put in its
    /// response: as the cache stood when the call started.
    #[cold]
    #[inline(never)]
    fn call_reporting<S, B, ResB>(
        &self,
        inner: &mut S,
        seen: &mut Option<Arc<Local>>,
        req: Request<B>,
    ) -> ResponseFuture<S, B, C, R>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: TryCloneBody + Send + 'static,
        ResB: http_body::Body + Send + 'static,
    {
        let cache = match req.extensions().get::<TokenParams>() {
            Some(params) => self.cache.variant(params),
            None => Some(self.cache.clone()),
        };
        let origin = match cache.and_then(|cache| cache.freshness_now()) {
            Some(crate::cache::Freshness::Fresh) => TokenOrigin::Cached,
            Some(crate::cache::Freshness::Stale) => TokenOrigin::Stale,
            _ => TokenOrigin::Waited,
        };
        self.call_plain(inner, seen, req).reporting(origin)
    }

    /// [`call`](Self::call) without reporting the origin: the per-request
    /// path.
    #[inline(always)]
    fn call_plain<S, B, ResB>(
        &self,
        inner: &mut S,
        seen: &mut Option<Arc<Local>>,
        mut req: Request<B>,
    ) -> ResponseFuture<S, B, C, R>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: TryCloneBody + Send + 'static,
        ResB: http_body::Body + Send + 'static,
    {
        // B1: checked against the clock now; no lock, no allocation. A
        // request that asks for a token of its own kind takes the slow path
        // (no extensions at all is one pointer test).
        let token = match req.extensions().get::<TokenParams>() {
            None => self.cache.read(seen),
            Some(_) => None,
        };
        let Some(token) = token else {
            return self.call_slow(inner, req);
        };
        // The header is attached here, not in a function the request is
        // moved into: one move of the request fewer on this path.
        if attach(&token, &mut req) {
            return own_credentials(inner, req);
        }
        self.send_appended(token, inner, req)
    }

    /// Sends `req`, to which `token`'s header was appended.
    #[inline]
    fn send_appended<S, B, ResB>(
        &self,
        token: Arc<Local>,
        inner: &mut S,
        req: Request<B>,
    ) -> ResponseFuture<S, B, C, R>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: TryCloneBody + Send + 'static,
        ResB: http_body::Body + Send + 'static,
    {
        // DPoP: a proof per request, and a response future of its own (one
        // allocation, beside a signature), so that bearer tokens' futures
        // stay small.
        if token.proofs.is_some() {
            return self.send_proved(token, inner, req);
        }
        // The copy for the one retry, taken before the body is sent.
        let replay = R::Copy::capture(inner, &req, self.release_wait);
        // `inner` was polled ready; use it, and leave it in place.
        let fut = inner.call(req);
        ResponseFuture::sent(
            fut,
            future::Sent {
                token,
                classify: self.classify.clone(),
                replay,
                origin: None,
            },
        )
    }

    /// A request with a DPoP-bound token: adds the proof, sends, and keeps
    /// the `DPoP-Nonce` its response gives.
    #[cold]
    #[inline(never)]
    fn send_proved<S, B, ResB>(
        &self,
        token: Arc<Local>,
        inner: &mut S,
        mut req: Request<B>,
    ) -> ResponseFuture<S, B, C, R>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: TryCloneBody + Send + 'static,
        ResB: http_body::Body + Send + 'static,
    {
        let proved = token.proofs.as_ref().map(|proofs| proofs.prove(&mut req));
        let uri = match proved.transpose() {
            Ok(uri) => uri,
            Err(error) => return ResponseFuture::acquiring(std::future::ready(Err(error.into()))),
        };
        let replay = R::Copy::capture(inner, &req, self.release_wait).into_replay();
        let fut = inner.call(req);
        ResponseFuture::acquiring(future::proved::<S, B, C, ResB>(
            fut,
            token,
            self.classify.clone(),
            replay,
            uri,
        ))
    }

    /// A request with [`TokenParams`], or no usable token in the cache.
    #[cold]
    #[inline(never)]
    fn call_slow<S, B, ResB>(
        &self,
        inner: &mut S,
        mut req: Request<B>,
    ) -> ResponseFuture<S, B, C, R>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: TryCloneBody + Send + 'static,
        ResB: http_body::Body + Send + 'static,
    {
        if req.extensions().get::<TokenParams>().is_none() {
            return self.call_without_token(&self.cache, inner, req);
        }
        // The token from the cache's variant for the parameters (a lock and
        // a hash of the parameters, per request).
        let variant = req
            .extensions()
            .get::<TokenParams>()
            .and_then(|params| self.cache.variant(params));
        match variant {
            Some(variant) => match variant.read(&mut None) {
                Some(token) if attach(&token, &mut req) => own_credentials(inner, req),
                Some(token) => self.send_appended(token, inner, req),
                None => self.call_without_token(&variant, inner, req),
            },
            None if req.headers().contains_key(AUTHORIZATION) => {
                ResponseFuture::passthrough(inner.call(req))
            }
            None => ResponseFuture::acquiring(std::future::ready(Err(Error::unsendable(
                "the request asks for token parameters the token source cannot ask for",
            )
            .into()))),
        }
    }

    /// No usable token: pass a request with its own `Authorization` through,
    /// or wait for a token in the response future.
    #[cold]
    #[inline(never)]
    fn call_without_token<S, B, ResB>(
        &self,
        cache: &TokenCache,
        inner: &mut S,
        req: Request<B>,
    ) -> ResponseFuture<S, B, C, R>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: TryCloneBody + Send + 'static,
        ResB: http_body::Body + Send + 'static,
    {
        if req.headers().contains_key(AUTHORIZATION) {
            return ResponseFuture::passthrough(inner.call(req));
        }
        // Wait for the token with a clone of the service, polled ready once
        // the token is there.
        let clone = inner.clone();
        // NOTE: `inner` was polled ready and holds what that reserved (a
        // `Buffer` slot, a concurrency permit) until it is called or
        // dropped. It is not called now, so drop it and keep a fresh clone:
        // otherwise callers waiting for a token while holding their
        // reservations can starve each other's clones (a tonic `Channel`
        // with a small buffer deadlocks).
        drop(std::mem::replace(inner, clone.clone()));
        ResponseFuture::acquiring(future::acquire_then_call::<_, _, _, R, _>(
            clone,
            req,
            cache.clone(),
            self.classify.clone(),
            self.release_wait,
        ))
    }
}

/// Appends `token`'s header to `req`; `true` when the request carried its
/// own `Authorization` (B7: then it is not ours, and the caller takes our
/// value out again). One map operation on the common path: `append` says
/// whether the name was already there.
#[inline(always)]
fn attach<B>(token: &Local, req: &mut Request<B>) -> bool {
    req.headers_mut()
        .append(AUTHORIZATION, token.header.clone())
}

/// A request that carried its own `Authorization` (B7): sent as it came.
#[cold]
#[inline(never)]
fn own_credentials<S, B, C, R>(inner: &mut S, mut req: Request<B>) -> ResponseFuture<S, B, C, R>
where
    S: Service<Request<B>>,
    R: OnRejection,
{
    remove_appended_authorization(req.headers_mut());
    ResponseFuture::passthrough(inner.call(req))
}

/// Takes out the `Authorization` value `call` appended (the last one) from a
/// request that already had its own, leaving the request's values as they
/// were (they move after the other fields, whose relative order is kept).
#[cold]
fn remove_appended_authorization(headers: &mut http::HeaderMap) {
    if let Entry::Occupied(entry) = headers.entry(AUTHORIZATION) {
        let (name, values) = entry.remove_entry_mult();
        let mut values: Vec<HeaderValue> = values.collect();
        values.pop();
        for value in values {
            headers.append(&name, value);
        }
    }
}
