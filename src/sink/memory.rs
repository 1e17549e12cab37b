//! A scripted in-memory [`Sink`], the sink of the fast tests.
//!
//! It keeps every message handed to it, in order, and lets a test decide
//! what the "broker" answers to each one: an ack at once or after some
//! tokio time, a retryable or permanent refusal, a refusal for its size, an
//! ack held until the test settles it, or a `send` that fails outright. With
//! paused tokio time (`#[tokio::test(start_paused = true)]`) a test of the
//! publisher or the intake runs in milliseconds and its waits are exact.
//!
//! It stands in for a broker only where the test is about the relay's own
//! logic. What a broker does (partitioning, dedup, limits, reconnects) is
//! tested against real Kafka and NATS servers in `tests/`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::{
    AckFuture, EventIdScan, NewestIds, OutboundMessage, Sink, SinkError, SinkErrorKind, StateStore,
};

/// What the scripted broker answers to one `send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged as soon as the ack is awaited.
    Ack,
    /// Acknowledged after this much tokio time.
    AckAfter(Duration),
    /// Taken, then refused at the ack with this kind
    /// ([`SinkErrorKind::Unavailable`] is retryable, the others are not).
    Refuse(SinkErrorKind),
    /// `send` itself fails with this kind (the client refuses to queue it).
    SendFails(SinkErrorKind),
    /// The ack waits until the test settles it ([`MemorySink::ack_held`],
    /// [`MemorySink::refuse_held`]).
    Hold,
}

/// One call of [`Sink::send`], as the sink saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: OutboundMessage,
    /// Tokio time of the call (exact under paused time).
    pub at: Instant,
    /// What the script answered.
    pub outcome: Outcome,
}

/// An ack the test settles.
struct Held {
    event_id: String,
    settle: oneshot::Sender<Result<(), SinkError>>,
}

#[derive(Default)]
struct State {
    /// Outcomes for any message, in the order of the sends.
    script: VecDeque<Outcome>,
    /// Outcomes for one event id, taken before the general script.
    script_for: HashMap<String, VecDeque<Outcome>>,
    /// Answer once the scripts are used up (`None`: [`Outcome::Ack`]).
    default: Option<Outcome>,
    sent: Vec<Sent>,
    /// Acknowledged messages, in the order their acks completed, with
    /// their broker time (Unix ms).
    acked: Vec<(OutboundMessage, i64)>,
    held: VecDeque<Held>,
    /// Acks handed out and not yet completed (or dropped).
    unsettled: usize,
    prepared: Vec<Vec<String>>,
    flushes: Vec<Duration>,
    health_checks: u64,
    unhealthy: Option<String>,
    known_max: Option<usize>,
    broker_max: Option<usize>,
    stores: Option<HashMap<String, Arc<MemoryStateStore>>>,
}

/// The scripted sink; see the module docs. A handle: clones share one
/// "broker", so a test keeps one and hands another (as `Arc<dyn Sink>`) to
/// the code under test.
#[derive(Clone, Default)]
pub struct MemorySink {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change a test may wait for.
    changed: watch::Sender<u64>,
    /// While true, `send` waits (the client's own buffer is full).
    paused: watch::Sender<bool>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            state: Mutex::default(),
            changed: watch::Sender::new(0),
            paused: watch::Sender::new(false),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

impl MemorySink {
    /// A sink that acknowledges everything at once.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn bump(&self) {
        self.shared.bump();
    }

    // ---- scripting -------------------------------------------------------

    /// Answers the next send without a script of its own with `outcome`
    /// (outcomes queue up in the order given).
    pub fn script(&self, outcome: Outcome) {
        self.lock().script.push_back(outcome);
    }

    /// Answers the next sends of `event_id` with `outcomes`, in turn.
    pub fn script_for(&self, event_id: &str, outcomes: impl IntoIterator<Item = Outcome>) {
        self.lock()
            .script_for
            .entry(event_id.to_string())
            .or_default()
            .extend(outcomes);
    }

    /// The answer once the scripts are used up (initially [`Outcome::Ack`]).
    pub fn set_default(&self, outcome: Outcome) {
        self.lock().default = Some(outcome);
    }

    /// The limit [`Sink::max_message_bytes`] reports for every destination.
    pub fn set_max_message_bytes(&self, max: Option<usize>) {
        self.lock().known_max = max;
    }

    /// The limit the "broker" enforces: a larger message is refused at the
    /// ack as [`SinkErrorKind::TooLarge`], whatever the script says.
    pub fn set_broker_limit(&self, max: Option<usize>) {
        self.lock().broker_max = max;
    }

    /// What [`Sink::check_health`] answers: `None` healthy, `Some(why)` not.
    pub fn set_unhealthy(&self, why: Option<&str>) {
        self.lock().unhealthy = why.map(str::to_string);
    }

    /// Makes [`Sink::state_store`] open in-memory stores (by default the
    /// sink has none, like stdout).
    pub fn enable_state_store(&self) {
        self.lock().stores.get_or_insert_with(HashMap::new);
    }

    /// Puts `message` on the "broker" as if published at `timestamp_ms`
    /// before the test (what [`Sink::recent_event_ids`] reads back).
    pub fn preload(&self, message: OutboundMessage, timestamp_ms: i64) {
        self.lock().acked.push((message, timestamp_ms));
    }

    /// Makes `send` wait from now on, as a client whose buffer is full.
    pub fn pause_sends(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Lets waiting and later sends through.
    pub fn resume_sends(&self) {
        self.shared.paused.send_replace(false);
    }

    // ---- held acks -------------------------------------------------------

    /// Event ids of the acks held, oldest first.
    pub fn held(&self) -> Vec<String> {
        self.lock()
            .held
            .iter()
            .map(|h| h.event_id.clone())
            .collect()
    }

    /// Acknowledges the oldest held ack of `event_id`; false if none is held.
    pub fn ack_held(&self, event_id: &str) -> bool {
        self.settle_held(event_id, Ok(()))
    }

    /// Refuses the oldest held ack of `event_id` with `kind`.
    pub fn refuse_held(&self, event_id: &str, kind: SinkErrorKind) -> bool {
        self.settle_held(event_id, Err(scripted_error(kind)))
    }

    /// Acknowledges every held ack; returns how many there were.
    pub fn ack_all_held(&self) -> usize {
        let held: Vec<Held> = self.lock().held.drain(..).collect();
        let n = held.len();
        for h in held {
            let _ = h.settle.send(Ok(()));
        }
        n
    }

    fn settle_held(&self, event_id: &str, result: Result<(), SinkError>) -> bool {
        let held = {
            let mut s = self.lock();
            let Some(i) = s.held.iter().position(|h| h.event_id == event_id) else {
                return false;
            };
            s.held.remove(i).expect("position is in range")
        };
        let _ = held.settle.send(result);
        true
    }

    // ---- what happened ---------------------------------------------------

    /// Every send, in order (retries included).
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// Event ids of every send, in order (retries included).
    pub fn sent_ids(&self) -> Vec<String> {
        self.lock()
            .sent
            .iter()
            .map(|s| s.message.event_id.clone())
            .collect()
    }

    /// Messages acknowledged, in the order their acks completed (preloaded
    /// ones first).
    pub fn acked(&self) -> Vec<OutboundMessage> {
        self.lock().acked.iter().map(|(m, _)| m.clone()).collect()
    }

    /// Event ids of [`MemorySink::acked`].
    pub fn acked_ids(&self) -> Vec<String> {
        self.lock()
            .acked
            .iter()
            .map(|(m, _)| m.event_id.clone())
            .collect()
    }

    /// Acks handed out and not completed yet.
    pub fn unsettled(&self) -> usize {
        self.lock().unsettled
    }

    /// The destinations of every [`Sink::prepare`] call.
    pub fn prepared(&self) -> Vec<Vec<String>> {
        self.lock().prepared.clone()
    }

    /// The timeout of every [`Sink::flush`] call.
    pub fn flushes(&self) -> Vec<Duration> {
        self.lock().flushes.clone()
    }

    /// How often [`Sink::check_health`] was called.
    pub fn health_checks(&self) -> u64 {
        self.lock().health_checks
    }

    /// Waits until `condition` holds, at most `timeout` of tokio time;
    /// false if it did not. Re-checked on every send, ack and settle.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&MemorySink) -> bool,
    ) -> bool {
        let mut changes = self.shared.changed.subscribe();
        tokio::time::timeout(timeout, async {
            while !condition(self) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && condition(self)
    }

    // ---- the sink's side -------------------------------------------------

    /// The next scripted answer for `m`.
    fn next_outcome(&self, s: &mut State, m: &OutboundMessage) -> Outcome {
        let scripted = s
            .script_for
            .get_mut(&m.event_id)
            .and_then(VecDeque::pop_front)
            .or_else(|| s.script.pop_front())
            .unwrap_or_else(|| s.default.clone().unwrap_or(Outcome::Ack));
        match s.broker_max {
            Some(max) if m.size() > max && !matches!(scripted, Outcome::SendFails(_)) => {
                Outcome::Refuse(SinkErrorKind::TooLarge)
            }
            _ => scripted,
        }
    }

    async fn wait_while_paused(&self) {
        let mut paused = self.shared.paused.subscribe();
        let _ = paused.wait_for(|p| !*p).await;
    }

    /// The ack future for one accepted message: settles as `outcome` says,
    /// records an ack, and keeps [`MemorySink::unsettled`] true even when
    /// the caller drops it.
    fn ack_future(&self, m: OutboundMessage, outcome: Outcome) -> AckFuture {
        let held = if outcome == Outcome::Hold {
            let (tx, rx) = oneshot::channel();
            self.lock().held.push_back(Held {
                event_id: m.event_id.clone(),
                settle: tx,
            });
            Some(rx)
        } else {
            None
        };
        let guard = Unsettled(self.shared.clone());
        Box::pin(async move {
            let result = match (outcome, held) {
                (Outcome::AckAfter(d), _) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
                (Outcome::Refuse(kind), _) => Err(scripted_error(kind)),
                (_, Some(rx)) => rx.await.unwrap_or_else(|_| {
                    Err(SinkError::new(
                        SinkErrorKind::Unavailable,
                        "held ack dropped",
                    ))
                }),
                _ => Ok(()),
            };
            if result.is_ok() {
                let now = chrono::Utc::now().timestamp_millis();
                guard.0.lock().acked.push((m, now));
            }
            drop(guard);
            result
        })
    }
}

/// Counts an ack as unsettled until it completes or is dropped.
struct Unsettled(Arc<Shared>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.0.lock().unsettled -= 1;
        self.0.bump();
    }
}

fn scripted_error(kind: SinkErrorKind) -> SinkError {
    SinkError::new(kind, format!("scripted {kind:?}"))
}

#[async_trait::async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn prepare(&self, destinations: &[String]) -> Result<(), SinkError> {
        self.lock().prepared.push(destinations.to_vec());
        Ok(())
    }

    async fn send(&self, message: &OutboundMessage) -> Result<AckFuture, SinkError> {
        self.wait_while_paused().await;
        let outcome = {
            let mut s = self.lock();
            let outcome = self.next_outcome(&mut s, message);
            s.sent.push(Sent {
                message: message.clone(),
                at: Instant::now(),
                outcome: outcome.clone(),
            });
            if !matches!(outcome, Outcome::SendFails(_)) {
                s.unsettled += 1;
            }
            outcome
        };
        let result = match outcome {
            Outcome::SendFails(kind) => Err(scripted_error(kind)),
            outcome => Ok(self.ack_future(message.clone(), outcome)),
        };
        self.bump();
        result
    }

    fn max_message_bytes(&self, _destination: &str) -> Option<usize> {
        self.lock().known_max
    }

    /// Waits until every ack handed out has completed, at most `timeout`.
    async fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.lock().flushes.push(timeout);
        self.bump();
        if self.wait_until(timeout, |s| s.unsettled() == 0).await {
            return Ok(());
        }
        Err(SinkError::new(
            SinkErrorKind::Unavailable,
            format!(
                "flush timed out with {} ack(s) outstanding",
                self.unsettled()
            ),
        ))
    }

    async fn check_health(&self) -> Result<(), SinkError> {
        let mut s = self.lock();
        s.health_checks += 1;
        match &s.unhealthy {
            None => Ok(()),
            Some(why) => Err(SinkError::new(SinkErrorKind::Unavailable, why.clone())),
        }
    }

    async fn state_store(&self, name: &str) -> Result<Option<Arc<dyn StateStore>>, SinkError> {
        let mut s = self.lock();
        let Some(stores) = s.stores.as_mut() else {
            return Ok(None);
        };
        let store = stores
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(MemoryStateStore::new(name)))
            .clone();
        Ok(Some(store))
    }

    /// The acknowledged (and preloaded) messages of `destinations` since
    /// `since_ms`, as a broker would return them.
    async fn recent_event_ids(
        &self,
        destinations: &[String],
        since_ms: i64,
        limit: usize,
        _timeout: Duration,
    ) -> Result<EventIdScan, SinkError> {
        let s = self.lock();
        let mut newest = NewestIds::new(limit);
        for (m, at) in &s.acked {
            if *at >= since_ms && destinations.contains(&m.destination) {
                newest.push(*at, m.event_id.clone(), m.match_key().map(str::to_string));
            }
        }
        Ok(newest.into_scan(true))
    }
}

/// An in-memory [`StateStore`] (see [`MemorySink::enable_state_store`]).
pub struct MemoryStateStore {
    name: String,
    values: Mutex<HashMap<String, Bytes>>,
}

impl MemoryStateStore {
    pub fn new(name: &str) -> Self {
        MemoryStateStore {
            name: name.to_string(),
            values: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStateStore {
    fn describe(&self) -> String {
        format!("in-memory store {}", self.name)
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        Ok(values.get(key).cloned())
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), SinkError> {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.insert(key.to_string(), value);
        Ok(())
    }
}
