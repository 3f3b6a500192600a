//! Which request bodies can be sent a second time, for the one retry after a
//! rejected token (B6), and [`ReplayBody`], which makes streaming bodies
//! replayable.
//!
//! [`AuthService`](crate::AuthService) copies a request before sending it
//! when its body type says it can be copied ([`TryCloneBody`]), and keeps the
//! copy until the response is in. After a rejection it asks the copy whether
//! it can be sent now ([`TryCloneBody::is_replayable`]); if not, the
//! rejection goes back to the caller unchanged, after the token has been
//! invalidated so the next request gets a new one.
//!
//! | body | replayed? |
//! | --- | --- |
//! | `Full<Bytes>`, `Bytes`, `String`, `Vec<u8>`, `Empty`, `()` | yes, copied before the first send (a reference count for `Bytes`) |
//! | `BoxBody`, `UnsyncBoxBody`, `tonic::body::Body` | only when at their end (`is_end_stream`) |
//! | `reqwest::Body` (feature `reqwest`) | when buffered (`as_bytes()` is `Some`), copied |
//! | [`ReplayBody<B>`] | recorded while it is sent, up to a cap (64 KiB by default) |
//!
//! # Streaming bodies
//!
//! Wrap them in a [`ReplayBody`] (or put a [`ReplayBodyLayer`] above the
//! [`AuthLayer`](crate::AuthLayer)): the body is recorded while the first
//! attempt sends it, and the retry replays the recording, data and trailers.
//! It is not replayed when the recording went over the cap (a body whose size
//! hint is over the cap is not recorded at all), when the body failed, or
//! when the first attempt's copy is still live as the rejection arrives: the
//! client has neither sent it to its end nor dropped it (the server answered
//! before the body was fully sent, or before the client first polled it).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_bearer::body::{ReplayBody, TryCloneBody};
//!
//! let body = Full::new(Bytes::from_static(b"{\"id\": 7}"));
//! assert!(body.try_clone_body().is_some());
//!
//! // Larger than the cap: wrapped, but not recorded, so not replayed.
//! let upload = ReplayBody::with_cap(Full::new(Bytes::from(vec![0; 1024])), 512);
//! assert!(upload.try_clone_body().is_none());
//! ```
//!
//! # Your own body type
//!
//! Implement [`TryCloneBody`]: return `Some` with an identical body when you
//! can, `None` otherwise.

mod layer;
pub(crate) mod replay;

pub use self::layer::{ReplayBodyLayer, ReplayBodyService};
pub use self::replay::{DEFAULT_REPLAY_CAP, ReplayBody, ReplayError};

/// How long a rejection is held at most, by default, when the client still
/// holds the request body it answers (a streamed body the server answered
/// before reading it to its end): 1 s. The client normally lets go within
/// a round trip (HTTP/1.1 when the server closes or drains the connection,
/// HTTP/2 on the server's stream reset); a second is longer than any round
/// trip a request is expected to survive, and short enough that a client
/// that never lets go costs one slow rejection, not a hung call. See
/// [`AuthLayer::release_wait`](crate::AuthLayer::release_wait).
pub const DEFAULT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{Empty, Full};

/// A request body that can perhaps be sent again.
///
/// The contract, as [`AuthService`](crate::AuthService) uses it:
/// [`try_clone_body`](Self::try_clone_body) is called once, before the first
/// send, on the body that is about to be sent; the copy is kept, unpolled,
/// until the response is in; then [`is_replayable`](Self::is_replayable) is
/// called on the copy, and only if it says `true` is the copy sent.
///
/// # Example
///
/// A body type of your own becomes replayable by saying how to copy it:
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower_bearer::body::TryCloneBody;
///
/// /// A JSON request body; copying it costs a reference count.
/// #[derive(Clone)]
/// struct Json(Full<Bytes>);
///
/// impl TryCloneBody for Json {
///     fn try_clone_body(&self) -> Option<Self> {
///         Some(self.clone())
///     }
/// }
///
/// let body = Json(Full::new(Bytes::from_static(br#"{"id": 7}"#)));
/// assert!(body.try_clone_body().is_some());
/// // Built-in: buffered bodies are copied, and so are empty ones.
/// assert!(String::from("x").try_clone_body().is_some());
/// ```
pub trait TryCloneBody: Sized {
    /// A body identical to this one, if one can be made. Called before the
    /// first send.
    fn try_clone_body(&self) -> Option<Self>;

    /// Called on the copy after the first response arrived: whether it can be
    /// sent now. `true` unless the type says otherwise: a [`ReplayBody`] is
    /// replayable only once no other copy may still send it (the first
    /// attempt's body was sent to its end or dropped), and while its
    /// recording is whole (not over the cap, no error).
    fn is_replayable(&self) -> bool {
        true
    }

    /// Called on the copy when [`is_replayable`](Self::is_replayable) said
    /// `false` after a rejection: `Ready` once whatever held the body when
    /// the rejection arrived may have let go of it (so that asking
    /// `is_replayable` again may say `true`). The default is `Ready` at
    /// once: nothing to wait for. A [`ReplayBody`] is ready once the first
    /// attempt's copy was sent to its end or dropped.
    fn poll_released(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }
}

impl<D: Buf + Clone> TryCloneBody for Full<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> TryCloneBody for Empty<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(Empty::new())
    }
}

impl TryCloneBody for Bytes {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for Vec<u8> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for &'static str {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self)
    }
}

impl TryCloneBody for &'static [u8] {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self)
    }
}

impl TryCloneBody for () {
    fn try_clone_body(&self) -> Option<Self> {
        Some(())
    }
}

/// A boxed body can be replayed only when it is known to be empty.
impl<D, E> TryCloneBody for BoxBody<D, E>
where
    D: Buf + Send + Sync + 'static,
    E: 'static,
{
    fn try_clone_body(&self) -> Option<Self> {
        known_empty(self).then(|| BoxBody::new(empty_with_error::<D, E>()))
    }
}

/// An unsync boxed body can be replayed only when it is known to be empty.
impl<D, E> TryCloneBody for UnsyncBoxBody<D, E>
where
    D: Buf + Send + 'static,
    E: 'static,
{
    fn try_clone_body(&self) -> Option<Self> {
        known_empty(self).then(|| UnsyncBoxBody::new(empty_with_error::<D, E>()))
    }
}

/// Whether `body` has nothing left to send. Only `is_end_stream` says so: a
/// size hint of exactly 0 counts data bytes, and trailers may still follow.
pub(crate) fn known_empty<B: Body>(body: &B) -> bool {
    body.is_end_stream()
}

fn empty_with_error<D: Buf, E>() -> impl Body<Data = D, Error = E> + Send + Sync {
    use http_body_util::BodyExt;
    Empty::<D>::new().map_err(|never| match never {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn buffered_bodies_copy_their_bytes() {
        let full = Full::new(Bytes::from_static(b"payload"));
        let copy = full.try_clone_body().unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "payload");
        assert_eq!("x".to_string().try_clone_body().as_deref(), Some("x"));
        assert!(Empty::<Bytes>::new().try_clone_body().is_some());
    }

    #[tokio::test]
    async fn boxed_bodies_are_replayable_only_when_empty() {
        let empty: BoxBody<Bytes, std::io::Error> = BoxBody::new(empty_with_error());
        let copy = empty.try_clone_body().expect("empty body replays");
        assert!(copy.collect().await.unwrap().to_bytes().is_empty());
        let full: UnsyncBoxBody<Bytes, std::convert::Infallible> =
            UnsyncBoxBody::new(Full::new(Bytes::from_static(b"x")));
        assert!(full.try_clone_body().is_none());
    }

    #[test]
    fn boxed_body_with_no_data_but_trailers_to_come_is_not_copied_as_empty() {
        let trailers = std::future::ready(Some(Ok(http::HeaderMap::new())));
        let body: UnsyncBoxBody<Bytes, std::convert::Infallible> =
            UnsyncBoxBody::new(Full::new(Bytes::new()).with_trailers(trailers));
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.try_clone_body().is_none(), "the copy would lose them");
    }
}
