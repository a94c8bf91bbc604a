//! A receiver never buffers more than `stream_receive_window` bytes for one stream nor
//! `receive_window` bytes for the whole session, however much the sender wants to send:
//! with the readers paused, the sender's writes are refused (`WriteError::Blocked`) at
//! exactly the window, the transfer stalls there, and it resumes when the readers do.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::{Config, Dir, Event, SessionHandle, StreamId, WriteError};
use kwik_tests::app::{App, payload, sha256};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;
use kwik_tests::sim::drive_until;

const STREAM_WINDOW: u64 = 64 * 1024;
const LEN: usize = 1 << 20;

struct World {
    p: Pair,
    h: SessionHandle,
    server_app: App,
    client_app: App,
    /// StreamWritable events the client received.
    writable: Vec<StreamId>,
}

impl World {
    fn new(seed: u64, server_config: Config) -> Self {
        let link = LinkConfig::default()
            .rate_mbit(100)
            .delay_ms(5)
            .queue_ms(20);
        let p = Pair::new(seed, link, server_config, Config::default());
        let h = p.session;
        let mut w = Self {
            p,
            h,
            server_app: App::default(),
            client_app: App::default(),
            writable: Vec::new(),
        };
        let up = w.run_until(Duration::from_secs(5), |w| {
            w.client_app.sessions.contains(&h) && !w.server_app.sessions.is_empty()
        });
        assert!(up, "session not established");
        w
    }

    fn pump(&mut self) {
        self.p
            .poll_watching(&mut self.server_app, &mut self.client_app, |e, _| {
                if let Event::StreamWritable { stream, .. } = e {
                    self.writable.push(*stream);
                }
            });
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        drive_until(
            self,
            limit,
            |w| &mut w.p.sim,
            |w| {
                w.pump();
                done(w)
            },
        )
    }

    fn run_for(&mut self, d: Duration) {
        self.p.sim.run_for(d);
        self.pump();
    }

    fn server_session(&self) -> SessionHandle {
        self.server_app.sessions[0]
    }

    /// Writes `data[*offset..]` to `id` until the engine refuses; returns what was taken.
    fn write_until_blocked(&mut self, id: StreamId, data: &[u8], offset: &mut usize) -> usize {
        let ep = self.p.client_endpoint();
        let mut session = ep.session(self.h).unwrap();
        let mut stream = session.send_stream(id);
        let before = *offset;
        loop {
            match stream.write(&data[*offset..]) {
                Ok(n) => {
                    assert!(n > 0, "a write took nothing without reporting Blocked");
                    *offset += n;
                }
                Err(WriteError::Blocked) => break,
                Err(e) => panic!("write to {id} failed: {e}"),
            }
        }
        *offset - before
    }

    /// Reads what the server holds for `id` right now, without letting anything arrive.
    fn drain_buffered(&mut self, id: StreamId) -> u64 {
        let sh = self.server_session();
        self.server_app.paused.remove(&id);
        let before = self
            .server_app
            .received
            .get(&(sh, id))
            .map_or(0, |r| r.bytes);
        self.server_app.read(self.p.server_endpoint(), sh, id);
        self.server_app.received[&(sh, id)].bytes - before
    }

    fn client_bytes_sent(&mut self) -> u64 {
        let h = self.h;
        let ep = self.p.client_endpoint();
        ep.session(h).unwrap().stats().paths[0].bytes_sent
    }

    fn open_uni(&mut self) -> StreamId {
        let h = self.h;
        let ep = self.p.client_endpoint();
        ep.session(h).unwrap().open(Dir::Uni).unwrap()
    }
}

#[test]
fn one_stream_never_buffers_more_than_its_window() {
    let mut config = Config::default();
    config.stream_receive_window = STREAM_WINDOW;
    let mut w = World::new(61, config);
    let id = w.open_uni();
    w.server_app.paused.insert(id);
    let data = payload(61, LEN);
    let mut offset = 0;
    let sent_before = w.client_bytes_sent();

    // The sender may queue exactly one window, then its writes are refused.
    assert_eq!(
        w.write_until_blocked(id, &data, &mut offset) as u64,
        STREAM_WINDOW
    );
    // Long after everything that was allowed arrived, the transfer is still stalled at the
    // window: no new credit, nothing more sent, nothing read.
    w.run_for(Duration::from_secs(3));
    assert_eq!(w.write_until_blocked(id, &data, &mut offset), 0);
    assert!(w.writable.is_empty(), "credit came without reading");
    let sent = w.client_bytes_sent() - sent_before;
    println!("client sent {sent} UDP bytes for a {STREAM_WINDOW}-byte window");
    assert!(
        sent < STREAM_WINDOW + STREAM_WINDOW / 4,
        "the sender sent {sent} bytes while the window was {STREAM_WINDOW}"
    );
    let sh = w.server_session();
    let s = w.p.server_endpoint().session(sh).unwrap().stats();
    assert_eq!(s.stream_bytes_read, 0);
    let h = w.h;
    let frames =
        |w: &mut World| w.p.client_endpoint().session(h).unwrap().stats().paths[0].frames_sent;
    let frames_before = frames(&mut w);
    w.run_for(Duration::from_secs(3));
    assert_eq!(
        frames(&mut w),
        frames_before,
        "the stall holds: not one data-plane frame"
    );
    // Only health probes moved: both ends probe every 250 ms, so the client sent a Ping and
    // a Pong every 250 ms, under 100 bytes each with its ACKs.
    let probes = w.client_bytes_sent() - sent_before - sent;
    assert!(probes < 24 * 100, "{probes} bytes sent during the stall");

    // What the receiver holds is exactly the window.
    assert_eq!(w.drain_buffered(id), STREAM_WINDOW);

    // Reading returns credit: the sender is told, and the rest flows.
    let writable = w.run_until(Duration::from_secs(2), |w| w.writable.contains(&id));
    assert!(writable, "no StreamWritable after the reader resumed");
    let rest = Bytes::copy_from_slice(&data[offset..]);
    let ep = w.p.client_endpoint();
    w.client_app.send(ep, w.h, id, rest, true);
    let done = w.run_until(Duration::from_secs(30), |w| {
        w.server_app.received[&(sh, id)].finished
    });
    assert!(done, "transfer did not complete after resuming");
    let r = &w.server_app.received[&(sh, id)];
    assert_eq!(r.bytes, LEN as u64);
    assert_eq!(r.digest(), sha256(&data));
    assert!(w.client_app.closed.is_empty() && w.server_app.closed.is_empty());
}

#[test]
fn a_session_never_buffers_more_than_its_window() {
    const SESSION_WINDOW: u64 = 4 * STREAM_WINDOW;
    const STREAMS: usize = 8;
    let mut config = Config::default();
    config.stream_receive_window = STREAM_WINDOW;
    config.receive_window = SESSION_WINDOW;
    let mut w = World::new(62, config);
    let ids: Vec<StreamId> = (0..STREAMS).map(|_| w.open_uni()).collect();
    w.server_app.paused.extend(ids.iter().copied());
    let data: Vec<Bytes> = (0..STREAMS).map(|i| payload(620 + i as u64, LEN)).collect();
    let mut offsets = [0; STREAMS];

    // Each stream may take one stream window until the session window is used up.
    let mut taken = Vec::new();
    for i in 0..STREAMS {
        taken.push(w.write_until_blocked(ids[i], &data[i], &mut offsets[i]) as u64);
    }
    assert_eq!(
        taken.iter().sum::<u64>(),
        SESSION_WINDOW,
        "taken: {taken:?}"
    );
    assert!(
        taken.iter().all(|t| *t <= STREAM_WINDOW),
        "taken: {taken:?}"
    );
    assert_eq!(
        taken[STREAMS - 1],
        0,
        "the last stream got no session credit"
    );

    w.run_for(Duration::from_secs(3));
    for i in 0..STREAMS {
        assert_eq!(w.write_until_blocked(ids[i], &data[i], &mut offsets[i]), 0);
    }
    assert!(w.writable.is_empty(), "credit came without reading");

    // The receiver holds exactly the session window, no stream more than its own.
    let buffered: Vec<u64> = ids.iter().map(|id| w.drain_buffered(*id)).collect();
    assert_eq!(buffered, taken, "buffered per stream");

    // With the readers back, everything completes.
    let ep = w.p.client_endpoint();
    for i in 0..STREAMS {
        let rest = data[i].slice(offsets[i]..);
        w.client_app.send(ep, w.h, ids[i], rest, true);
    }
    let sh = w.server_session();
    let done = w.run_until(Duration::from_secs(60), |w| {
        ids.iter()
            .all(|id| w.server_app.received[&(sh, *id)].finished)
    });
    assert!(done, "transfers did not complete after resuming");
    for i in 0..STREAMS {
        let r = &w.server_app.received[&(sh, ids[i])];
        assert_eq!(r.digest(), sha256(&data[i]), "stream {i}");
    }
    assert!(w.client_app.closed.is_empty() && w.server_app.closed.is_empty());
}
