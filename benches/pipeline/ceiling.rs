//! The ceiling: the broker's own rate for the relay's messages, sent by a
//! plain publisher in this process through the same sink (no sockets, no
//! normalizing), and the bare async-nats publisher next to it.

use std::time::Instant;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use studio_relay::config::EncodingFormat;
use studio_relay::model::DataSource;

use crate::cost::{per_million, proc_stat, ProcStat};
use crate::opts::Opts;
use crate::setup::{prepared_sink, Broker};

/// One ceiling run: the rate, and the CPU each side spent per event.
#[derive(Debug, Clone, Copy)]
pub struct CeilingSample {
    pub events_per_sec: f64,
    /// This process (the plain publisher), CPU seconds per million events.
    pub publisher_cpu_per_million: f64,
    pub broker_cpu_per_million: f64,
}

/// The broker's own rate for the relay's messages: no sockets, no normalizing.
// `closed_loop`'s sender yields the ack future on purpose: it is awaited later.
#[allow(clippy::async_yields_async)]
pub async fn ceiling(
    broker: &Broker,
    format: EncodingFormat,
    frames: &[(DataSource, Bytes)],
    o: &Opts,
) -> CeilingSample {
    let (sink, messages) = prepared_sink(&broker.sink_config(), format, frames).await;
    // The relay's own ack window (the sink applies its own pending-ack limit too).
    let window = studio_relay::relay::PublisherSettings::default().window;
    closed_loop(broker, window, o, async |sent| {
        let mut m = messages[sent % messages.len()].clone();
        // A new id per lap: JetStream must store every one.
        m.event_id = format!("{}-{}", m.event_id, sent / messages.len());
        let ack = sink.send(&m).await.expect("broker takes the message");
        async move { ack.await.expect("broker acks") }
    })
    .await
}

/// Sends message after message (`send` gets the count sent so far and
/// returns the message's ack) for the warm-up and the measured duration,
/// with at most `window` awaiting their ack. Returns the acknowledged rate
/// and the CPU per event of this process and of the broker, measured after
/// the warm-up.
async fn closed_loop<A: std::future::Future<Output = ()>>(
    broker: &Broker,
    window: usize,
    o: &Opts,
    mut send: impl AsyncFnMut(usize) -> A,
) -> CeilingSample {
    let mut inflight = FuturesUnordered::new();
    let (mut sent, mut acked) = (0usize, 0u64);
    let start = Instant::now();
    let (mut t0, mut a0) = (None, 0u64);
    let (mut publisher0, mut broker0) = (ProcStat::default(), ProcStat::default());
    let end = start + o.warmup + o.duration;
    while Instant::now() < end {
        if t0.is_none() && start.elapsed() >= o.warmup {
            t0 = Some(Instant::now());
            a0 = acked;
            (publisher0, broker0) = (proc_stat(std::process::id()), proc_stat(broker.pid()));
        }
        if inflight.len() < window {
            let next = send(sent);
            tokio::pin!(next);
            // Keep settling acks while the sender makes us wait: a sink's
            // own ack window frees up only as they are settled.
            let ack = loop {
                tokio::select! {
                    ack = &mut next => break ack,
                    Some(()) = inflight.next(), if !inflight.is_empty() => acked += 1,
                }
            };
            inflight.push(ack);
            sent += 1;
        } else if let Some(()) = inflight.next().await {
            acked += 1;
        }
    }
    let t0 = t0.unwrap_or(start);
    let events = (acked - a0) as f64;
    let rate = events / t0.elapsed().as_secs_f64();
    let (publisher1, broker1) = (proc_stat(std::process::id()), proc_stat(broker.pid()));
    while inflight.next().await.is_some() {}
    CeilingSample {
        events_per_sec: rate,
        publisher_cpu_per_million: per_million(publisher1.cpu_secs - publisher0.cpu_secs, events),
        broker_cpu_per_million: per_million(broker1.cpu_secs - broker0.cpu_secs, events),
    }
}

/// The reference publisher: plain async-nats, JetStream, the same
/// payloads and subjects, `Nats-Msg-Id` as the only header, 256 acks
/// pending, and no sink, no CloudEvents headers, no retry bookkeeping. Its
/// rate against the ceiling's shows what the relay's message format and
/// sink cost the broker and the client, apart from the relay's own work.
#[allow(clippy::async_yields_async)] // as in `ceiling`
pub async fn bare_nats_publisher(
    broker: &Broker,
    format: EncodingFormat,
    frames: &[(DataSource, Bytes)],
    o: &Opts,
) -> CeilingSample {
    let Broker::Nats(nats) = broker else {
        panic!("the bare publisher is a NATS client")
    };
    // The stream, as the relay creates it; the sink is not used to send.
    let (sink, messages) = prepared_sink(&broker.sink_config(), format, frames).await;
    drop(sink);
    let client = async_nats::connect(nats.url())
        .await
        .expect("NATS connects");
    let js = async_nats::jetstream::new(client);
    closed_loop(broker, 256, o, async |sent| {
        let m = &messages[sent % messages.len()];
        let mut headers = async_nats::HeaderMap::new();
        let id = format!("{}-{}", m.event_id, sent / messages.len());
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = js
            .publish_with_headers(m.destination.clone(), headers, m.payload.clone())
            .await
            .expect("broker takes the message");
        async move {
            ack.await.expect("broker acks");
        }
    })
    .await
}
