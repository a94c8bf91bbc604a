//! The KWIK demo: one client session fed by three servers on loopback. Ends by itself;
//! `--log-level info` (or `debug`) shows the engine's own account of it.
//!
//! A primary and two secondaries share a group key. The client dials the primary, which
//! joins both secondaries to the session and stripes one 512 MiB body over all three
//! servers at once, each server's share following its measured rate. Halfway through, one
//! secondary is shut down: its unfinished ranges go to the servers that remain, and the
//! download completes with every byte compared, as it arrives, with the known body (a
//! comparison, not a hash, so that the check does not bound the transfer). Paths and
//! metrics are printed at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kwik_core::GroupKey;
use kwik_examples::{
    BodyCheck, bulk_config, client_config, rate, self_signed, serve, server_config, wait_paths,
};
use kwik_tokio::{Endpoint, PathEvent, PathId, VarInt};

const BODY: u64 = 512 << 20;

#[derive(clap::Parser)]
struct Args {
    /// Log filter: error, warn, info, debug, trace, or directives such as kwik_core=debug
    /// (RUST_LOG wins when set).
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Also draw each path's goodput over time, with the moment the secondary was shut
    /// down, as an SVG file here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    kwik_examples::init_logging(&args.log_level)?;
    let (cert, key) = self_signed()?;
    let group = GroupKey::new(rand_key());
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut servers = Vec::new();
    for _ in 0..3 {
        let mut config = server_config(&cert, &key, bulk_config())?;
        config.group_key(group.clone());
        servers.push(Endpoint::server(config, loopback)?);
    }
    let addrs: Vec<SocketAddr> = servers
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    println!(
        "KWIK demo: primary on {}, secondaries on {} and {}",
        addrs[0], addrs[1], addrs[2]
    );
    for (i, server) in servers.iter().enumerate() {
        let secondaries = if i == 0 {
            addrs[1..].to_vec()
        } else {
            Vec::new()
        };
        tokio::spawn(serve(server.clone(), secondaries, "localhost".to_owned()));
    }

    let client = Endpoint::client(loopback)?;
    let session = client
        .connect_with(client_config(&cert, bulk_config())?, addrs[0], "localhost")?
        .await
        .context("session setup")?;
    println!("session {:#x} established with the primary", session.id());
    wait_paths(&session, 2, Duration::from_secs(5)).await?;
    for p in session.paths() {
        println!("  {} {} {:?}", p.id, p.address, p.state);
    }

    // Path events as they happen.
    let multi = MultiProgress::new();
    let watcher = {
        let session = session.clone();
        let multi = multi.clone();
        tokio::spawn(async move {
            while let Ok(event) = session.path_event().await {
                let line = match &event {
                    PathEvent::Failed(path, error) => format!("{path} failed: {error}"),
                    other => format!("{other:?}"),
                };
                let _ = multi.println(line);
            }
        })
    };

    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(format!("body {BODY}").as_bytes()).await?;
    send.finish()?;
    let style = ProgressStyle::with_template("{prefix:>24} {bar:40} {bytes:>10} {msg}")?;
    let total = multi.add(ProgressBar::new(BODY).with_style(style.clone()));
    total.set_prefix("read");
    let mut bars: BTreeMap<PathId, ProgressBar> = BTreeMap::new();
    let mut last: BTreeMap<PathId, u64> = BTreeMap::new();
    let started = Instant::now();
    let mut next_draw = started;
    let mut check = BodyCheck::default();
    let mut killed = None;
    let mut samples: Vec<(f64, BTreeMap<PathId, u64>)> = Vec::new();
    while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
        check.update(&chunk);
        let received = check.received();
        if killed.is_none() && received >= BODY / 2 {
            // Midway, the second secondary goes away.
            servers[2].close(VarInt::from_u32(0), b"shutting down");
            killed = Some(Instant::now());
            multi.println(format!("secondary {} shut down at 50 %", addrs[2]))?;
        }
        if Instant::now() >= next_draw {
            next_draw += Duration::from_millis(100);
            draw(&session, &multi, &style, &mut bars, &mut last, started);
            samples.push((started.elapsed().as_secs_f64(), last.clone()));
            total.set_position(received);
        }
    }
    draw(&session, &multi, &style, &mut bars, &mut last, started);
    samples.push((started.elapsed().as_secs_f64(), last.clone()));
    total.set_position(check.received());
    total.finish();
    for bar in bars.values() {
        bar.finish();
    }
    watcher.abort();
    let secs = started.elapsed().as_secs_f64();
    let received = check.received();
    println!(
        "received {received} bytes in {secs:.2} s ({})",
        rate(received, secs)
    );
    check.verify(BODY)?;
    println!("every byte matches the body (compared as it arrived)");
    println!("paths:");
    for p in session.paths() {
        let bytes = last.get(&p.id).copied().unwrap_or(0);
        println!(
            "  {} {} {:?}{}: rtt {}, {} MiB received ({:.0} % of the body, copies included; {} on average), udp received {} B",
            p.id,
            p.address,
            p.state,
            if p.is_primary { " (primary)" } else { "" },
            p.rtt.map_or("-".to_owned(), |r| format!("{r:.1?}")),
            bytes >> 20,
            bytes as f64 * 100.0 / BODY as f64,
            rate(bytes, secs),
            p.bytes_received,
        );
    }
    let stats = session.stats();
    println!("{}", kwik_examples::copy_report(&stats, BODY));
    println!(
        "session stats: stream bytes read {}, written {}, raw datagrams dropped {}",
        stats.stream_bytes_read, stats.stream_bytes_written, stats.raw_dropped
    );
    for p in &stats.paths {
        println!(
            "  {} -> {}: lost packets {}, frames received {}, carriers {}",
            p.id, p.remote, p.lost_packets, p.frames_received, p.carriers
        );
    }
    if let Some(svg) = &args.svg {
        let names: BTreeMap<PathId, String> = session
            .paths()
            .into_iter()
            .map(|p| {
                let role = if p.is_primary { " (primary)" } else { "" };
                (p.id, format!("{} {}{role}", p.id, p.address))
            })
            .collect();
        let series = goodput_series(&samples, &names);
        let failure = killed.map(|k| {
            (
                k.duration_since(started).as_secs_f64(),
                "secondary shut down",
            )
        });
        let title = format!("{} MiB from three servers over loopback", BODY >> 20);
        kwik_examples::plot::goodput_svg(svg, &title, &series, failure)?;
        println!("goodput per path drawn in {}", svg.display());
    }
    session.close(VarInt::from_u32(0), b"done");
    client.wait_idle().await;
    Ok(())
}

/// Each path's goodput (Mbit/s of stream bytes) over a window of three samples.
fn goodput_series(
    samples: &[(f64, BTreeMap<PathId, u64>)],
    names: &BTreeMap<PathId, String>,
) -> Vec<kwik_examples::plot::Series> {
    const WINDOW: usize = 3;
    names
        .iter()
        .map(|(id, label)| {
            let points = samples
                .windows(WINDOW + 1)
                .map(|w| {
                    let (t0, a) = &w[0];
                    let (t1, b) = &w[WINDOW];
                    let bytes = |m: &BTreeMap<PathId, u64>| m.get(id).copied().unwrap_or(0);
                    let mbit = (bytes(b) - bytes(a)) as f64 * 8.0 / (t1 - t0).max(1e-6) / 1e6;
                    (*t1, mbit)
                })
                .collect();
            kwik_examples::plot::Series {
                label: label.clone(),
                points,
            }
        })
        .collect()
}

/// Updates one progress bar per path from the session's stats.
fn draw(
    session: &kwik_tokio::Session,
    multi: &MultiProgress,
    style: &ProgressStyle,
    bars: &mut BTreeMap<PathId, ProgressBar>,
    last: &mut BTreeMap<PathId, u64>,
    started: Instant,
) {
    let secs = started.elapsed().as_secs_f64();
    for p in session.stats().paths {
        let bar = bars.entry(p.id).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(BODY).with_style(style.clone()));
            bar.set_prefix(format!("{} {}", p.id, p.remote));
            bar
        });
        // A reconnected path starts counting again: keep the largest seen.
        let bytes = last.entry(p.id).or_default();
        *bytes = (*bytes).max(p.stream_bytes_received);
        bar.set_position(*bytes);
        bar.set_message(rate(*bytes, secs));
    }
}

/// A fresh group key for this run.
fn rand_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    key
}
