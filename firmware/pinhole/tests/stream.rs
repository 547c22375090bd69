//! One camera's stream started as the daemon starts it (`Stream::start`), on the test source,
//! without a socket: the first fragment reaches a hub subscriber, status and both watchdogs'
//! counters see it, and shutdown ends the source.
//!
//! Why: below the end-to-end tests nothing could start a stream before `Stream` existed; this
//! is the seam the next outputs (RTSP, WebRTC) hang off.

use std::future::poll_fn;
use std::time::Duration;

use pinhole::config::StreamConfig;
use pinhole::source::SourceSpec;
use pinhole::status::SourceState;
use pinhole::stream::Stream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_the_test_source_delivers_a_fragment_to_a_hub_subscriber() {
    let config = StreamConfig {
        name: "bench".to_string(),
        source: SourceSpec::parse("testsrc?size=320x240&fps=30&gop=30").expect("testsrc parses"),
        source_timeout: None,
        fragment_ms: 100,
    };
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let stream = Stream::start(&config, shutdown).expect("the stream starts");
    assert_eq!(stream.name(), "bench");

    let viewer = stream.hub().subscribe();
    let entry = tokio::time::timeout(Duration::from_secs(20), poll_fn(|cx| viewer.poll_next(cx)))
        .await
        .expect("a fragment within 20 s")
        .expect("the hub is open");
    // A viewer starts at an IDR, with the init segment that decodes it.
    assert!(entry.part.independent, "the first part starts at an IDR");
    assert!(entry.part.frame_count >= 1);
    assert_eq!((entry.init.width, entry.init.height), (320, 240));
    assert!(
        entry.init.codec.starts_with("avc1."),
        "{}",
        entry.init.codec
    );
    let payload = entry.part.framed.slice(4..);
    assert_eq!(
        &payload[4..8],
        b"prft",
        "a media fragment starts with its prft box"
    );

    let snap = stream.snapshot();
    assert_eq!(snap.stream, "bench");
    assert_eq!(snap.source.state, SourceState::Running);
    assert!(snap.source.frames_received >= 1);
    assert_eq!(snap.viewers, 1);
    assert!(stream.counters().frames_in() >= u64::from(entry.part.frame_count));
    assert!(stream.counters().parts_out() >= 1);

    shutdown_tx
        .send(true)
        .expect("the stream listens for shutdown");
    stream.close();
    tokio::time::timeout(Duration::from_secs(5), stream.stopped())
        .await
        .expect("the source stops within 5 s of shutdown");
    assert_eq!(stream.status().source_health().0, SourceState::Stopped);
}
