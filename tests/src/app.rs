//! Application behaviours for scenarios: a stream-level app that writes queued data, reads
//! and checksums everything, and optionally echoes what it reads.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use kwik_core::{
    Dir, Endpoint, Event, ReadError, SessionError, SessionHandle, StreamId, VarInt, WriteError,
};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// Deterministic pseudo-random payload.
pub fn payload(seed: u64, len: usize) -> Bytes {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    Bytes::from(v)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Bytes queued for one stream.
#[derive(Default)]
struct Outgoing {
    chunks: VecDeque<Bytes>,
    fin: bool,
}

/// What arrived on one stream.
pub struct Received {
    hasher: Sha256,
    /// Bytes read so far.
    pub bytes: u64,
    /// The bytes themselves, if the app keeps them.
    pub data: Vec<u8>,
    /// The stream ended with a fin.
    pub finished: bool,
    /// The stream was reset with this code.
    pub reset: Option<VarInt>,
    /// Reads that returned data.
    pub reads: u64,
}

impl Received {
    fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            bytes: 0,
            data: Vec::new(),
            finished: false,
            reset: None,
            reads: 0,
        }
    }

    /// SHA-256 of the bytes read so far.
    pub fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

/// A stream-level application driven by engine events.
#[derive(Default)]
pub struct App {
    /// Echo every byte read on a bidirectional stream back on it, fin included.
    pub echo: bool,
    /// Keep received bytes in [`Received::data`] (else only count and hash them).
    pub keep_data: bool,
    /// Streams not to read (a slow or stalled reader).
    pub paused: BTreeSet<StreamId>,
    /// Sessions established, in order.
    pub sessions: Vec<SessionHandle>,
    /// Sessions closed, with the error.
    pub closed: Vec<(SessionHandle, SessionError)>,
    /// Everything read, by stream.
    pub received: BTreeMap<(SessionHandle, StreamId), Received>,
    /// Streams whose fin the peer acknowledged.
    pub finished: BTreeSet<(SessionHandle, StreamId)>,
    /// Writes refused because the stream was stopped or closed.
    pub write_errors: Vec<(StreamId, WriteError)>,
    outgoing: BTreeMap<(SessionHandle, StreamId), Outgoing>,
}

impl App {
    /// An app that keeps what it reads.
    pub fn keeping() -> Self {
        Self {
            keep_data: true,
            ..Self::default()
        }
    }

    /// An app that echoes.
    pub fn echo() -> Self {
        Self {
            echo: true,
            ..Self::default()
        }
    }

    /// Queues `data` (and a fin) for a stream; sent as credit allows.
    pub fn send(
        &mut self,
        ep: &mut Endpoint,
        h: SessionHandle,
        id: StreamId,
        data: Bytes,
        fin: bool,
    ) {
        let out = self.outgoing.entry((h, id)).or_default();
        if !data.is_empty() {
            out.chunks.push_back(data);
        }
        out.fin |= fin;
        self.flush(ep);
    }

    /// Bytes still queued.
    pub fn unsent(&self) -> usize {
        self.outgoing
            .values()
            .map(|o| o.chunks.iter().map(Bytes::len).sum::<usize>())
            .sum()
    }

    /// Handles events and moves data.
    pub fn poll(&mut self, ep: &mut Endpoint, events: Vec<Event>) {
        let mut readable = BTreeSet::new();
        for event in events {
            match event {
                Event::Connected(h) | Event::Incoming(h) => self.sessions.push(h),
                Event::Closed { session, error } => self.closed.push((session, error)),
                Event::StreamOpened { session, dir } => {
                    let Some(mut s) = ep.session(session) else {
                        continue;
                    };
                    while let Some(id) = s.accept(dir) {
                        self.received
                            .entry((session, id))
                            .or_insert_with(Received::new);
                        readable.insert((session, id));
                    }
                }
                Event::StreamReadable { session, stream } => {
                    readable.insert((session, stream));
                }
                Event::StreamFinished { session, stream } => {
                    self.finished.insert((session, stream));
                }
                _ => {}
            }
        }
        for (h, id) in readable {
            self.read(ep, h, id);
        }
        self.flush(ep);
    }

    /// Reads what a stream holds (also used to resume a paused stream).
    pub fn read(&mut self, ep: &mut Endpoint, h: SessionHandle, id: StreamId) {
        if self.paused.contains(&id) {
            return;
        }
        let Some(mut s) = ep.session(h) else { return };
        let rx = self.received.entry((h, id)).or_insert_with(Received::new);
        let mut echo = Vec::new();
        let mut fin = false;
        loop {
            match s.recv_stream(id).read(usize::MAX) {
                Ok(Some(chunk)) => {
                    rx.hasher.update(&chunk);
                    rx.bytes += chunk.len() as u64;
                    rx.reads += 1;
                    if self.keep_data {
                        rx.data.extend_from_slice(&chunk);
                    }
                    if self.echo && id.dir() == Dir::Bi {
                        echo.push(chunk);
                    }
                }
                Ok(None) => {
                    rx.finished = true;
                    fin = true;
                    break;
                }
                Err(ReadError::Reset(code)) => {
                    rx.reset = Some(code);
                    break;
                }
                Err(_) => break,
            }
        }
        if self.echo && id.dir() == Dir::Bi && (!echo.is_empty() || fin) {
            let out = self.outgoing.entry((h, id)).or_default();
            out.chunks.extend(echo);
            out.fin |= fin;
        }
    }

    /// Writes queued data as far as credit allows.
    pub fn flush(&mut self, ep: &mut Endpoint) {
        let mut done = Vec::new();
        for (&(h, id), out) in self.outgoing.iter_mut() {
            let Some(mut s) = ep.session(h) else {
                done.push((h, id));
                continue;
            };
            let mut stream = s.send_stream(id);
            while let Some(front) = out.chunks.front_mut() {
                match stream.write_chunks(std::slice::from_mut(front)) {
                    Ok(_) if front.is_empty() => {
                        out.chunks.pop_front();
                    }
                    Ok(_) => break,
                    Err(WriteError::Blocked) => break,
                    Err(e) => {
                        self.write_errors.push((id, e));
                        out.chunks.clear();
                        out.fin = false;
                        break;
                    }
                }
            }
            if out.chunks.is_empty() {
                if out.fin {
                    let _ = stream.finish();
                }
                done.push((h, id));
            }
        }
        for key in done {
            self.outgoing.remove(&key);
        }
    }
}
