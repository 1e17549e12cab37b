//! `simulate --firehose RATE`: every live socket streams distinct, real
//! records whose identity carries the send time. Rates are printed, not
//! asserted (timing is measured by benchmarks); what is checked is what
//! the send times say about pacing: never ahead of the rate when paced,
//! full write batches back to back when not.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use studio_relay::config::Secret;
use studio_relay::model::{normalize_live, DataSource};
use studio_relay::simulator::{firehose_send_time_us, spawn, SimulateArgs, SimulatorHandle};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "firehose-token";
const SOURCES: [&str; 5] = [
    "calls",
    "queues",
    "agents",
    "profile_live",
    "profile_history",
];

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn args(rate: f64) -> SimulateArgs {
    SimulateArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tokens: vec![Secret::new(TOKEN)],
        seed: 5,
        firehose: Some(rate),
        ..SimulateArgs::default()
    }
}

async fn connect(sim: &SimulatorHandle, source: &str) -> Ws {
    let mut req = format!("{}/{source}", sim.live_url())
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake")
        .0
}

/// The send time in a frame's `id_call` identity (calls, queues, agents),
/// found without parsing the frame.
fn send_time_in(text: &str) -> Option<i64> {
    text.match_indices("\"id_call\":\"").find_map(|(i, m)| {
        let rest = &text[i + m.len()..];
        firehose_send_time_us(&rest[..rest.find('"')?])
    })
}

/// What one path delivered: its frames (unless counting only), how many,
/// and the sizes of the write batches read whole (frames sharing one send
/// time, in a row).
type PathRead = (String, Vec<String>, usize, Vec<usize>);

/// Frames read on each of the five paths for `secs` seconds, and the real
/// time from the first handshake to the end of reading.
async fn read_all(
    sim: &SimulatorHandle,
    secs: u64,
    count_only: bool,
) -> (Vec<PathRead>, Vec<Ws>, Duration) {
    let started = Instant::now();
    let mut sockets = Vec::new();
    for source in SOURCES {
        sockets.push((source, connect(sim, source).await));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|(source, mut ws)| {
            tokio::spawn(async move {
                let mut kept = Vec::new();
                let mut n = 0usize;
                let (mut batches, mut batch) = (Vec::new(), (None, 0usize));
                // The deadline is checked on every frame too: an unpaced
                // stream can keep the socket's buffer full, and then the
                // read never waits long enough for the timeout to fire.
                while tokio::time::Instant::now() < deadline {
                    let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await else {
                        break;
                    };
                    if let Message::Text(t) = msg.expect("ws error") {
                        n += 1;
                        if let Some(sent) = send_time_in(&t) {
                            if batch.0 != Some(sent) {
                                if batch.1 > 0 {
                                    batches.push(batch.1);
                                }
                                batch = (Some(sent), 0);
                            }
                            batch.1 += 1;
                        }
                        if !count_only {
                            kept.push(t.to_string());
                        }
                    }
                }
                (source.to_string(), kept, n, batches, ws)
            })
        })
        .collect();
    let mut out = Vec::new();
    let mut open = Vec::new();
    for t in tasks {
        let (source, kept, n, batches, ws) = t.await.expect("reader");
        out.push((source, kept, n, batches));
        open.push(ws);
    }
    (out, open, started.elapsed())
}

#[tokio::test]
async fn paced_firehose_streams_distinct_timestamped_records_of_every_source() {
    let sim = spawn(args(2000.0)).await.expect("spawn");
    let started_us = chrono::Utc::now().timestamp_micros();
    let (per_source, sockets, elapsed) = read_all(&sim, 2, false).await;
    let now_us = chrono::Utc::now().timestamp_micros();

    let mut total = 0usize;
    let mut last_sent = started_us;
    for (source, frames, _, _) in &per_source {
        assert!(!frames.is_empty(), "no {source} frames");
        let bytes: usize = frames.iter().map(String::len).sum();
        eprintln!(
            "{source}: {} frames, {} bytes each on average",
            frames.len(),
            bytes / frames.len()
        );
        total += frames.len();
        let ds: DataSource = source.parse().expect("source");
        let mut keys = HashSet::new();
        let mut event_ids = HashSet::new();
        for text in frames {
            let rec = normalize_live(ds, text.as_bytes())
                .unwrap_or_else(|e| panic!("{source} frame rejected: {e}\n{text}"));
            assert_eq!(
                rec.unknown_field_count(),
                0,
                "{source}: unknown fields {:?}",
                rec.extra
            );
            let key = rec.partition_key().expect("identity present");
            let sent = firehose_send_time_us(&key)
                .unwrap_or_else(|| panic!("{source}: identity {key} has no send time"));
            assert!(
                (started_us..=now_us).contains(&sent),
                "{source}: send time {sent} is not within the read ({started_us}..{now_us})"
            );
            last_sent = last_sent.max(sent);
            assert!(
                keys.insert(key.clone()),
                "{source}: identity {key} repeated"
            );
            assert!(
                event_ids.insert(rec.event_id()),
                "{source}: event id repeated"
            );
        }
    }
    let expected = 2000.0 * elapsed.as_secs_f64();
    eprintln!("paced: {total} frames in {elapsed:?} (expected about {expected:.0})");
    // Pacing never sends ahead of the rate: by the last send time no more
    // frames went out than 2000/s allows since the first handshake (the
    // schedule's rounding and one tick per socket allowed). A slow machine
    // sends fewer, never more.
    let allowed = 2000.0 * (last_sent - started_us) as f64 / 1e6 * 1.05 + 50.0;
    assert!(
        (total as f64) <= allowed,
        "{total} frames sent within {} µs: ahead of 2000/s (at most {allowed:.0})",
        last_sent - started_us
    );
    let stats = sim.stats();
    for (source, frames, _, _) in &per_source {
        assert!(
            stats.frames_delivered[source.as_str()] >= frames.len() as u64,
            "{source}: {stats:?}"
        );
        assert!(stats.frames_pushed[source.as_str()] >= frames.len() as u64);
    }
    assert_eq!(stats.connections_open, 5);

    // shutdown still closes every socket with 1001 (after what is in flight)
    sim.shutdown_token().cancel();
    for mut ws in sockets {
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("close in time")
            {
                Some(Ok(Message::Text(_))) => continue,
                Some(Ok(Message::Close(frame))) => break frame,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    }
    sim.join().await.expect("clean stop");
}

// Two workers: the simulator's writers and the readers run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_firehose_is_limited_by_the_reader_only() {
    let sim = spawn(args(0.0)).await.expect("spawn");
    let (per_source, sockets, elapsed) = read_all(&sim, 2, true).await;
    let counts: HashMap<String, usize> = per_source
        .iter()
        .map(|(s, _, n, _)| (s.clone(), *n))
        .collect();
    let total: usize = counts.values().sum();
    eprintln!("unpaced: {total} frames in {elapsed:?}: {counts:?}");
    assert!(
        counts.values().all(|n| *n > 0),
        "every source streams: {counts:?}"
    );
    // Nothing waits for a schedule: every write batch goes out full, one
    // after the other, however fast the reader takes them.
    for (source, _, _, batches) in &per_source {
        let sizes: HashSet<usize> = batches.iter().copied().collect();
        if source.starts_with("profile") {
            assert!(batches.is_empty(), "{source}: no id_call identity");
            continue;
        }
        assert!(
            sizes.len() == 1 && batches.iter().all(|b| *b > 1),
            "{source}: write batches of {sizes:?} frames, not all full"
        );
    }
    assert_eq!(sim.stats().lagging_clients_disconnected, 0);
    drop(sockets);
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_still_apply_in_firehose_mode() {
    let sim = spawn(SimulateArgs {
        malformed_share: 0.3,
        close_every: Some(Duration::from_secs(1)),
        invalid_paths: vec!["profile_live".into()],
        ..args(500.0)
    })
    .await
    .expect("spawn");

    let mut invalid = connect(&sim, "profile_live").await;
    let first = tokio::time::timeout(Duration::from_secs(10), invalid.next())
        .await
        .expect("frame in time");
    assert!(
        matches!(&first, Some(Ok(Message::Text(t))) if t.as_str() == "Invalid path."),
        "{first:?}"
    );

    let mut ws = connect(&sim, "calls").await;
    let (mut good, mut bad) = (0usize, 0usize);
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("--close-every closes in time")
        {
            Some(Ok(Message::Text(t))) => match normalize_live(DataSource::Calls, t.as_bytes()) {
                Ok(rec) if rec.unknown_field_count() == 0 => good += 1,
                _ => bad += 1,
            },
            Some(Ok(Message::Binary(_))) => bad += 1,
            Some(Ok(Message::Close(frame))) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    assert!(good > 0 && bad > 0, "good {good}, malformed {bad}");
    let stats = sim.stats();
    assert!(stats.sockets_closed_by_fault >= 1, "{stats:?}");
    assert!(
        stats.malformed_frames.values().sum::<u64>() > 0,
        "{stats:?}"
    );
    assert!(stats.records_replaced["calls"] > 0, "{stats:?}");
    assert_eq!(stats.invalid_paths, 1);
    sim.shutdown().await;
}
