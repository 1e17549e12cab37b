//! The on-disk spool: where messages go when the publisher's in-memory queue
//! is full (a broker outage), so the sockets keep being read — pausing them
//! would make Telavox drop us.
//!
//! Order is kept: once a message has been spooled, every later message is
//! spooled too until the spool has been drained back into the queue, in the
//! order written. Segments are append-only files of framed records
//! (`len u32 | check [4] | body`, `check` = the CRC32C of the body, little
//! endian); a torn or corrupt tail (a crash mid-write) is detected, counted
//! and skipped. What a previous process left behind is drained first on
//! start. Past `relay.spool_max_bytes` the spool stops taking messages and
//! the queue applies back-pressure, as without a spool.
//!
//! Writing, fsyncing and reading segments run on blocking threads, never on
//! the runtime's: an fsync can take milliseconds. The common case (no spool
//! in use and room in the queue) stays on the caller's thread.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::model::DataSource;
use crate::ops::internal_events::{
    SpoolLeftOver, SpoolRecordSkipped, SpoolSizeChanged, SpoolWriteFailed,
};
use crate::ops::Metrics;
use crate::publish::outgoing::{BatchTracker, Origin, Outgoing, StageTimes};
use crate::sink::OutboundMessage;

/// A new segment file is started past this size.
const SEGMENT_BYTES: u64 = 64 << 20;

/// The on-disk spool behind the publisher's queue.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
    /// fsync every record (slower; survives a power cut, not only a crash).
    pub fsync: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("relay.spool_dir {path}: {message}")]
pub struct SpoolError {
    path: PathBuf,
    message: String,
}

fn origin_code(o: Origin) -> u8 {
    match o {
        Origin::Live => 0,
        Origin::Backfill => 1,
        Origin::Replay => 2,
        Origin::DeadLetter => 3,
        Origin::Control => 4,
    }
}

fn origin_from_code(c: u8) -> Origin {
    [
        Origin::Live,
        Origin::Backfill,
        Origin::Replay,
        Origin::DeadLetter,
        Origin::Control,
    ][c.min(4) as usize]
}

fn put(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

/// Serializes what is needed to publish `o` again (trackers and arrival
/// instants stay in memory, see [`Spool`]).
fn encode(seq: u64, o: &Outgoing) -> Vec<u8> {
    let m = &o.message;
    let mut b = Vec::with_capacity(m.payload.len() + 256);
    b.extend_from_slice(&seq.to_le_bytes());
    b.push(origin_code(o.origin));
    b.push(o.source as u8);
    put(&mut b, o.tenant.as_bytes());
    put(&mut b, m.destination.as_bytes());
    match &m.key {
        Some(k) => {
            b.push(1);
            put(&mut b, k.as_bytes());
        }
        None => b.push(0),
    }
    b.extend_from_slice(&(m.headers.len() as u32).to_le_bytes());
    for (k, v) in &m.headers {
        put(&mut b, k.as_bytes());
        put(&mut b, v.as_bytes());
    }
    put(&mut b, &m.payload);
    put(&mut b, m.event_id.as_bytes());
    b
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, rest) = self.0.split_at(n);
        let out = a;
        self.0 = rest;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }
}

fn decode(body: &[u8]) -> Option<(u64, Outgoing)> {
    let mut c = Cursor(body);
    let seq = u64::from_le_bytes(c.take(8)?.try_into().ok()?);
    let origin = origin_from_code(c.take(1)?[0]);
    let source = *DataSource::ALL.get(c.take(1)?[0] as usize)?;
    let tenant: Arc<str> = Arc::from(c.string()?.as_str());
    let destination = c.string()?;
    let key = match c.take(1)?[0] {
        1 => Some(c.string()?),
        _ => None,
    };
    let n = c.u32()? as usize;
    let mut headers = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        headers.push((c.string()?.into(), c.string()?.into()));
    }
    let payload = Bytes::from(c.bytes()?);
    let event_id = c.string()?;
    let message = OutboundMessage {
        destination,
        key,
        headers,
        payload,
        event_id,
    };
    Some((seq, Outgoing::new(message, tenant, source, origin)))
}

/// A record's checksum. It only has to catch a record torn by a crash
/// mid-write (or a flipped bit), not tampering: a CRC32C does that, at a
/// fraction of a cryptographic hash's cost.
fn check(body: &[u8]) -> [u8; 4] {
    crc32c::crc32c(body).to_le_bytes()
}

struct Segment {
    id: u64,
    path: PathBuf,
}

struct State {
    /// Segments oldest first; the last one is written to.
    segments: VecDeque<Segment>,
    writer: Option<BufWriter<File>>,
    written_in_last: u64,
    reader: Option<BufReader<File>>,
    bytes: u64,
    next_seq: u64,
    /// Trackers and hand-over times of records spooled by this process.
    memory: HashMap<u64, (Option<Arc<BatchTracker>>, Option<StageTimes>)>,
    corrupt: u64,
}

/// The spool; see the module docs.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    fsync: bool,
    state: Mutex<State>,
    /// Records read from disk and not yet all in the queue (order guard).
    in_hand: AtomicBool,
    wake: Notify,
    metrics: Arc<Metrics>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.spool"))
}

impl Spool {
    /// Opens (creating) the directory; what a previous run left is queued first.
    pub fn open(
        dir: impl Into<PathBuf>,
        max_bytes: u64,
        fsync: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Spool>, SpoolError> {
        let dir = dir.into();
        let err = |e: std::io::Error| SpoolError {
            path: dir.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let mut segments = Vec::new();
        let mut bytes = 0;
        for entry in std::fs::read_dir(&dir).map_err(err)? {
            let path = entry.map_err(err)?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".spool"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id {
                bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                segments.push(Segment { id, path });
            }
        }
        segments.sort_by_key(|s| s.id);
        let left = segments.len();
        let spool = Arc::new(Spool {
            dir,
            max_bytes,
            fsync,
            state: Mutex::new(State {
                segments: segments.into(),
                writer: None,
                written_in_last: SEGMENT_BYTES, // never append to an old segment
                reader: None,
                bytes,
                next_seq: 0,
                memory: HashMap::new(),
                corrupt: 0,
            }),
            in_hand: AtomicBool::new(false),
            wake: Notify::new(),
            metrics,
        });
        if left > 0 {
            SpoolLeftOver {
                segments: left,
                bytes,
            }
            .emit(&spool.metrics);
        }
        SpoolSizeChanged { bytes }.emit(&spool.metrics);
        Ok(spool)
    }

    /// [`Spool::open`] on a blocking thread (it lists and sizes the segments).
    pub async fn open_off_runtime(
        settings: SpoolSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Spool>, SpoolError> {
        let dir = settings.dir.clone();
        tokio::task::spawn_blocking(move || {
            Spool::open(settings.dir, settings.max_bytes, settings.fsync, metrics)
        })
        .await
        .unwrap_or_else(|e| {
            Err(SpoolError {
                path: dir,
                message: e.to_string(),
            })
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, unless a blocking thread holds it (writing, maybe fsyncing).
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// True while messages must go through the spool to keep their order:
    /// a segment exists until every record in it has been read, and read
    /// records are in hand until all are in the queue.
    fn active(&self, s: &State) -> bool {
        !s.segments.is_empty() || self.in_hand.load(Ordering::SeqCst)
    }

    /// Hands `o` to the queue when nothing is spooled and it has room, else
    /// appends it (blocking: runs on a blocking thread).
    fn offer(&self, tx: &mpsc::Sender<Outgoing>, o: Outgoing) -> Offer {
        let mut s = self.lock();
        let o = if self.active(&s) {
            o
        } else {
            match tx.try_send(o) {
                Ok(()) => return Offer::Taken,
                Err(mpsc::error::TrySendError::Closed(_)) => return Offer::Closed,
                Err(mpsc::error::TrySendError::Full(back)) => back,
            }
        };
        match self.append(&mut s, o) {
            Ok(()) => Offer::Taken,
            Err(back) => Offer::Refused(back),
        }
    }

    /// Up to `max` records in order, marked in hand while there are any
    /// (blocking: runs on a blocking thread).
    fn read_batch(&self, max: usize) -> Vec<Outgoing> {
        let mut s = self.lock();
        let mut batch = Vec::new();
        while batch.len() < max {
            match self.read_record(&mut s) {
                Readout::Record(o) => batch.push(o),
                // A segment is removed only once everything read from it
                // was handed on: the drain asks again only after its batch
                // went into the queue, and a batch lost with the queue (at
                // shutdown) is then still on disk for the next start.
                Readout::SegmentEnd if batch.is_empty() => {
                    if !self.finish_segment(&mut s) {
                        break;
                    }
                }
                Readout::SegmentEnd | Readout::Empty => break,
            }
        }
        self.in_hand.store(!batch.is_empty(), Ordering::SeqCst);
        batch
    }

    /// Appends `o`; gives it back when the spool is full or cannot write.
    fn append(&self, s: &mut State, o: Outgoing) -> Result<(), Box<Outgoing>> {
        let seq = s.next_seq;
        let body = encode(seq, &o);
        let frame_len = 8 + body.len() as u64;
        if s.bytes + frame_len > self.max_bytes {
            return Err(Box::new(o));
        }
        if s.writer.is_none() || s.written_in_last >= SEGMENT_BYTES {
            let id = s.segments.back().map_or(0, |x| x.id + 1);
            let path = segment_path(&self.dir, id);
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    if let Some(mut w) = s.writer.take() {
                        let _ = w.flush();
                    }
                    s.writer = Some(BufWriter::new(f));
                    s.segments.push_back(Segment { id, path });
                    s.written_in_last = 0;
                }
                Err(e) => {
                    SpoolWriteFailed {
                        step: "create",
                        error: &e,
                    }
                    .emit(&self.metrics);
                    return Err(Box::new(o));
                }
            }
        }
        let w = s.writer.as_mut().expect("writer opened above");
        let ok = w
            .write_all(&(body.len() as u32).to_le_bytes())
            .and_then(|_| w.write_all(&check(&body)))
            .and_then(|_| w.write_all(&body))
            .and_then(|_| w.flush())
            .and_then(|_| {
                if self.fsync {
                    w.get_ref().sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(e) = ok {
            SpoolWriteFailed {
                step: "write",
                error: &e,
            }
            .emit(&self.metrics);
            return Err(Box::new(o));
        }
        s.next_seq += 1;
        s.written_in_last += frame_len;
        s.bytes += frame_len;
        s.memory.insert(seq, (o.tracker, o.stages));
        SpoolSizeChanged { bytes: s.bytes }.emit(&self.metrics);
        self.wake.notify_one();
        Ok(())
    }

    /// Counts and logs a record that cannot be read back.
    fn skipped(&self, s: &mut State, segment: &Path, what: &str) {
        s.corrupt += 1;
        SpoolRecordSkipped { segment, what }.emit(&self.metrics);
    }

    /// Reads the next record in order (removing drained segments).
    #[cfg(test)]
    fn read_next(&self, s: &mut State) -> Option<Outgoing> {
        loop {
            match self.read_record(s) {
                Readout::Record(o) => return Some(o),
                Readout::SegmentEnd => {
                    if !self.finish_segment(s) {
                        return None;
                    }
                }
                Readout::Empty => return None,
            }
        }
    }

    /// Reads the next record of the front segment, skipping corrupt ones;
    /// at its end, leaves the segment in place for [`Spool::finish_segment`].
    fn read_record(&self, s: &mut State) -> Readout {
        loop {
            let Some(front) = s.segments.front() else {
                return Readout::Empty;
            };
            let front_path = front.path.clone();
            let is_last = s.segments.len() == 1;
            // The segment being written ends where the writer is; any other
            // one ending mid-record was torn by a crash.
            let live_segment = is_last && s.writer.is_some();
            if s.reader.is_none() {
                if is_last {
                    if let Some(w) = s.writer.as_mut() {
                        let _ = w.flush();
                    }
                }
                match File::open(&front_path) {
                    Ok(f) => s.reader = Some(BufReader::new(f)),
                    Err(_) => {
                        s.segments.pop_front();
                        continue;
                    }
                }
            }
            let r = s.reader.as_mut().expect("opened above");
            let mut head = [0u8; 8];
            let got = read_full(r, &mut head);
            if got == 8 {
                let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
                // Check the length before trusting it with an allocation.
                let mut body = vec![0u8; len.min(SEGMENT_BYTES as usize)];
                if len <= SEGMENT_BYTES as usize && read_full(r, &mut body) == len {
                    if check(&body) == head[4..8] {
                        if let Some((seq, mut o)) = decode(&body) {
                            s.bytes = s.bytes.saturating_sub(8 + len as u64);
                            if let Some((tracker, stages)) = s.memory.remove(&seq) {
                                o.tracker = tracker;
                                o.stages = stages;
                            }
                            SpoolSizeChanged { bytes: s.bytes }.emit(&self.metrics);
                            return Readout::Record(o);
                        }
                    }
                    self.skipped(s, &front_path, "corrupt record (checksum mismatch)");
                    continue;
                }
                if !live_segment {
                    self.skipped(s, &front_path, "torn record at the end of a segment");
                }
            } else if got > 0 && !live_segment {
                self.skipped(s, &front_path, "torn record at the end of a segment");
            }
            // End of this segment (or a torn tail).
            if live_segment {
                // The live segment: everything written so far was read.
                // New records start a fresh segment so that this one can go.
                s.writer = None;
                s.written_in_last = SEGMENT_BYTES;
            }
            return Readout::SegmentEnd;
        }
    }

    /// Removes the front segment, read to its end; false when none is left.
    fn finish_segment(&self, s: &mut State) -> bool {
        let Some(front) = s.segments.pop_front() else {
            return false;
        };
        s.reader = None;
        let _ = std::fs::remove_file(&front.path);
        if s.segments.is_empty() {
            s.bytes = 0;
            SpoolSizeChanged { bytes: 0 }.emit(&self.metrics);
            return false;
        }
        true
    }
}

/// What one read of the spool found.
enum Readout {
    Record(Outgoing),
    /// The front segment is read to its end (or to a torn tail).
    SegmentEnd,
    /// Nothing is spooled.
    Empty,
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// The way into the publisher's queue: direct while there is room, through
/// the spool (in order) once there is not.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Outgoing>,
    spool: Option<Arc<Spool>>,
}

impl Intake {
    /// Without a spool: plain back-pressure.
    pub fn direct(tx: mpsc::Sender<Outgoing>) -> Intake {
        Intake { tx, spool: None }
    }

    /// With a spool, and the task that drains it into `tx`.
    pub fn spooled(tx: mpsc::Sender<Outgoing>, spool: Arc<Spool>) -> Intake {
        tokio::spawn(drain(tx.downgrade(), spool.clone()));
        Intake {
            tx,
            spool: Some(spool),
        }
    }

    /// Hands `o` on; Err when the publisher is gone.
    pub async fn send(&self, o: Outgoing) -> Result<(), ()> {
        let Some(spool) = &self.spool else {
            return self.tx.send(o).await.map_err(|_| ());
        };
        let mut o = o;
        loop {
            // The common case, here: nothing spooled and room in the queue.
            // (A blocking thread holding the state is writing: spool too.)
            if let Some(s) = spool.try_lock() {
                if !spool.active(&s) {
                    match self.tx.try_send(o) {
                        Ok(()) => return Ok(()),
                        Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
                        Err(mpsc::error::TrySendError::Full(back)) => o = back,
                    }
                }
            }
            let (spooler, tx) = (spool.clone(), self.tx.clone());
            match tokio::task::spawn_blocking(move || spooler.offer(&tx, o)).await {
                Ok(Offer::Taken) => return Ok(()),
                Ok(Offer::Closed) | Err(_) => return Err(()),
                Ok(Offer::Refused(back)) => o = *back,
            }
            // Spool full: back-pressure, as without one.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What became of a message offered to the spool.
enum Offer {
    /// In the queue or in the spool.
    Taken,
    /// The queue is closed: the publisher is gone.
    Closed,
    /// The spool is full or cannot write: try again later.
    Refused(Box<Outgoing>),
}

/// Records read from disk at a time (one blocking call).
const READ_BATCH: usize = 256;

/// Moves spooled records into the queue, oldest first, until the queue closes.
async fn drain(tx: mpsc::WeakSender<Outgoing>, spool: Arc<Spool>) {
    loop {
        // Nothing on disk: no blocking thread needed to know it.
        let idle = spool.try_lock().is_some_and(|s| s.segments.is_empty());
        let batch = if idle {
            Vec::new()
        } else {
            let reader = spool.clone();
            tokio::task::spawn_blocking(move || reader.read_batch(READ_BATCH))
                .await
                .unwrap_or_default()
        };
        if batch.is_empty() {
            if tx.upgrade().is_none() {
                return;
            }
            tokio::select! {
                _ = spool.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            continue;
        }
        let Some(tx) = tx.upgrade() else { return };
        for o in batch {
            if tx.send(o).await.is_err() {
                spool.in_hand.store(false, Ordering::SeqCst);
                return;
            }
        }
        spool.in_hand.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> Outgoing {
        let message = OutboundMessage {
            destination: "telavox.studio.calls.v1".into(),
            key: Some(format!("call-{}", i % 7)),
            headers: vec![("ce_id".into(), format!("{i:032x}").into())],
            payload: Bytes::from(vec![i as u8; 100 + i % 50]),
            event_id: format!("{i:032x}"),
        };
        Outgoing::record(
            message,
            Arc::from("acme"),
            DataSource::Calls,
            crate::model::Origin::Live,
        )
    }

    #[tokio::test]
    async fn a_full_queue_spills_in_order_and_drains_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let spool = Spool::open(dir.path(), 1 << 30, false, metrics.clone()).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let intake = Intake::spooled(tx, spool.clone());
        for i in 0..500 {
            intake.send(msg(i)).await.unwrap();
        }
        // Nothing read yet: 4 in the queue (and one in hand), the rest on disk.
        assert!(metrics.spool_bytes.get() > 0);
        for i in 0..500 {
            let m = rx.recv().await.unwrap();
            assert_eq!(m.message.event_id, format!("{i:032x}"), "order kept");
            assert_eq!(m.message.payload.len(), 100 + i % 50);
        }
        // The drain lets go of the last batch once it is all in the queue.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while spool.active(&spool.lock()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!spool.active(&spool.lock()), "the spool is empty again");
        assert_eq!(metrics.spool_bytes.get(), 0);
        drop(intake);
    }

    #[tokio::test]
    async fn what_a_previous_run_left_is_drained_first_and_a_torn_tail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        {
            let spool = Spool::open(dir.path(), 1 << 30, true, metrics.clone()).unwrap();
            let mut s = spool.lock();
            for i in 0..10 {
                assert!(spool.append(&mut s, msg(i)).is_ok());
            }
            // A crash mid-write: half a record at the end.
            let mut f = OpenOptions::new()
                .append(true)
                .open(&s.segments[0].path)
                .unwrap();
            f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        }
        // A second segment after the torn one, as a restarted run would write.
        let spool = Spool::open(dir.path(), 1 << 30, false, metrics.clone()).unwrap();
        {
            let mut s = spool.lock();
            assert!(spool.append(&mut s, msg(10)).is_ok());
        }
        let mut got = Vec::new();
        let mut s = spool.lock();
        while let Some(o) = spool.read_next(&mut s) {
            got.push(o.message.event_id);
        }
        let want: Vec<String> = (0..11).map(|i| format!("{i:032x}")).collect();
        assert_eq!(got, want);
        assert_eq!(s.corrupt, 1, "the torn tail is counted");
        assert!(s.segments.is_empty());
    }

    #[test]
    fn the_size_limit_refuses_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1000, false, Arc::new(Metrics::new())).unwrap();
        let mut s = spool.lock();
        let mut taken = 0;
        for i in 0..100 {
            if spool.append(&mut s, msg(i)).is_ok() {
                taken += 1;
            }
        }
        assert!(taken > 0 && taken < 10, "{taken}");
        assert!(s.bytes <= 1000);
    }
}
