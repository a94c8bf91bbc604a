//! Driving kwik-core from a hand-written event loop: a plain `std::net::UdpSocket`, its own
//! timeout handling, no async runtime. It talks to a kwik-tokio echo server (run here in a
//! background thread so the example is self-contained).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kwik_core::{BytesMut, Config, Dir, Endpoint, EndpointConfig, Event, ReadError};
use kwik_examples::{client_config, self_signed, server_config};

fn main() -> anyhow::Result<()> {
    let (cert, key) = self_signed()?;
    let server_cfg = server_config(&cert, &key, Config::default())?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || run_server(server_cfg, addr_tx));
    let server_addr: SocketAddr = addr_rx.recv()?;

    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let mut endpoint = Endpoint::new(
        EndpointConfig {
            seed: [7; 32],
            allow_mtud: false,
        },
        None,
    );
    let config = client_config(&cert, Config::default())?;
    let session = endpoint.connect(Instant::now(), &config, server_addr, "localhost")?;

    let message = b"hello from a custom event loop";
    let mut stream = None;
    let mut echoed = Vec::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut recv_buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        if now > deadline {
            bail!("timed out");
        }
        // 1. Output: send every datagram the engine has.
        while let Some(t) = endpoint.poll_transmit(now, 1, &mut buf) {
            socket.send_to(&buf[..t.size], t.destination)?;
        }
        // 2. Events: drive the application.
        while let Some(event) = endpoint.poll_event() {
            match event {
                Event::Connected(h) => {
                    let mut s = endpoint.session(h).context("session")?;
                    let id = s.open(Dir::Bi).context("open")?;
                    let mut send = s.send_stream(id);
                    send.write(message)?;
                    send.finish()?;
                    stream = Some(id);
                }
                Event::StreamReadable {
                    session: h,
                    stream: id,
                } => {
                    let mut s = endpoint.session(h).context("session")?;
                    loop {
                        match s.recv_stream(id).read(usize::MAX) {
                            Ok(Some(chunk)) => echoed.extend_from_slice(&chunk),
                            Ok(None) => {
                                println!("echoed: {}", String::from_utf8_lossy(&echoed));
                                assert_eq!(echoed, message);
                                s.close(Instant::now(), 0u32.into(), b"done");
                                return Ok(());
                            }
                            Err(ReadError::Blocked) => break,
                            Err(e) => bail!("read: {e}"),
                        }
                    }
                }
                Event::Closed { error, .. } => bail!("session closed: {error}"),
                _ => {}
            }
        }
        // Commands may have queued output: loop back to send it before waiting.
        if endpoint
            .poll_transmit(now, 1, &mut buf)
            .is_some_and(|t| socket.send_to(&buf[..t.size], t.destination).is_ok())
        {
            continue;
        }
        // 3. Wait for a datagram or the next timeout, whichever comes first.
        let timeout = endpoint
            .poll_timeout(now)
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(now)
            })
            .max(Duration::from_micros(100));
        socket.set_read_timeout(Some(timeout))?;
        match socket.recv_from(&mut recv_buf) {
            Ok((n, from)) => endpoint.handle_datagram(
                Instant::now(),
                from,
                None,
                None,
                BytesMut::from(&recv_buf[..n]),
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                endpoint.handle_timeout(Instant::now());
            }
            Err(e) => return Err(e.into()),
        }
        let _ = (session, stream);
    }
}

fn run_server(
    config: kwik_core::ServerConfig,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = kwik_tokio::listen("127.0.0.1:0".parse()?, config)?;
        addr_tx.send(server.local_addr()?)?;
        while let Some(incoming) = server.accept().await {
            let session = incoming.await?;
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = session.accept_bi().await {
                    let data = recv.read_to_end(1 << 20).await?;
                    send.write_all(&data).await?;
                    send.finish()?;
                }
                Ok::<_, anyhow::Error>(())
            });
        }
        Ok(())
    })
}
