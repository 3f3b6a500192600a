//! [`ReplayBody`]: a request body recorded while it is sent, so that the one
//! retry after a rejected token can send it again, streaming bodies included.
//!
//! The contract, the cap and the hand-off between copies are documented on
//! [`ReplayBody`].

use std::fmt;
use std::mem;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::TryCloneBody;
use crate::BoxError;

/// Unit tests for [`ReplayBody<B>`].
#[cfg(test)]
mod tests;

/// How many bytes of a body [`ReplayBody::new`] records at most: 64 KiB.
///
/// A retry after a rejected token is rare, and every byte recorded stays in
/// memory until the response arrives, for every request in flight. 64 KiB
/// covers the JSON and protobuf messages APIs exchange, keeps ten thousand
/// requests in flight under 640 MiB in the worst case, and is the limit
/// linkerd2-proxy chose for the same job. Uploads larger than that should
/// not be sent twice anyway.
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// A request body that records itself while it is sent, up to a cap, so
/// that a copy of it can be sent again.
///
/// # How it works
///
/// Every copy of a `ReplayBody` (the original and those made with
/// [`TryCloneBody::try_clone_body`]) shares one *recording*: the original
/// body, the data frames read from it so far (as [`Bytes`], so recording a
/// `Bytes` chunk is a reference count, not a copy) and its trailers.
///
/// * The copy that is polled first takes the recording and holds it while it
///   is being polled. It sends what was recorded before it (nothing, for the
///   first copy), then reads on from the original body and records what it
///   reads.
/// * It gives the recording back as soon as it has sent its last frame, or
///   when it is dropped, whichever comes first. The next copy to be polled
///   takes it, replays every recorded frame and the trailers, and, if the
///   original body had not ended, goes on reading it. So a body that the
///   first attempt sent only in part (the server answered before reading it
///   all) is still sent whole by the retry.
/// * A copy is *live* from when it is made until it has sent its last
///   frame, failed, or was dropped. A live copy that was never polled may
///   still be, and take the recording then.
/// * Past the cap, the recording is discarded: the copy that is sending keeps
///   streaming to its end, and no other copy can be replayed.
///
/// [`TryCloneBody::is_replayable`] tells, without polling, whether a copy can
/// be sent now: only when it is the last live copy (the first attempt's
/// body was sent to its end or dropped, even if it was never polled: a
/// response can arrive before the client first polls the body it was
/// given), and not after the cap was passed or the original body failed.
/// [`AuthService`](crate::AuthService) checks it after a rejection and
/// returns the rejection unchanged when it is false.
///
/// # Polled in the wrong order
///
/// A copy polled while another copy holds the recording does not wait and
/// does not panic: it fails with a [`ReplayError`] (`is_busy()`), as it
/// does when the recording was capped (`is_capped()`) or the original body
/// failed (`is_failed()`). An error, rather than an early end, so that a
/// server never takes a truncated body for a whole one.
///
/// Data frames come out as [`Bytes`]; errors of the inner body are boxed.
/// Polling needs `B: Unpin`: wrap other bodies in `Box::pin` first.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use tower_bearer::body::{ReplayBody, TryCloneBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::BoxError> {
/// let body = ReplayBody::new(Full::new(Bytes::from_static(b"{\"id\": 7}")));
/// let copy = body.try_clone_body().expect("a small body is recorded");
///
/// // The first attempt sends the original...
/// assert_eq!(body.collect().await?.to_bytes(), "{\"id\": 7}");
/// // ...and the retry sends the same bytes again.
/// assert!(copy.is_replayable());
/// assert_eq!(copy.collect().await?.to_bytes(), "{\"id\": 7}");
/// # Ok(())
/// # }
/// ```
pub struct ReplayBody<B> {
    mode: Mode<B>,
}

enum Mode<B> {
    /// This copy shares a recording with the other copies.
    Recorded(Copy<B>),
    /// The body's size hint was over the cap when it was wrapped: it is sent
    /// as it is, and cannot be copied.
    Unrecorded(B),
}

/// One copy of a recorded body.
struct Copy<B> {
    /// What every copy shares.
    shared: Arc<Shared<B>>,
    /// Where this copy is in its life.
    turn: Turn<B>,
}

enum Turn<B> {
    /// Not polled yet; the recording is in `Shared::idle` or with another
    /// copy.
    Waiting,
    /// Being polled: this copy holds the recording until it has sent its
    /// last frame or is dropped.
    Holding(Holding<B>),
    /// Done: the last frame was sent, or the copy failed. The recording (if
    /// this copy had it) was given back.
    Finished,
}

/// The recording, while one copy holds it, and how far that copy got.
struct Holding<B> {
    recording: Recording<B>,
    /// Recorded chunks this copy has sent.
    sent_chunks: usize,
    /// Their length in bytes.
    sent_bytes: u64,
}

/// State shared by every copy of one body.
struct Shared<B> {
    /// The recording, while no copy holds it. A copy takes it out when it is
    /// first polled and puts it back when it finishes or is dropped.
    idle: Mutex<Option<Recording<B>>>,
    /// Who waits for the copy being sent to let go (see [`Released`]).
    waiter: Mutex<Option<Waker>>,
    /// How many copies are live: made, and not yet finished (sent to the
    /// end, or failed) or dropped. Each copy counts itself once, and
    /// [`Copy::retire`] takes it off.
    live: AtomicUsize,
    /// The size hint of the original body when it was wrapped: the size of
    /// a whole copy, as far as it was known.
    size_hint: SizeHint,
    /// The original body was at its end when it was wrapped (no data, no
    /// trailers): every copy is at its end from the start, and none needs
    /// the recording.
    empty: bool,
}

/// What was read from the original body so far.
struct Recording<B> {
    /// The original body, while it may have frames left; `None` once it
    /// ended (or failed).
    rest: Option<B>,
    /// The data frames read so far, in order; emptied when the recording is
    /// lost.
    chunks: Vec<Bytes>,
    /// Their length in bytes.
    recorded: u64,
    /// The trailers, once the original body sent them.
    trailers: Option<HeaderMap>,
    /// Bytes that may be recorded at most.
    cap: u64,
    /// Why the recording can no longer be replayed, if it cannot.
    lost: Option<Lost>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// More than the cap was read.
    Capped,
    /// The original body failed: what was read is not the whole body.
    Failed,
}

/// Why a copy of a [`ReplayBody`] could not be sent. It comes out of the
/// body as a boxed error; downcast it to tell the cases apart.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{channel::Channel, BodyExt};
/// use tower_bearer::body::{ReplayBody, ReplayError, TryCloneBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A stream of unknown length, recorded up to 4 bytes.
/// let (mut tx, stream) = Channel::<Bytes, std::convert::Infallible>::new(1);
/// tokio::spawn(async move { tx.send_data(Bytes::from_static(b"more than four")).await });
/// let body = ReplayBody::with_cap(stream, 4);
/// let copy = body.try_clone_body().expect("the length is unknown: recorded");
///
/// body.collect().await.unwrap(); // the first attempt sends all of it
///
/// assert!(!copy.is_replayable());
/// let error = copy.collect().await.unwrap_err();
/// assert!(error.downcast_ref::<ReplayError>().unwrap().is_capped());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayError {
    kind: ReplayErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplayErrorKind {
    Busy,
    Capped,
    Failed,
}

// === impl ReplayBody ===

impl<B: Body> ReplayBody<B> {
    /// Wraps `body` to be recorded up to [`DEFAULT_REPLAY_CAP`] bytes. A body
    /// whose size hint says it is larger is not recorded: see
    /// [`with_cap`](Self::with_cap).
    pub fn new(body: B) -> Self {
        Self::with_cap(body, DEFAULT_REPLAY_CAP)
    }

    /// Wraps `body` to be recorded up to `cap` bytes.
    ///
    /// Always wraps: a body whose size hint says it is larger than `cap`
    /// (its lower bound is over it) is sent as it is, unrecorded, and
    /// [`try_clone_body`](TryCloneBody::try_clone_body) returns `None` for
    /// it, so a rejection of it is returned unchanged. Use
    /// [`try_new`](Self::try_new) to get such a body back instead.
    pub fn with_cap(body: B, cap: usize) -> Self {
        Self::try_new(body, cap).unwrap_or_else(|body| ReplayBody {
            mode: Mode::Unrecorded(body),
        })
    }

    /// Wraps `body` to be recorded up to `cap` bytes, or gives it back
    /// untouched when its size hint says it is larger than `cap`.
    ///
    /// A body without a size hint is recorded until it passes the cap; from
    /// then on it keeps streaming, and no copy of it can be sent.
    ///
    /// # Errors
    ///
    /// `Err(body)` when `body.size_hint().lower()` is over `cap`.
    pub fn try_new(body: B, cap: usize) -> Result<Self, B> {
        let size_hint = body.size_hint();
        let cap = u64::try_from(cap).unwrap_or(u64::MAX);
        if size_hint.lower() > cap {
            tracing::trace!(
                size = size_hint.lower(),
                cap,
                "body larger than the replay cap; not recorded"
            );
            return Err(body);
        }
        // Only `is_end_stream` says there is nothing left: a size hint of
        // exactly 0 counts data bytes, and trailers may still follow.
        let empty = body.is_end_stream();
        let recording = Recording {
            rest: Some(body),
            chunks: Vec::new(),
            recorded: 0,
            trailers: None,
            cap,
            lost: None,
        };
        Ok(ReplayBody {
            mode: Mode::Recorded(Copy {
                shared: Arc::new(Shared {
                    idle: Mutex::new(Some(recording)),
                    waiter: Mutex::new(None),
                    live: AtomicUsize::new(1),
                    size_hint,
                    empty,
                }),
                turn: Turn::Waiting,
            }),
        })
    }
}

impl<B> ReplayBody<B> {
    /// Whether the recording went over the cap (or the body was never
    /// recorded because its size hint did), as seen from this copy.
    ///
    /// * `Some(true)`: no copy of this body can be sent again.
    /// * `Some(false)`: the recording is within the cap so far.
    /// * `None`: another copy holds the recording (it is being sent), so
    ///   this copy cannot tell, and cannot be sent now either.
    pub fn is_capped(&self) -> Option<bool> {
        match &self.mode {
            Mode::Unrecorded(_) => Some(true),
            Mode::Recorded(copy) => copy.with_recording(|recording| {
                recording.map(|recording| recording.lost == Some(Lost::Capped))
            }),
        }
    }

    /// Whether this body is recorded at all: false when its size hint was
    /// over the cap when it was wrapped.
    pub fn is_recorded(&self) -> bool {
        matches!(self.mode, Mode::Recorded(_))
    }

    /// A handle that tells when at most one copy is live (the one kept for
    /// the retry); `None` for an unrecorded body. Taken from the body that
    /// is sent, polled after a rejection, to wait until the transport has
    /// let go of it.
    pub(crate) fn released(&self) -> Option<Released<B>> {
        match &self.mode {
            Mode::Recorded(copy) => Some(Released {
                shared: copy.shared.clone(),
            }),
            Mode::Unrecorded(_) => None,
        }
    }
}

/// Tells when the copy of a [`ReplayBody`] that was sent is no longer live
/// (it finished or was dropped), so that the copy kept for the retry is the
/// only one left. One waiter at a time.
pub(crate) struct Released<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Released<B> {
    /// Ready once at most one copy is live: the one kept for the retry, if
    /// any.
    pub(crate) fn poll_released(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.empty {
            return Poll::Ready(());
        }
        // Register first, then look: `Copy::retire` counts down, then wakes.
        *self
            .shared
            .waiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        if self.shared.live.load(Ordering::SeqCst) <= 1 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    /// The next frame: this copy's share of the recording first, then the
    /// original body.
    ///
    /// # Errors
    ///
    /// A [`ReplayError`] when another copy holds the recording, when the
    /// recording went over the cap or the original body failed before this
    /// copy started; the original body's own error when it fails while this
    /// copy reads it. After an error, the body is at its end. Never panics.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().mode {
            Mode::Unrecorded(body) => match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                ))),
                Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
                None => Poll::Ready(None),
            },
            Mode::Recorded(copy) => copy.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.mode {
            Mode::Unrecorded(body) => body.is_end_stream(),
            Mode::Recorded(copy) => copy.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.mode {
            Mode::Unrecorded(body) => body.size_hint(),
            Mode::Recorded(copy) => copy.size_hint(),
        }
    }
}

/// A copy shares the recording: it is `Some` unless the body is unrecorded
/// or its recording was already lost.
impl<B> TryCloneBody for ReplayBody<B> {
    fn try_clone_body(&self) -> Option<Self> {
        let Mode::Recorded(copy) = &self.mode else {
            return None;
        };
        // A recording that is lost already cannot give a whole copy. One
        // that another copy holds may still: it is checked again before the
        // retry, with `is_replayable`.
        let lost = copy.with_recording(|recording| recording.is_some_and(|r| r.lost.is_some()));
        if lost {
            return None;
        }
        copy.shared.live.fetch_add(1, Ordering::SeqCst);
        Some(ReplayBody {
            mode: Mode::Recorded(Copy {
                shared: copy.shared.clone(),
                turn: Turn::Waiting,
            }),
        })
    }

    /// True when this copy has not been polled, it is the only live copy
    /// (every other one was sent to its end or dropped, so none can take
    /// the recording any more), and the recording is whole so far (not
    /// capped, no error).
    fn is_replayable(&self) -> bool {
        match &self.mode {
            Mode::Unrecorded(_) => false,
            Mode::Recorded(copy) => {
                matches!(copy.turn, Turn::Waiting)
                    && (copy.shared.empty
                        || (copy.shared.live.load(Ordering::SeqCst) == 1
                            && copy
                                .shared
                                .lock()
                                .as_ref()
                                .is_some_and(|recording| recording.lost.is_none())))
            }
        }
    }

    fn poll_released(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.released() {
            Some(released) => released.poll_released(cx),
            None => Poll::Ready(()),
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ReplayBody");
        match &self.mode {
            Mode::Unrecorded(_) => debug.field("recorded", &false),
            Mode::Recorded(copy) => debug.field("recorded", &true).field(
                "turn",
                &match copy.turn {
                    Turn::Waiting => "waiting",
                    Turn::Holding(_) => "holding",
                    Turn::Finished => "finished",
                },
            ),
        };
        debug.finish_non_exhaustive()
    }
}

// === impl Copy ===

impl<B> Copy<B> {
    /// Runs `f` on the recording if this copy or no copy holds it, with
    /// `None` if another copy does.
    fn with_recording<T>(&self, f: impl FnOnce(Option<&Recording<B>>) -> T) -> T {
        match &self.turn {
            Turn::Holding(holding) => f(Some(&holding.recording)),
            Turn::Waiting | Turn::Finished => f(self.shared.lock().as_ref()),
        }
    }

    /// Finishes this copy, once: gives the recording back if it holds it,
    /// counts itself off the live copies, and wakes whoever waits for that.
    /// Called when the copy has sent its last frame, failed, or is dropped.
    fn retire(&mut self) {
        match mem::replace(&mut self.turn, Turn::Finished) {
            Turn::Finished => return,
            Turn::Holding(holding) => *self.shared.lock() = Some(holding.recording),
            Turn::Waiting => {}
        }
        self.shared.live.fetch_sub(1, Ordering::SeqCst);
        // After the count: a waiter registers before it looks.
        let waiter = self
            .shared
            .waiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    fn is_end_stream(&self) -> bool
    where
        B: Body,
    {
        if self.shared.empty {
            return true;
        }
        match &self.turn {
            // A copy that has not started has the whole body ahead of it.
            Turn::Waiting => false,
            Turn::Holding(holding) => {
                let recording = &holding.recording;
                holding.sent_chunks >= recording.chunks.len()
                    && match &recording.rest {
                        // Replaying a body that ended: only trailers may be left.
                        None => recording.trailers.is_none(),
                        Some(rest) => rest.is_end_stream(),
                    }
            }
            Turn::Finished => true,
        }
    }

    fn size_hint(&self) -> SizeHint
    where
        B: Body,
    {
        match &self.turn {
            // A copy that has not started sends the whole body: what is
            // recorded plus what is left, when the recording is whole.
            Turn::Waiting => match self.shared.lock().as_ref() {
                Some(recording) if recording.lost.is_none() => recording.remaining_after(0),
                _ => self.shared.size_hint,
            },
            Turn::Holding(holding) => holding.recording.remaining_after(holding.sent_bytes),
            Turn::Finished => SizeHint::with_exact(0),
        }
    }
}

impl<B> Copy<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.shared.empty {
            // Nothing to send, and so nothing to take: copies of an empty
            // body never contend for the recording.
            self.retire();
            return Poll::Ready(None);
        }
        if let Turn::Waiting = self.turn {
            match self.shared.take() {
                Ok(recording) => {
                    self.turn = Turn::Holding(Holding {
                        recording,
                        sent_chunks: 0,
                        sent_bytes: 0,
                    });
                }
                Err(error) => {
                    self.retire();
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
        let Turn::Holding(holding) = &mut self.turn else {
            return Poll::Ready(None);
        };

        // First what was recorded before this copy started.
        if let Some(chunk) = holding.recording.chunks.get(holding.sent_chunks) {
            let chunk = chunk.clone();
            holding.sent_chunks += 1;
            holding.sent_bytes += chunk.len() as u64;
            if holding.sent_chunks == holding.recording.chunks.len()
                && holding.recording.rest.is_none()
                && holding.recording.trailers.is_none()
            {
                self.retire();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }

        // Then the trailers of an original body that ended.
        let Some(rest) = holding.recording.rest.as_mut() else {
            let trailers = holding.recording.trailers.clone();
            self.retire();
            return Poll::Ready(trailers.map(|trailers| Ok(Frame::trailers(trailers))));
        };

        // Then on from the original body, recording as it goes.
        loop {
            let polled = ready!(Pin::new(&mut *rest).poll_frame(cx));
            let ended = rest.is_end_stream();
            let out = match polled {
                None => None,
                Some(Err(error)) => {
                    holding.recording.lose(Lost::Failed);
                    holding.recording.rest = None;
                    self.retire();
                    return Poll::Ready(Some(Err(error.into())));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        let chunk = data.copy_to_bytes(data.remaining());
                        holding.record(chunk.clone());
                        Some(Frame::data(chunk))
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            if holding.recording.lost.is_none() {
                                holding.recording.trailers = Some(trailers.clone());
                            }
                            holding.recording.rest = None;
                            self.retire();
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        // http-body 1 has no other kind of frame; should one
                        // appear, it cannot be recorded, so it is skipped.
                        Err(_unknown) => continue,
                    },
                },
            };
            if out.is_none() || ended {
                // The original body has nothing left: drop it, and give the
                // recording back now, so a retry need not wait for this copy
                // to be dropped.
                holding.recording.rest = None;
                self.retire();
            }
            return Poll::Ready(out.map(Ok));
        }
    }
}

impl<B> Drop for Copy<B> {
    fn drop(&mut self) {
        self.retire();
    }
}

// === impl Holding ===

impl<B> Holding<B> {
    /// Records a chunk this copy read from the original body (and sends).
    fn record(&mut self, chunk: Bytes) {
        let len = chunk.len() as u64;
        self.sent_bytes += len;
        let recording = &mut self.recording;
        if recording.lost.is_some() || chunk.is_empty() {
            return;
        }
        if recording.recorded + len > recording.cap {
            tracing::debug!(
                cap = recording.cap,
                "request body passed the replay cap; it cannot be sent again"
            );
            recording.lose(Lost::Capped);
            self.sent_chunks = 0;
            return;
        }
        recording.recorded += len;
        recording.chunks.push(chunk);
        self.sent_chunks = recording.chunks.len();
    }
}

// === impl Recording ===

impl<B> Recording<B> {
    /// The recording cannot be replayed any more: free what it holds.
    fn lose(&mut self, why: Lost) {
        self.lost.get_or_insert(why);
        self.chunks = Vec::new();
        self.recorded = 0;
        self.trailers = None;
    }

    /// The size of what a copy that has sent `sent` recorded bytes still has
    /// to send.
    fn remaining_after(&self, sent: u64) -> SizeHint
    where
        B: Body,
    {
        let recorded = self.recorded.saturating_sub(sent);
        let Some(rest) = &self.rest else {
            return SizeHint::with_exact(recorded);
        };
        let rest = rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(recorded.saturating_add(rest.lower()));
        if let Some(upper) = rest.upper() {
            hint.set_upper(recorded.saturating_add(upper));
        }
        hint
    }
}

// === impl Shared ===

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, Option<Recording<B>>> {
        // Nothing panics while holding this lock; should something have, the
        // recording is still consistent (every update is a single store).
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the recording for a copy that starts being polled.
    fn take(&self) -> Result<Recording<B>, ReplayError> {
        let mut idle = self.lock();
        match idle.as_ref().map(|recording| recording.lost) {
            None => Err(ReplayError::new(ReplayErrorKind::Busy)),
            Some(Some(Lost::Capped)) => Err(ReplayError::new(ReplayErrorKind::Capped)),
            Some(Some(Lost::Failed)) => Err(ReplayError::new(ReplayErrorKind::Failed)),
            Some(None) => idle.take().ok_or(ReplayError::new(ReplayErrorKind::Busy)),
        }
    }
}

// === impl ReplayError ===

impl ReplayError {
    fn new(kind: ReplayErrorKind) -> Self {
        ReplayError { kind }
    }

    /// Another copy of the body held the recording: it was still being
    /// sent.
    pub fn is_busy(&self) -> bool {
        self.kind == ReplayErrorKind::Busy
    }

    /// The body went over the replay cap before this copy started.
    pub fn is_capped(&self) -> bool {
        self.kind == ReplayErrorKind::Capped
    }

    /// The original body failed before this copy started, so what was
    /// recorded is not the whole body.
    pub fn is_failed(&self) -> bool {
        self.kind == ReplayErrorKind::Failed
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ReplayErrorKind::Busy => "request body copy polled while another copy is being sent",
            ReplayErrorKind::Capped => "request body was larger than the replay cap",
            ReplayErrorKind::Failed => "request body failed before it was fully recorded",
        })
    }
}

impl std::error::Error for ReplayError {}
