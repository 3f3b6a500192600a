use super::*;
use http::HeaderValue;
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Full};

type Chan = Channel<Bytes, BoxError>;

/// Room in the recording in tests that check the cap.
const CAPACITY: usize = 8;
/// Exactly fills `CAPACITY`.
const FILL: &str = "abcdefgh";
/// One byte too many.
const OVERFLOW: &str = "i";

/// An original body fed through a channel, and one copy of it.
struct Test {
    tx: Sender<Bytes, BoxError>,
    initial: ReplayBody<Chan>,
    replay: ReplayBody<Chan>,
}

impl Test {
    fn new() -> Self {
        Self::with_cap(DEFAULT_REPLAY_CAP)
    }

    fn with_cap(cap: usize) -> Self {
        let (tx, body) = Channel::new(8);
        let initial = ReplayBody::try_new(body, cap).expect("a channel has no size hint");
        let replay = initial.try_clone_body().expect("a recorded body copies");
        Test {
            tx,
            initial,
            replay,
        }
    }
}

async fn send(tx: &mut Sender<Bytes, BoxError>, data: &'static str) {
    tx.send_data(Bytes::from_static(data.as_bytes()))
        .await
        .expect("the body is alive");
}

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("c0ffee"));
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

/// The next data frame, as a string; `None` at the end or on trailers.
async fn chunk<B>(body: &mut ReplayBody<B>) -> Option<String>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    let frame = body.frame().await?.expect("no error");
    let data = frame.into_data().ok()?;
    Some(String::from_utf8(data.to_vec()).unwrap())
}

/// The whole body: its data and its trailers.
async fn read_all<B>(body: &mut ReplayBody<B>) -> (String, Option<HeaderMap>)
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    let mut data = String::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("no error");
        match frame.into_data() {
            Ok(chunk) => data.push_str(std::str::from_utf8(&chunk).unwrap()),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    assert!(body.is_end_stream(), "a body read to its end is at its end");
    (data, trailers)
}

/// The error the next frame brings.
async fn error<B>(body: &mut ReplayBody<B>) -> BoxError
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    match body.frame().await {
        Some(Err(error)) => error,
        Some(Ok(_)) => panic!("expected an error, got a frame"),
        None => panic!("expected an error, got the end"),
    }
}

fn replay_error(error: &BoxError) -> ReplayError {
    *error.downcast_ref::<ReplayError>().expect("a ReplayError")
}

// === sending and replaying ===

#[tokio::test]
async fn replays_one_chunk() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    send(&mut tx, "hello world").await;
    drop(tx);

    assert_eq!(read_all(&mut initial).await, ("hello world".into(), None));
    assert!(replay.is_replayable());
    assert_eq!(read_all(&mut replay).await, ("hello world".into(), None));
}

#[tokio::test]
async fn replays_chunks_produced_over_time() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    tokio::spawn(async move {
        for part in ["hello", " world", ", have lots", " of fun!"] {
            send(&mut tx, part).await;
            tokio::task::yield_now().await;
        }
    });

    let (data, trailers) = read_all(&mut initial).await;
    assert_eq!(data, "hello world, have lots of fun!");
    assert!(trailers.is_none());
    let (data, trailers) = read_all(&mut replay).await;
    assert_eq!(data, "hello world, have lots of fun!");
    assert!(trailers.is_none());
}

#[tokio::test]
async fn trailers_are_replayed() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    send(&mut tx, "payload").await;
    tx.send_trailers(trailers()).await.unwrap();
    drop(tx);

    assert_eq!(
        read_all(&mut initial).await,
        ("payload".into(), Some(trailers()))
    );
    assert_eq!(
        read_all(&mut replay).await,
        ("payload".into(), Some(trailers()))
    );
}

#[tokio::test]
async fn trailers_only_body_is_replayed() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    tx.send_trailers(trailers()).await.unwrap();
    drop(tx);

    assert_eq!(
        read_all(&mut initial).await,
        (String::new(), Some(trailers()))
    );
    assert_eq!(
        read_all(&mut replay).await,
        (String::new(), Some(trailers()))
    );
}

#[tokio::test]
async fn no_data_but_trailers_to_come_is_not_at_its_end() {
    // The size hint says 0 bytes, yet trailers follow: taken for an empty
    // body, it would end before them, on the first send as on the replay.
    let body = Full::new(Bytes::new()).with_trailers(std::future::ready(Some(Ok(trailers()))));
    let mut initial = ReplayBody::new(body);
    let mut replay = initial.try_clone_body().expect("recorded");
    assert!(!initial.is_end_stream());
    assert!(!replay.is_end_stream());

    assert_eq!(
        read_all(&mut initial).await,
        (String::new(), Some(trailers()))
    );
    assert!(replay.is_replayable());
    assert_eq!(
        read_all(&mut replay).await,
        (String::new(), Some(trailers()))
    );
}

#[tokio::test]
async fn recorded_chunks_are_shared_not_copied() {
    let payload = Bytes::from_static(b"0123456789");
    let mut initial = ReplayBody::new(Full::new(payload.clone()));
    let mut replay = initial.try_clone_body().unwrap();

    let sent = initial.frame().await.unwrap().unwrap().into_data().unwrap();
    let resent = replay.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(sent.as_ptr(), payload.as_ptr());
    assert_eq!(resent.as_ptr(), payload.as_ptr());
}

// === hand-off between copies ===

#[tokio::test]
async fn switches_with_body_remaining() {
    // The server answered before reading the whole body; the client dropped
    // the first attempt's body; the retry sends all of it.
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    send(&mut tx, "hello").await;
    assert_eq!(chunk(&mut initial).await.as_deref(), Some("hello"));
    send(&mut tx, " world").await;
    assert_eq!(chunk(&mut initial).await.as_deref(), Some(" world"));
    assert!(!replay.is_replayable(), "the first attempt holds the body");

    drop(initial);
    assert!(
        replay.is_replayable(),
        "dropping it gives the recording back"
    );
    tokio::spawn(async move {
        send(&mut tx, ", have lots of fun").await;
        tx.send_trailers(trailers()).await.unwrap();
    });

    assert_eq!(
        read_all(&mut replay).await,
        ("hello world, have lots of fun".into(), Some(trailers()))
    );
}

#[tokio::test]
async fn finished_copy_hands_over_before_it_is_dropped() {
    // A client may keep a body it has sent; the retry need not wait for it.
    let Test {
        mut tx,
        mut initial,
        replay,
    } = Test::new();
    send(&mut tx, "all of it").await;
    drop(tx);

    let _ = read_all(&mut initial).await;
    assert!(replay.is_replayable());
    let mut replay = replay;
    assert_eq!(read_all(&mut replay).await.0, "all of it");
    drop(initial);
}

#[tokio::test]
async fn ends_with_last_data_frame_when_the_original_says_so() {
    // `Full` knows it has ended after its one frame: so does its recording,
    // without a further poll.
    let mut initial = ReplayBody::new(Full::new(Bytes::from_static(b"x")));
    let replay = initial.try_clone_body().unwrap();
    assert_eq!(chunk(&mut initial).await.as_deref(), Some("x"));
    assert!(initial.is_end_stream());
    assert!(replay.is_replayable());
}

#[tokio::test]
async fn not_replayable_while_the_sent_copy_may_still_be_polled() {
    // The response came before the client first polled the body it was
    // given (an HTTP/2 stream task that has not run yet). That copy can
    // still take the recording: were the retry sent now and polled second,
    // it would fail with `Busy`. Only once it is dropped is the retry safe.
    let Test {
        mut tx,
        initial,
        mut replay,
    } = Test::new();
    assert!(!replay.is_replayable(), "the sent copy is still alive");

    drop(initial);
    assert!(replay.is_replayable());
    send(&mut tx, "sent by the retry only").await;
    drop(tx);
    assert_eq!(
        read_all(&mut replay).await,
        ("sent by the retry only".into(), None)
    );
}

#[tokio::test]
async fn polling_a_copy_while_another_holds_the_body_fails_without_panic() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    send(&mut tx, "hello").await;
    assert_eq!(chunk(&mut initial).await.as_deref(), Some("hello"));

    let err = error(&mut replay).await;
    assert!(replay_error(&err).is_busy());
    assert!(replay.frame().await.is_none(), "after the error, the end");
    assert!(replay.is_end_stream());

    // The original is unaffected.
    send(&mut tx, " world").await;
    drop(tx);
    assert_eq!(chunk(&mut initial).await.as_deref(), Some(" world"));
    assert!(initial.frame().await.is_none());
}

#[tokio::test]
async fn second_replay_after_a_partial_first_replay() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    send(&mut tx, "hello").await;
    assert_eq!(chunk(&mut initial).await.as_deref(), Some("hello"));
    drop(initial);

    let mut replay2 = replay.try_clone_body().unwrap();
    send(&mut tx, " world").await;
    assert_eq!(chunk(&mut replay).await.as_deref(), Some("hello"));
    assert_eq!(chunk(&mut replay).await.as_deref(), Some(" world"));
    drop(replay);

    tokio::spawn(async move {
        send(&mut tx, ", again").await;
        tx.send_trailers(trailers()).await.unwrap();
    });
    assert_eq!(
        read_all(&mut replay2).await,
        ("hello world, again".into(), Some(trailers()))
    );
}

#[tokio::test]
async fn drop_clone_early() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    send(&mut tx, "hello").await;
    tx.send_trailers(trailers()).await.unwrap();
    drop(tx);

    assert_eq!(read_all(&mut initial).await.0, "hello");
    // A copy made and dropped unpolled takes nothing with it.
    drop(replay.try_clone_body().unwrap());
    assert_eq!(
        read_all(&mut replay).await,
        ("hello".into(), Some(trailers()))
    );
}

#[tokio::test]
async fn original_failure_is_not_replayed() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    send(&mut tx, "partial").await;
    assert_eq!(chunk(&mut initial).await.as_deref(), Some("partial"));
    tx.abort("upload interrupted".into());

    let err = error(&mut initial).await;
    assert_eq!(err.to_string(), "upload interrupted");
    assert!(!replay.is_replayable());
    assert!(replay_error(&error(&mut replay).await).is_failed());
}

// === end of stream ===

#[tokio::test]
async fn empty_body_is_always_eos() {
    let initial = ReplayBody::new(http_body_util::Empty::<Bytes>::new());
    assert!(initial.is_end_stream());
    let replay = initial.try_clone_body().unwrap();
    assert!(replay.is_end_stream());
    assert!(replay.is_replayable());
    assert_eq!(replay.size_hint().exact(), Some(0));
}

#[tokio::test]
async fn eos_only_when_fully_replayed() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    send(&mut tx, "one").await;
    tx.send_trailers(trailers()).await.unwrap();
    drop(tx);

    assert!(!initial.is_end_stream());
    assert_eq!(chunk(&mut initial).await.as_deref(), Some("one"));
    assert!(!initial.is_end_stream(), "trailers are still to come");
    assert!(!replay.is_end_stream());
    assert!(initial.frame().await.unwrap().unwrap().is_trailers());
    assert!(initial.is_end_stream());
    assert!(
        !replay.is_end_stream(),
        "the copy has everything ahead of it"
    );

    assert_eq!(chunk(&mut replay).await.as_deref(), Some("one"));
    assert!(!replay.is_end_stream(), "the trailers are still to replay");
    assert!(replay.frame().await.unwrap().unwrap().is_trailers());
    assert!(replay.is_end_stream());
    assert!(replay.frame().await.is_none());
}

// === the cap ===

#[tokio::test]
async fn caps_while_sending_but_the_sending_copy_streams_on() {
    debug_assert!(FILL.len() == CAPACITY, "fills the recording");
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::with_cap(CAPACITY);

    send(&mut tx, FILL).await;
    assert_eq!(chunk(&mut initial).await.as_deref(), Some(FILL));
    assert_eq!(initial.is_capped(), Some(false));
    assert_eq!(replay.is_capped(), None, "the original holds the recording");

    send(&mut tx, OVERFLOW).await;
    assert_eq!(chunk(&mut initial).await.as_deref(), Some(OVERFLOW));
    assert_eq!(initial.is_capped(), Some(true));
    send(&mut tx, "and more").await;
    drop(tx);
    assert_eq!(chunk(&mut initial).await.as_deref(), Some("and more"));
    assert!(initial.frame().await.is_none());

    assert_eq!(replay.is_capped(), Some(true));
    assert!(!replay.is_replayable());
    assert!(replay.try_clone_body().is_none());
    assert!(replay_error(&error(&mut replay).await).is_capped());
}

#[tokio::test]
async fn exactly_the_cap_is_replayed() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::with_cap(CAPACITY);
    send(&mut tx, FILL).await;
    drop(tx);
    assert_eq!(read_all(&mut initial).await.0, FILL);
    assert_eq!(replay.is_capped(), Some(false));
    assert_eq!(read_all(&mut replay).await.0, FILL);
}

#[tokio::test]
async fn caps_across_replays() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::with_cap(CAPACITY);
    send(&mut tx, FILL).await;
    assert_eq!(chunk(&mut initial).await.as_deref(), Some(FILL));
    drop(initial);

    let mut replay2 = replay.try_clone_body().unwrap();
    assert_eq!(chunk(&mut replay).await.as_deref(), Some(FILL));
    assert_eq!(replay.is_capped(), Some(false));
    send(&mut tx, OVERFLOW).await;
    assert_eq!(chunk(&mut replay).await.as_deref(), Some(OVERFLOW));
    assert_eq!(replay.is_capped(), Some(true));
    drop(replay);

    assert!(!replay2.is_replayable());
    assert!(replay_error(&error(&mut replay2).await).is_capped());
}

#[test]
fn a_size_hint_over_the_cap_is_not_recorded() {
    let big = Full::new(Bytes::from(vec![b'x'; CAPACITY + 1]));
    let big = ReplayBody::try_new(big, CAPACITY).expect_err("over the cap");
    assert_eq!(big.size_hint().exact(), Some(CAPACITY as u64 + 1));

    let unrecorded = ReplayBody::with_cap(big, CAPACITY);
    assert!(!unrecorded.is_recorded());
    assert_eq!(unrecorded.is_capped(), Some(true));
    assert!(unrecorded.try_clone_body().is_none());
    assert!(!unrecorded.is_replayable());
    assert_eq!(unrecorded.size_hint().exact(), Some(CAPACITY as u64 + 1));

    let fits = Full::new(Bytes::from(vec![b'x'; CAPACITY]));
    assert!(ReplayBody::try_new(fits, CAPACITY).is_ok());
}

#[tokio::test]
async fn an_unrecorded_body_is_sent_as_it_is() {
    let mut unrecorded = ReplayBody::with_cap(Full::new(Bytes::from_static(b"0123456789")), 4);
    assert_eq!(read_all(&mut unrecorded).await.0, "0123456789");
}

// === size hints ===

#[tokio::test]
async fn size_hint_is_exact_for_replay() {
    const BODY: &str = "sized body";
    let mut initial = ReplayBody::new(Full::new(Bytes::from_static(BODY.as_bytes())));
    let mut replay = initial.try_clone_body().unwrap();
    assert_eq!(initial.size_hint().exact(), Some(BODY.len() as u64));
    assert_eq!(replay.size_hint().exact(), Some(BODY.len() as u64));

    assert_eq!(chunk(&mut initial).await.as_deref(), Some(BODY));
    assert_eq!(initial.size_hint().exact(), Some(0), "all of it was sent");
    assert_eq!(replay.size_hint().exact(), Some(BODY.len() as u64));

    assert_eq!(chunk(&mut replay).await.as_deref(), Some(BODY));
    assert_eq!(replay.size_hint().exact(), Some(0));
}

#[tokio::test]
async fn size_hint_of_a_stream_becomes_exact_once_recorded() {
    let Test {
        mut tx,
        mut initial,
        mut replay,
    } = Test::new();
    assert_eq!(replay.size_hint().exact(), None);
    send(&mut tx, "abc").await;
    send(&mut tx, "de").await;
    drop(tx);
    let _ = read_all(&mut initial).await;

    assert_eq!(replay.size_hint().exact(), Some(5));
    assert_eq!(chunk(&mut replay).await.as_deref(), Some("abc"));
    assert_eq!(replay.size_hint().exact(), Some(2));
}

#[test]
fn is_send_and_debug_without_secrets() {
    fn assert_send<T: Send>() {}
    assert_send::<ReplayBody<Chan>>();
    let body = ReplayBody::new(Full::new(Bytes::from_static(b"secret=hunter2")));
    let debug = format!("{body:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

/// Watches when the sent copy lets go ([`Released`]), with a waker that
/// counts its wake-ups.
struct Watch {
    released: Released<Chan>,
    waker: Waker,
    woken: Arc<std::sync::atomic::AtomicUsize>,
}

impl Watch {
    fn new(sent: &ReplayBody<Chan>) -> Self {
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        Watch {
            released: sent.released().expect("recorded"),
            waker: Waker::from(Arc::new(Count(woken.clone()))),
            woken,
        }
    }

    fn is_released(&self) -> bool {
        let mut cx = Context::from_waker(&self.waker);
        self.released.poll_released(&mut cx).is_ready()
    }

    fn woken(&self) -> usize {
        self.woken.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn released_is_signalled_when_the_sent_copy_lets_go() {
    let Test {
        mut tx,
        mut initial,
        replay,
    } = Test::new();
    let watch = Watch::new(&initial);
    assert!(!watch.is_released(), "not polled yet, but it may still be");

    send(&mut tx, "part").await;
    assert_eq!(chunk(&mut initial).await.as_deref(), Some("part"));
    assert!(!watch.is_released(), "it holds the body");
    assert_eq!(watch.woken(), 0);

    drop(initial);
    assert_eq!(watch.woken(), 1, "letting go wakes the waiter");
    assert!(watch.is_released());
    assert!(replay.is_replayable());
}

#[tokio::test]
async fn released_when_the_sent_copy_finishes_before_it_is_dropped() {
    let Test {
        mut tx,
        mut initial,
        replay,
    } = Test::new();
    let watch = Watch::new(&initial);
    assert!(!watch.is_released());

    send(&mut tx, "all").await;
    drop(tx);
    assert_eq!(read_all(&mut initial).await.0, "all");
    assert_eq!(watch.woken(), 1);
    assert!(watch.is_released());
    assert!(replay.is_replayable());
    drop(initial);
}
