//! The KWIK demo: a server and a client on loopback, no arguments, ends by itself.
//!
//! It opens a handful of logical streams (echo), then transfers 256 MiB on one stream with
//! a progress bar and a SHA-256 check, and prints the session's stats.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, ensure};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use kwik_core::Config;
use kwik_examples::{client_config, rate, self_signed, server_config};
use kwik_tokio::{Endpoint, VarInt};
use sha2::{Digest, Sha256};

const BODY: u64 = 256 << 20;
const STREAMS: usize = 16;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (cert, key) = self_signed()?;
    let server = Endpoint::server(
        server_config(&cert, &key, Config::default())?,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )?;
    let server_addr = server.local_addr()?;
    println!("KWIK demo: server on {server_addr}");

    let serving = tokio::spawn(serve(server.clone()));

    let client = Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let session = client
        .connect_with(
            client_config(&cert, Config::default())?,
            server_addr,
            "localhost",
        )?
        .await
        .context("session setup")?;
    println!(
        "session {:#x} established, rtt {:?}",
        session.session_id(),
        session.rtt()
    );

    // Many logical streams, one QUIC connection: each echoes a message.
    let started = Instant::now();
    let mut echoes = Vec::new();
    for i in 0..STREAMS {
        let (mut send, mut recv) = session.open_bi().await?;
        echoes.push(tokio::spawn(async move {
            let msg = format!("hello from logical stream {i}");
            send.write_all(msg.as_bytes()).await?;
            send.finish()?;
            let back = recv.read_to_end(1024).await?;
            ensure!(back == msg.as_bytes(), "stream {i} echoed wrong bytes");
            Ok::<_, anyhow::Error>(())
        }));
    }
    for e in echoes {
        e.await??;
    }
    println!(
        "{STREAMS} logical streams echoed in {:?}",
        started.elapsed()
    );

    // One large transfer, server -> client, checked end to end.
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(b"body").await?;
    send.finish()?;
    let bar = ProgressBar::new(BODY);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
    )?);
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
        hasher.update(&chunk);
        received += chunk.len() as u64;
        bar.set_position(received);
    }
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    let digest = hex(&hasher.finalize());
    let expected = serving_digest();
    println!(
        "received {received} bytes in {secs:.2} s ({}), sha256 {digest}",
        rate(received, secs)
    );
    ensure!(
        received == BODY && digest == expected,
        "checksum mismatch: expected {expected}"
    );
    println!("checksum matches");

    let stats = session.stats();
    println!(
        "session stats: streams opened {}, stream bytes read {}, written {}",
        stats.streams_opened_local, stats.stream_bytes_read, stats.stream_bytes_written
    );
    for p in &stats.paths {
        println!(
            "  {} -> {}: rtt {:?}, cwnd {} B, udp sent {} B / received {} B, lost packets {}, frames sent {} / received {}, carriers {}",
            p.id,
            p.remote,
            p.rtt,
            p.cwnd,
            p.bytes_sent,
            p.bytes_received,
            p.lost_packets,
            p.frames_sent,
            p.frames_received,
            p.carriers
        );
    }
    session.close(VarInt::from_u32(0), b"done");
    client.wait_idle().await;
    serving.abort();
    Ok(())
}

/// The body: a repeating 1 MiB pattern, deterministic so both ends can hash it.
fn block() -> Bytes {
    Bytes::from(
        (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn serving_digest() -> String {
    let block = block();
    let mut hasher = Sha256::new();
    for _ in 0..BODY / block.len() as u64 {
        hasher.update(&block);
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(server: Endpoint) {
    while let Some(incoming) = server.accept().await {
        let Ok(session) = incoming.await else {
            continue;
        };
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = session.accept_bi().await {
                tokio::spawn(async move {
                    let request = recv.read_to_end(1024).await?;
                    if request == b"body" {
                        let block = block();
                        for _ in 0..BODY / block.len() as u64 {
                            send.write_chunk(block.clone()).await?;
                        }
                    } else {
                        send.write_all(&request).await?;
                    }
                    send.finish()?;
                    let _ = send.stopped().await;
                    Ok::<_, anyhow::Error>(())
                });
            }
        });
    }
}
