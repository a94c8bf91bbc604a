//! The engine behind one mutex, the wakers of everything waiting on it, and the one driver
//! future per endpoint that moves datagrams, timers and events.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::IoSliceMut;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::BytesMut;
use rustc_hash::FxHashMap;

use kwik_core::{
    DelegationId, Dir, EcnCodepoint, Event, SessionError, SessionHandle, SessionStats, StreamId,
    VarInt,
};

use crate::event::{PATH_EVENT_BACKLOG, PathEvent, TRANSFER_EVENT_BACKLOG, TransferEvent};
use crate::runtime::{AsyncTimer, AsyncUdpSocket, Runtime};

/// Datagram batches received per driver poll before yielding.
const RECV_BATCHES: usize = 16;
/// Transmits sent per driver poll before yielding.
const SEND_BUDGET: usize = 64;
/// Polls in a row a due timer may wait while the socket still holds datagrams: health
/// is judged on what arrived, so a loop that wakes late reads its backlog first, but
/// timers (loss detection, pacing) are not starved by a socket that never drains.
const MAX_TIMER_DEFERRALS: u32 = 8;
/// Most datagrams in one GSO send. More would exceed the 64 KiB a UDP send may carry, and
/// quinn-udp reports that failure (EMSGSIZE) as success: the whole batch would be lost.
const MAX_GSO_SEGMENTS: usize = 10;
const RECV_BUF: usize = 64 * 1024;
/// Datagrams of one GRO batch copied into one allocation. Received stream data is handed
/// out as slices of it, so a slice the application holds keeps its group alive: more
/// datagrams per group save allocator work (one per group, not per datagram) and pin more
/// memory behind a held slice. quinn copies the whole batch at once.
const RECV_GROUP: usize = 4;

/// The tasks waiting to read one stream. Usually one; several when tasks share a stream's
/// receive half (h3-webtransport's `accept_uni` and `accept_bi` both poll the streams whose
/// type is not known yet, each from its own task), and then every one of them must hear of
/// new data: a single waker, replaced by the last task to poll, leaves the others asleep
/// with the stream's news taken by another task.
#[derive(Debug)]
pub(crate) struct StreamWakers {
    first: Waker,
    more: Vec<Waker>,
}

/// Most distinct tasks [`StreamWakers`] remembers beyond the first; the oldest goes.
const MORE_READERS: usize = 8;

impl StreamWakers {
    /// Adds the task of `cx` to the wakers of `stream` in `readers`.
    pub(crate) fn register(
        readers: &mut FxHashMap<StreamId, StreamWakers>,
        stream: StreamId,
        cx: &Context<'_>,
    ) {
        let w = cx.waker();
        match readers.entry(stream) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Self {
                    first: w.clone(),
                    more: Vec::new(),
                });
            }
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let r = e.get_mut();
                if r.first.will_wake(w) || r.more.iter().any(|m| m.will_wake(w)) {
                    return;
                }
                if r.more.len() == MORE_READERS {
                    r.more.remove(0);
                }
                r.more.push(w.clone());
            }
        }
    }

    pub(crate) fn wake(self) {
        self.first.wake();
        for w in self.more {
            w.wake();
        }
    }
}

/// What waits on one session.
#[derive(Debug, Default)]
pub(crate) struct SessionWaiters {
    pub(crate) established: bool,
    pub(crate) error: Option<SessionError>,
    pub(crate) connecting: Option<Waker>,
    pub(crate) closed: Vec<Waker>,
    pub(crate) accept: [Vec<Waker>; 2],
    pub(crate) open: [Vec<Waker>; 2],
    pub(crate) readers: FxHashMap<StreamId, StreamWakers>,
    pub(crate) writers: FxHashMap<StreamId, Waker>,
    pub(crate) stopped: FxHashMap<StreamId, Waker>,
    pub(crate) raw: Vec<Waker>,
    /// Senders of raw datagrams waiting for room in a path's send buffer.
    pub(crate) raw_send: Vec<Waker>,
    pub(crate) delegations: Vec<Waker>,
    pub(crate) delegation_writers: BTreeMap<DelegationId, Waker>,
    pub(crate) path_events: Backlog<PathEvent>,
    /// The latest metrics snapshot nobody took yet (a backlog of one).
    pub(crate) metrics: Backlog<Box<SessionStats>>,
    pub(crate) transfer_events: Backlog<TransferEvent>,
    /// Session handles alive in the application (sessions and streams).
    pub(crate) refs: usize,
}

impl SessionWaiters {
    fn wake_all(&mut self) {
        let mut wakers: Vec<Waker> = Vec::new();
        wakers.extend(self.connecting.take());
        wakers.append(&mut self.closed);
        for w in &mut self.accept {
            wakers.append(w);
        }
        for w in &mut self.open {
            wakers.append(w);
        }
        for r in std::mem::take(&mut self.readers).into_values() {
            wakers.push(r.first);
            wakers.extend(r.more);
        }
        wakers.extend(std::mem::take(&mut self.writers).into_values());
        wakers.extend(std::mem::take(&mut self.stopped).into_values());
        wakers.append(&mut self.raw);
        wakers.append(&mut self.raw_send);
        wakers.append(&mut self.delegations);
        wakers.extend(std::mem::take(&mut self.delegation_writers).into_values());
        wakers.append(&mut self.path_events.waiters);
        wakers.append(&mut self.metrics.waiters);
        wakers.append(&mut self.transfer_events.waiters);
        for w in wakers {
            w.wake();
        }
    }
}

/// What a session keeps for the application to take, oldest dropped beyond a cap, and the
/// tasks waiting for it.
#[derive(Debug)]
pub(crate) struct Backlog<T> {
    pub(crate) items: VecDeque<T>,
    pub(crate) waiters: Vec<Waker>,
}

impl<T> Default for Backlog<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            waiters: Vec::new(),
        }
    }
}

impl<T> Backlog<T> {
    /// Adds `item`, dropping the oldest beyond `cap`, and wakes every waiter.
    fn push(&mut self, item: T, cap: usize) {
        if self.items.len() >= cap.max(1) {
            self.items.pop_front();
        }
        self.items.push_back(item);
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

/// Adds the waker of the task in `cx` to `wakers`, once: a task that polls fresh futures
/// in a loop (a `select` over `accept`) does not pile up copies between two events.
pub(crate) fn register(wakers: &mut Vec<Waker>, cx: &Context<'_>) {
    if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
        wakers.push(cx.waker().clone());
    }
}

pub(crate) fn dir_index(dir: Dir) -> usize {
    match dir {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// Everything behind the endpoint's mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) engine: kwik_core::Endpoint,
    pub(crate) sessions: BTreeMap<SessionHandle, SessionWaiters>,
    pub(crate) incoming: VecDeque<SessionHandle>,
    pub(crate) accept_waiters: Vec<Waker>,
    driver: Option<Waker>,
    /// No more `Endpoint` handles: stop accepting, end the driver once idle.
    pub(crate) endpoint_dropped: bool,
    pub(crate) idle_waiters: Vec<Waker>,
    /// The engine reported `Drained`, and the tasks waiting for it.
    pub(crate) drained: bool,
    pub(crate) drained_waiters: Vec<Waker>,
    #[cfg(feature = "metrics")]
    telemetry: crate::telemetry::Telemetry,
    /// KWIK's events of each session, once `Endpoint::set_qlog_dir` was called.
    #[cfg(feature = "qlog")]
    pub(crate) qlog: Option<crate::qlog::EventLog>,
}

impl State {
    /// Wakes the driver so that it flushes what a command queued.
    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    pub(crate) fn waiters(&mut self, h: SessionHandle) -> &mut SessionWaiters {
        self.sessions.entry(h).or_default()
    }

    /// The session's sticky error, if it has one.
    pub(crate) fn session_error(&mut self, h: SessionHandle) -> Option<SessionError> {
        if let Some(e) = self.sessions.get(&h).and_then(|w| w.error.clone()) {
            return Some(e);
        }
        match self.engine.session(h) {
            Some(s) => s.error(),
            None => Some(SessionError::LocallyClosed),
        }
    }

    /// Samples the engine's counters when due; while the endpoint has work, the driver
    /// also wakes for the next sample.
    #[cfg(feature = "metrics")]
    fn sample_metrics(&mut self, now: Instant, engine: Option<Instant>) -> Option<Instant> {
        let Some(engine) = engine else {
            self.telemetry.idle(&mut self.engine, now);
            return None;
        };
        if self.telemetry.deadline(now) <= now {
            self.telemetry.sample(&mut self.engine, now);
        }
        Some(engine.min(self.telemetry.deadline(now)))
    }

    fn dispatch(&mut self, event: Event) {
        #[cfg(feature = "metrics")]
        self.telemetry.on_event(&mut self.engine, &event);
        #[cfg(feature = "qlog")]
        if let Some(log) = &mut self.qlog {
            log.on_event(&mut self.engine, &event);
        }
        match event {
            Event::Connected(h) => {
                let w = self.waiters(h);
                w.established = true;
                if let Some(w) = w.connecting.take() {
                    w.wake();
                }
            }
            Event::Incoming(h) => {
                if self.endpoint_dropped {
                    if let Some(mut s) = self.engine.session(h) {
                        s.close(Instant::now(), 0u32.into(), b"");
                    }
                    return;
                }
                self.waiters(h).established = true;
                self.incoming.push_back(h);
                for w in self.accept_waiters.drain(..) {
                    w.wake();
                }
            }
            Event::Closed { session, error } => {
                let w = self.waiters(session);
                w.error = Some(error);
                w.wake_all();
            }
            Event::StreamOpened { session, dir } => {
                for w in self.waiters(session).accept[dir_index(dir)].drain(..) {
                    w.wake();
                }
            }
            Event::StreamAvailable { session, dir } => {
                for w in self.waiters(session).open[dir_index(dir)].drain(..) {
                    w.wake();
                }
            }
            Event::StreamReadable { session, stream } => {
                if let Some(w) = self.waiters(session).readers.remove(&stream) {
                    w.wake();
                }
            }
            Event::StreamWritable { session, stream } => {
                if let Some(w) = self.waiters(session).writers.remove(&stream) {
                    w.wake();
                }
            }
            Event::RawDatagram { session } => {
                for w in self.waiters(session).raw.drain(..) {
                    w.wake();
                }
            }
            Event::RawWritable { session, .. } => {
                for w in self.waiters(session).raw_send.drain(..) {
                    w.wake();
                }
            }
            Event::StreamFinished { session, stream } => {
                if let Some(w) = self.waiters(session).stopped.remove(&stream) {
                    w.wake();
                }
            }
            Event::StreamStopped {
                session, stream, ..
            } => {
                let waiters = self.waiters(session);
                if let Some(w) = waiters.writers.remove(&stream) {
                    w.wake();
                }
                if let Some(w) = waiters.stopped.remove(&stream) {
                    w.wake();
                }
            }
            Event::DelegationReceived { session } => {
                for w in self.waiters(session).delegations.drain(..) {
                    w.wake();
                }
            }
            Event::DelegationWritable {
                session,
                delegation,
            } => {
                if let Some(w) = self.waiters(session).delegation_writers.remove(&delegation) {
                    w.wake();
                }
            }
            ref e @ (Event::PathAdded { session, .. }
            | Event::PathActive { session, .. }
            | Event::PathDegraded { session, .. }
            | Event::PathFailed { session, .. }
            | Event::PathRemoved { session, .. }
            | Event::PathDraining { session, .. }) => {
                let Some(pe) = PathEvent::from_event(e) else {
                    return;
                };
                let waiters = self.waiters(session);
                if matches!(pe, PathEvent::Draining(_)) {
                    // Opens waiting for stream credit now fail: a draining primary takes
                    // no new stream.
                    for w in waiters.open.iter_mut().flat_map(|o| o.drain(..)) {
                        w.wake();
                    }
                }
                // A path that changed may have taken its blocked datagrams with it.
                for w in waiters.raw_send.drain(..) {
                    w.wake();
                }
                waiters.path_events.push(pe, PATH_EVENT_BACKLOG);
            }
            ref e @ (Event::DelegationFinished { session, .. }
            | Event::StripeFinished { session, .. }) => {
                let Some(te) = TransferEvent::from_event(e) else {
                    return;
                };
                let w = self.waiters(session);
                w.transfer_events.push(te, TRANSFER_EVENT_BACKLOG);
            }
            Event::Metrics { session, stats } => {
                self.waiters(session).metrics.push(stats, 1);
            }
            Event::Drained => {
                self.drained = true;
                for w in self.drained_waiters.drain(..) {
                    w.wake();
                }
            }
            _ => {}
        }
    }
}

/// The state shared by the endpoint, its sessions, streams and the driver.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) socket: Arc<dyn AsyncUdpSocket>,
}

impl Shared {
    pub(crate) fn new(
        engine: kwik_core::Endpoint,
        runtime: Arc<dyn Runtime>,
        socket: Arc<dyn AsyncUdpSocket>,
    ) -> Arc<Self> {
        let shared = Arc::new(Self {
            state: Mutex::new(State {
                engine,
                sessions: BTreeMap::new(),
                incoming: VecDeque::new(),
                accept_waiters: Vec::new(),
                driver: None,
                endpoint_dropped: false,
                idle_waiters: Vec::new(),
                drained: false,
                drained_waiters: Vec::new(),
                #[cfg(feature = "metrics")]
                telemetry: crate::telemetry::Telemetry::new(),
                #[cfg(feature = "qlog")]
                qlog: None,
            }),
            runtime: runtime.clone(),
            socket,
        });
        runtime.spawn(Box::pin(Driver::new(shared.clone())));
        shared
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in this crate; keep serving regardless.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now(&self) -> Instant {
        self.runtime.now()
    }
}

/// The one task per endpoint that feeds the engine.
struct Driver {
    shared: Arc<Shared>,
    timer: Option<Pin<Box<dyn AsyncTimer>>>,
    /// The deadline the timer is set to (resetting a timer is not free).
    deadline: Option<Instant>,
    /// One buffer per datagram quinn-udp receives in one call.
    recv_bufs: [Vec<u8>; quinn_udp::BATCH_SIZE],
    recv_meta: [quinn_udp::RecvMeta; quinn_udp::BATCH_SIZE],
    send_buf: Vec<u8>,
    /// A transmit the socket was not ready for, with its payload in `send_buf`.
    pending: Option<kwik_core::Transmit>,
    /// Polls in a row the due timer waited for the socket to drain.
    deferred: u32,
}

impl Driver {
    fn new(shared: Arc<Shared>) -> Self {
        let size = RECV_BUF.max(1500 * shared.socket.gro_segments());
        Self {
            shared,
            timer: None,
            deadline: None,
            recv_bufs: std::array::from_fn(|_| vec![0u8; size]),
            recv_meta: [quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE],
            send_buf: Vec::with_capacity(64 * 1024),
            pending: None,
            deferred: 0,
        }
    }

    /// Reads datagrams into the engine; returns true if the budget ran out.
    fn recv(&mut self, cx: &mut Context<'_>, state: &mut State, now: Instant) -> bool {
        let socket = self.shared.socket.clone();
        for _ in 0..RECV_BATCHES {
            // On the stack, as quinn does: a vector here would be allocated and freed at
            // every poll.
            let mut slices = self.recv_bufs.each_mut().map(|b| IoSliceMut::new(b));
            match socket.poll_recv(cx, &mut slices, &mut self.recv_meta) {
                Poll::Ready(Ok(n)) => {
                    for (m, buf) in self.recv_meta.iter().zip(&self.recv_bufs).take(n) {
                        let data = &buf[..m.len];
                        let stride = m.stride.max(1);
                        let ecn = m.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8));
                        for group in data.chunks(stride * RECV_GROUP) {
                            let mut group = BytesMut::from(group);
                            // The last datagram takes the allocation as it is (a lone
                            // datagram is not split at all).
                            while group.len() > stride {
                                let segment = group.split_to(stride);
                                state
                                    .engine
                                    .handle_datagram(now, m.addr, m.dst_ip, ecn, segment);
                            }
                            state
                                .engine
                                .handle_datagram(now, m.addr, m.dst_ip, ecn, group);
                        }
                    }
                }
                Poll::Ready(Err(e)) => {
                    // ICMP errors and the like surface here; the connections time out on
                    // their own if the peer is really gone.
                    tracing::debug!(error = %e, "udp receive failed");
                }
                Poll::Pending => return false,
            }
        }
        true
    }

    /// Sends what the engine has; returns true if the budget ran out.
    fn send(&mut self, cx: &mut Context<'_>, state: &mut State, now: Instant) -> bool {
        let socket = self.shared.socket.clone();
        let max = socket.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS);
        for _ in 0..SEND_BUDGET {
            let t = match self.pending.take() {
                Some(t) => t,
                None => match state.engine.poll_transmit(now, max, &mut self.send_buf) {
                    Some(t) => t,
                    None => return false,
                },
            };
            let udp = quinn_udp::Transmit {
                destination: t.destination,
                ecn: t
                    .ecn
                    .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
                contents: &self.send_buf[..t.size],
                segment_size: t.segment_size,
                src_ip: t.src_ip,
            };
            match socket.poll_send(cx, &udp) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    // Dropped like a lost packet: QUIC recovers.
                    tracing::debug!(error = %e, "udp send failed");
                }
                Poll::Pending => {
                    self.pending = Some(t);
                    return false;
                }
            }
        }
        true
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shared = this.shared.clone();
        let mut state = shared.lock();
        if !state
            .driver
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.driver = Some(cx.waker().clone());
        }
        let now = shared.now();
        let backlog = this.recv(cx, &mut state, now);
        let mut again = backlog;
        if this.deadline.is_some_and(|d| d <= now) {
            if backlog && this.deferred < MAX_TIMER_DEFERRALS {
                this.deferred += 1;
            } else {
                this.deferred = 0;
                state.engine.handle_timeout(now);
            }
        }
        again |= this.send(cx, &mut state, now);
        while let Some(event) = state.engine.poll_event() {
            state.dispatch(event);
        }
        let deadline = state.engine.poll_timeout(now);
        #[cfg(feature = "metrics")]
        let deadline = state.sample_metrics(now, deadline);
        match deadline {
            Some(deadline) => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| shared.runtime.new_timer(deadline));
                if this.deadline != Some(deadline) {
                    timer.as_mut().reset(deadline);
                    this.deadline = Some(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    again = true;
                }
            }
            None => {
                this.timer = None;
                this.deadline = None;
            }
        }
        if state.engine.is_idle() {
            for w in state.idle_waiters.drain(..) {
                w.wake();
            }
            if state.endpoint_dropped && state.sessions.values().all(|s| s.refs == 0) {
                return Poll::Ready(());
            }
        }
        if again {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// Keeps a session alive while the application holds it; the last drop closes it.
#[derive(Debug)]
pub(crate) struct SessionRef {
    pub(crate) shared: Arc<Shared>,
    pub(crate) handle: SessionHandle,
}

impl Drop for SessionRef {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let waiters = state.waiters(self.handle);
        waiters.refs = waiters.refs.saturating_sub(1);
        if waiters.refs == 0 {
            state.sessions.remove(&self.handle);
            let now = self.shared.now();
            if let Some(mut s) = state.engine.session(self.handle)
                && s.error().is_none()
            {
                s.close(now, VarInt::from_u32(0), b"");
            }
            state.wake_driver();
        }
    }
}
