//! Which request bodies can be sent a second time, for the one retry after a
//! rejected token (B6).
//!
//! [`AuthService`](crate::AuthService) copies a request before sending it
//! when its body type says it can be copied, and keeps the copy until the
//! response is in. Buffered bodies copy cheaply: `Full<Bytes>`, `Bytes`,
//! `String`, `Vec<u8>`, `Empty`. Bodies that cannot be copied (streams)
//! are sent once, and their rejection is returned unchanged, after the token
//! has been invalidated so the next request gets a new one.
//!
//! Implement [`TryCloneBody`] for your own body type: return `Some` with an
//! identical body when you can, `None` otherwise.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_bearer::body::TryCloneBody;
//!
//! let body = Full::new(Bytes::from_static(b"{\"id\": 7}"));
//! assert!(body.try_clone_body().is_some());
//! ```

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{Empty, Full};

/// A request body that can perhaps be sent again.
pub trait TryCloneBody: Sized {
    /// A body identical to this one, if one can be made. Called before the
    /// first send.
    fn try_clone_body(&self) -> Option<Self>;

    /// Called on the copy after the first response arrived: whether it can be
    /// sent now. `true` unless the type says otherwise (a body that is
    /// recorded while it is sent can only be replayed once it was fully
    /// recorded).
    fn is_replayable(&self) -> bool {
        true
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

fn known_empty<B: Body>(body: &B) -> bool {
    body.is_end_stream() || body.size_hint().exact() == Some(0)
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
}
