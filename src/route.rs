//! Tokens by origin: one layer in front of a shared client that picks the
//! [`TokenCache`](crate::TokenCache) by the request's scheme, host and port,
//! and sends no token at all to an origin it has no cache for (B9).
//!
//! A token belongs to the API that issued it for. A client shared by several
//! APIs (one hyper-util client, one connection pool) must not send API A's
//! token to API B, nor to a URL that came from a response or a user. A
//! [`RouteLayer`] maps each [`Origin`] to an [`AuthLayer`]; a request to any
//! other origin goes to the client untouched: no token is attached, and a
//! rejection of it is not the layer's business.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_bearer::route::{Origin, RouteLayer};
//! use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let billing = TokenCache::new(StaticToken::new("billing-token"));
//! let maps = TokenCache::new(StaticToken::new("maps-token"));
//!
//! let routes = RouteLayer::new()
//!     .route(Origin::parse("https://billing.example")?, AuthLayer::new(billing))
//!     .route(Origin::parse("https://maps.example:8443")?, AuthLayer::new(maps));
//!
//! # let client = tower::service_fn(|req: Request<Full<Bytes>>| async move {
//! #     let auth = req.headers().get("authorization").map_or("(none)", |v| v.to_str().unwrap());
//! #     Ok::<_, std::convert::Infallible>(Response::new(auth.to_owned()))
//! # });
//! // `client` is shared by every API, e.g. one hyper-util client.
//! let api = ServiceBuilder::new().layer(routes).service(client);
//!
//! let get = |uri: &str| Request::get(uri).body(Full::default()).unwrap();
//! let to_billing = api.clone().oneshot(get("https://BILLING.example:443/v1/invoices")).await?;
//! assert_eq!(to_billing.body(), "Bearer billing-token");
//! let elsewhere = api.oneshot(get("https://billing.example.evil/")).await?;
//! assert_eq!(elsewhere.body(), "(none)");
//! # Ok(())
//! # }
//! ```
//!
//! # Matching
//!
//! An origin is a scheme, a host and a port, compared as RFC 6454 does:
//! scheme and host without regard to case, the port with the scheme's
//! default filled in (80 for `http`, 443 for `https`). Nothing else is
//! normalised: `api.example.` (with the final dot) is another origin than
//! `api.example`, and so is `127.0.0.1` than `localhost`. A mismatch only
//! means no token is sent.
//!
//! A request whose URI has no scheme or no host matches no origin: it gets no
//! token. That includes requests above a tonic `Channel`, whose URIs are
//! path-only (`/pkg.Service/Method`) unless the generated client was given
//! an origin (`with_origin`); the channel adds its own origin below.
//! For tonic, use one `tower_bearer::tonic::AuthChannel` (feature `tonic`)
//! per channel instead.
//!
//! A request that carries a `Host` header matches only when that header
//! names the same host and port as its URI
//! ([`Origin::matches_request`]). A server or an ingress that routes by
//! virtual host delivers a request by its `Host`, and hyper's HTTP/1.1
//! client sends the header as given: a request to the API's address with
//! `Host: other-tenant.example` would take the token to another
//! application. Such a request is sent as it is, without a token.
//!
//! # One API, one origin
//!
//! [`RouteLayer::only`] restricts a single `AuthLayer` to the origins its
//! token belongs to: `RouteLayer::only(origin, AuthLayer::new(cache))`.
//!
//! # Differences from one `AuthLayer` per client
//!
//! Two APIs can also each get their own stack over clones of one client:
//! `AuthLayer::new(a).layer(client.clone())` and
//! `AuthLayer::new(b).layer(client)`. Each stack then sends its token to
//! whatever URI it is given. A `RouteLayer` decides by the URI, so a request
//! sent through the wrong stack, or to a URL that came from elsewhere, does
//! not leak the token.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::TryCloneBody;
use crate::future::ResponseFuture;
use crate::reject::{Classify, OnRejection, RetryOnce, Standard};
use crate::{AuthLayer, BoxError};

/// A scheme, host and port: where a token may be sent.
///
/// Parsed from `scheme://host[:port]` (a trailing `/` is allowed; a path,
/// query or user name is not). Scheme and host are kept in lower case, and
/// the port is always explicit: `https://API.example` and
/// `https://api.example:443` are the same origin.
///
/// # Example
///
/// ```
/// use tower_bearer::route::Origin;
///
/// let api = Origin::parse("https://API.example")?;
/// assert_eq!(api.to_string(), "https://api.example:443");
/// assert!(api.matches(&"https://api.example:443/v1/things?page=2".parse()?));
/// assert!(!api.matches(&"http://api.example/v1/things".parse()?));
/// assert!(!api.matches(&"https://api.example.evil/".parse()?));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: Box<str>,
    host: Box<str>,
    port: u16,
}

/// Why a string is not an [`Origin`].
///
/// # Example
///
/// ```
/// use tower_bearer::route::Origin;
///
/// let error = Origin::parse("https://api.example/v1").unwrap_err();
/// assert!(error.to_string().contains("path"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOrigin {
    reason: &'static str,
}

impl Origin {
    /// Parses `scheme://host[:port]`.
    ///
    /// # Errors
    ///
    /// [`InvalidOrigin`] when `origin` is not a URI with a scheme and a host,
    /// has a user name, a path other than `/`, or a query; or when it has no
    /// port and its scheme is neither `http` nor `https`.
    pub fn parse(origin: &str) -> Result<Self, InvalidOrigin> {
        let invalid = |reason| InvalidOrigin { reason };
        let uri: Uri = origin.parse().map_err(|_| invalid("not a URI"))?;
        let scheme = uri.scheme_str().ok_or(invalid("no scheme"))?;
        let authority = uri.authority().ok_or(invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("a user name is not part of an origin"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("a path or query is not part of an origin"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = authority
            .port_u16()
            .or_else(|| default_port(scheme))
            .ok_or(invalid("no port, and the scheme has no default port"))?;
        Ok(Origin {
            scheme: scheme.to_ascii_lowercase().into(),
            host: host.to_ascii_lowercase().into(),
            port,
        })
    }

    /// The origin a request URI is sent to; `None` for a URI without scheme
    /// or host (such as a path-only URI), or without a port whose scheme
    /// has no default.
    pub fn of(uri: &Uri) -> Option<Self> {
        let scheme = uri.scheme_str()?;
        let host = uri.host().filter(|host| !host.is_empty())?;
        let port = uri.port_u16().or_else(|| default_port(scheme))?;
        Some(Origin {
            scheme: scheme.to_ascii_lowercase().into(),
            host: host.to_ascii_lowercase().into(),
            port,
        })
    }

    /// Whether a request to `uri` goes to this origin. Does not allocate.
    pub fn matches(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(&self.scheme)
            && host.eq_ignore_ascii_case(&self.host)
            && uri.port_u16().or_else(|| default_port(scheme)) == Some(self.port)
    }

    /// Whether `req` goes to this origin: its URI matches, and so does its
    /// `Host` header when it has one.
    ///
    /// A request's `Host` names the application a server or an ingress
    /// that routes by virtual host delivers it to, and hyper's HTTP/1.1
    /// client sends it as given: a request to this origin's address with
    /// `Host: other-tenant.example` reaches another application. It does
    /// not match, so it gets no token (B9).
    ///
    /// ```
    /// use tower_bearer::route::Origin;
    ///
    /// let api = Origin::parse("https://api.example")?;
    /// let plain = http::Request::get("https://api.example/v1").body(())?;
    /// assert!(api.matches_request(&plain));
    /// let same = http::Request::get("https://api.example/v1").header("host", "API.example:443").body(())?;
    /// assert!(api.matches_request(&same));
    /// let other = http::Request::get("https://api.example/v1").header("host", "other.example").body(())?;
    /// assert!(!api.matches_request(&other));
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn matches_request<B>(&self, req: &Request<B>) -> bool {
        if !self.matches(req.uri()) {
            return false;
        }
        let mut hosts = req.headers().get_all(http::header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) => true,
            (Some(host), None) => self.is_host_header(host.as_bytes()),
            // Two `Host` headers: whichever a server reads, refuse.
            (Some(_), Some(_)) => false,
        }
    }

    /// Whether a `Host` header value (`host[:port]`) names this origin.
    fn is_host_header(&self, value: &[u8]) -> bool {
        let Ok(value) = std::str::from_utf8(value) else {
            return false;
        };
        let Ok(authority) = value.parse::<http::uri::Authority>() else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        authority.host().eq_ignore_ascii_case(&self.host)
            && authority.port_u16().or_else(|| default_port(&self.scheme)) == Some(self.port)
    }

    /// The scheme, in lower case.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host, in lower case (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default filled in.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

impl FromStr for Origin {
    type Err = InvalidOrigin;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Origin::parse(s)
    }
}

/// `scheme://host:port`, the port always written out.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid origin: {}", self.reason)
    }
}

impl std::error::Error for InvalidOrigin {}

// === RouteLayer ===

/// Applies [`Routed`]: each request gets the token of its origin's
/// [`AuthLayer`], or none. See the [module documentation](self).
///
/// Cheap to clone. All routes share one rejection rule type `C` (the
/// [`Standard`] one unless you set another on every `AuthLayer`).
///
/// # Example
///
/// ```
/// use tower_bearer::route::{Origin, RouteLayer};
/// use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
///
/// let billing = AuthLayer::new(TokenCache::new(StaticToken::new("billing-token")));
/// let routes = RouteLayer::new()
///     .route(Origin::parse("https://billing.example")?, billing.clone())
///     // One cache for two origins of the same API.
///     .route(Origin::parse("https://billing-eu.example")?, billing);
/// assert_eq!(routes.origins().count(), 2);
/// # Ok::<_, tower_bearer::route::InvalidOrigin>(())
/// ```
pub struct RouteLayer<C = Standard, R = RetryOnce> {
    routes: Arc<Vec<Route<C, R>>>,
}

struct Route<C, R> {
    origin: Origin,
    auth: AuthLayer<C, R>,
}

impl<C, R> RouteLayer<C, R> {
    /// A layer with no routes: it sends no token anywhere until routes are
    /// added.
    pub fn new() -> Self {
        RouteLayer {
            routes: Arc::new(Vec::new()),
        }
    }

    /// A layer that sends `auth`'s token to `origin` and to no other
    /// origin.
    pub fn only(origin: Origin, auth: AuthLayer<C, R>) -> Self
    where
        C: Clone,
        R: Clone,
    {
        Self::new().route(origin, auth)
    }

    /// Sends requests to `origin` through `auth`. Several origins may share
    /// one cache (pass clones of one `AuthLayer`); adding an origin again
    /// replaces its layer.
    pub fn route(mut self, origin: Origin, auth: AuthLayer<C, R>) -> Self
    where
        C: Clone,
        R: Clone,
    {
        let routes = Arc::make_mut(&mut self.routes);
        match routes.iter_mut().find(|route| route.origin == origin) {
            Some(route) => route.auth = auth,
            None => routes.push(Route { origin, auth }),
        }
        self
    }

    /// The origins that get a token.
    pub fn origins(&self) -> impl Iterator<Item = &Origin> {
        self.routes.iter().map(|route| &route.origin)
    }
}

impl<C, R> Default for RouteLayer<C, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C, R> Clone for RouteLayer<C, R> {
    fn clone(&self) -> Self {
        RouteLayer {
            routes: self.routes.clone(),
        }
    }
}

impl<C: Clone, R: Clone> Clone for Route<C, R> {
    fn clone(&self) -> Self {
        Route {
            origin: self.origin.clone(),
            auth: self.auth.clone(),
        }
    }
}

impl<C, R: fmt::Debug> fmt::Debug for RouteLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.routes.iter().map(|route| (&route.origin, &route.auth)))
            .finish()
    }
}

impl<S, C, R> Layer<S> for RouteLayer<C, R> {
    type Service = Routed<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Routed {
            inner,
            routes: self.routes.clone(),
        }
    }
}

// === Routed ===

/// Attaches the token of the request's origin, or none when no route
/// matches. See [`RouteLayer`].
///
/// `Clone` when the inner service is. Fails with [`BoxError`] like
/// [`AuthService`](crate::AuthService).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{Layer, ServiceExt};
/// use tower_bearer::route::{Origin, RouteLayer};
/// use tower_bearer::{source::StaticToken, AuthLayer, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::BoxError> {
/// let client = tower::service_fn(|req: Request<Full<Bytes>>| async move {
///     let sent = req.headers().contains_key("authorization");
///     Ok::<_, std::convert::Infallible>(Response::new(sent.to_string()))
/// });
/// let auth = AuthLayer::new(TokenCache::new(StaticToken::new("t0k3n")));
/// let routed = RouteLayer::only(Origin::parse("https://api.example")?, auth).layer(client);
///
/// let get = |uri: &str| Request::get(uri).body(Full::default()).unwrap();
/// let ours = routed.clone().oneshot(get("https://api.example/v1")).await?;
/// let theirs = routed.oneshot(get("https://elsewhere.example/")).await?;
/// assert_eq!((ours.body().as_str(), theirs.body().as_str()), ("true", "false"));
/// # Ok(())
/// # }
/// ```
pub struct Routed<S, C = Standard, R = RetryOnce> {
    inner: S,
    routes: Arc<Vec<Route<C, R>>>,
}

impl<S, C, R> Routed<S, C, R> {
    define_inner_service_accessors!();
}

impl<S: Clone, C, R> Clone for Routed<S, C, R> {
    fn clone(&self) -> Self {
        Routed {
            inner: self.inner.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for Routed<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routed")
            .field("inner", &self.inner)
            .field(
                "origins",
                &self
                    .routes
                    .iter()
                    .map(|route| &route.origin)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<S, C, R, B, ResB> Service<Request<B>> for Routed<S, C, R>
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
    type Future = RouteFuture<S, B, C, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(route) = self
            .routes
            .iter()
            .find(|route| route.origin.matches_request(&req))
        else {
            // B9: not an origin we hold a token for; no token, untouched.
            return RouteFuture {
                kind: Kind::Unrouted {
                    fut: self.inner.call(req),
                },
            };
        };
        // `self.inner` was polled ready by our `poll_ready`, which is what
        // the auth layer's call needs (B10).
        RouteFuture {
            kind: Kind::Routed {
                fut: route.auth.call(&mut self.inner, &mut None, req),
            },
        }
    }
}

pin_project! {
    /// Response future for [`Routed`].
    pub struct RouteFuture<S, B, C, R = RetryOnce>
    where
        S: Service<Request<B>>,
        R: OnRejection,
    {
        #[pin]
        kind: Kind<S, B, C, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B, C, R>
    where
        S: Service<Request<B>>,
        R: OnRejection,
    {
        // The request went through its origin's auth service.
        Routed { #[pin] fut: ResponseFuture<S, B, C, R> },
        // No route matched: the request went to the inner service as it was.
        Unrouted { #[pin] fut: S::Future },
    }
}

impl<S, B, C, R, ResB> Future for RouteFuture<S, B, C, R>
where
    R: OnRejection,
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    B: TryCloneBody + Send + 'static,
    ResB: http_body::Body + Send + 'static,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Routed { fut } => fut.poll(cx),
            KindProj::Unrouted { fut } => Poll::Ready(ready!(fut.poll(cx)).map_err(Into::into)),
        }
    }
}

impl<S, B, C, R> fmt::Debug for RouteFuture<S, B, C, R>
where
    S: Service<Request<B>>,
    R: OnRejection,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn origins_are_normalised_scheme_and_host_lower_case_port_explicit() {
        let origin = Origin::parse("HTTPS://API.Example.com").unwrap();
        assert_eq!(origin.to_string(), "https://api.example.com:443");
        assert_eq!(
            origin,
            Origin::parse("https://api.example.com:443/").unwrap()
        );
        assert_eq!(Origin::parse("http://127.0.0.1").unwrap().port(), 80);
        assert_eq!(Origin::parse("http://[::1]:8080").unwrap().host(), "[::1]");
        assert_eq!(
            Origin::of(&uri("https://api.example.com/v1?x=1")),
            Some(origin)
        );
    }

    #[test]
    fn b9_matches_only_the_same_scheme_host_and_port() {
        let origin = Origin::parse("https://api.example").unwrap();
        assert!(origin.matches(&uri("https://API.EXAMPLE/v1")));
        assert!(origin.matches(&uri("https://api.example:443/")));
        assert!(!origin.matches(&uri("http://api.example/")), "scheme");
        assert!(!origin.matches(&uri("https://api.example:8443/")), "port");
        assert!(!origin.matches(&uri("https://api.example.evil/")), "host");
        assert!(!origin.matches(&uri("https://evil.api.example/")), "host");
        assert!(!origin.matches(&uri("https://api.example./")), "final dot");
        assert!(!origin.matches(&uri("/v1/things")), "path only");
        assert!(
            !origin.matches(&uri("https://user@api.example.evil/")),
            "user info"
        );
    }

    #[test]
    fn invalid_origins_are_refused_with_a_reason() {
        for bad in [
            "",
            "api.example",
            "/path",
            "https://",
            "https://api.example/v1",
            "https://api.example?x=1",
            "https://user:pw@api.example",
            "grpc://api.example",
            "ht tp://x",
        ] {
            let error = Origin::parse(bad).expect_err(bad);
            assert!(error.to_string().starts_with("invalid origin: "), "{bad}");
        }
        assert!(Origin::parse("grpc://api.example:50051").is_ok());
        assert_eq!(Origin::of(&uri("grpc://api.example/")), None);
    }

    #[test]
    fn parsing_arbitrary_input_never_panics() {
        let pieces = [
            "https", "://", ":", "@", "[", "]", "::1", "/", "?", "#", "%", "é", "0", "65536", ".",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let _ = Origin::parse(&format!("{a}{b}{c}"));
                    let _ = Origin::parse(&format!("https://{a}{b}{c}"));
                }
            }
        }
    }

    #[test]
    fn a_route_added_again_replaces_the_earlier_one() {
        use crate::source::StaticToken;
        let a = crate::TokenCache::new(StaticToken::new("a"));
        let b = crate::TokenCache::new(StaticToken::new("b"));
        let origin = Origin::parse("https://api.example").unwrap();
        let layer = RouteLayer::new()
            .route(origin.clone(), AuthLayer::new(a))
            .route(origin.clone(), AuthLayer::new(b.clone()));
        assert_eq!(layer.origins().collect::<Vec<_>>(), [&origin]);
        assert!(layer.routes[0].auth.cache().ptr_eq(&b));
    }
}
