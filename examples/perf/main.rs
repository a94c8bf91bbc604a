//! KWIK against plain quinn 0.11 on loopback, same machine, same run.
//!
//! Every figure is the median of `--reps` (9) repetitions, printed with its minimum and
//! maximum; the two stacks alternate within each repetition, so that slow phases of the
//! machine hit both. Each side of a connection runs on its own current-thread runtime
//! (the server on a thread of its own, the client on the main thread), so the two stacks
//! are measured alike. The two threads are pinned to cores 0 and 1 (`--no-pin` leaves them
//! to the scheduler).
//!
//! - `bulk_gbps`: one stream of `--bulk-mib` MiB;
//! - `small_streams_per_s`: `--streams` streams each echoing 1 KiB, `--concurrency` at
//!   a time, with the default `streams_per_carrier` (also with 1, 4, 16 and 64, against
//!   the same quinn figure);
//! - `rr_p50_us`, `rr_p99_us`, `rr_p999_us`: sequential 1 KiB request/response round
//!   trips, after a warm-up;
//! - `h3_gets_per_s`: `--h3-gets` HTTP/3 GETs of 1 KiB, `--concurrency` at a time, h3's
//!   client and server over `kwik-h3` against the same over `h3-quinn` and plain quinn;
//! - `stripe_gbps_1`, `stripe_gbps_3`: one body striped (`stripe`) by a primary alone and
//!   by a primary with two secondaries, against `bulk_gbps` of the same run;
//! - `plain_bulk_gbps`, `plain_small_streams_per_s`, `plain_rr_p99_us`: a quinn client and a KWIK server's
//!   plain session (the client speaks an application protocol, not KWIK), against a quinn
//!   client and a quinn server, both pairs with the QUIC settings a KWIK endpoint gives a
//!   plain session;
//! - `first_get`: an h3-quinn client's first GET of 1 KiB through a relay that holds each
//!   datagram 10 ms each way, from a kwik-h3 server (a plain session) and from an h3-quinn
//!   server: UDP payload bytes each way, round trips to the last body byte (not with
//!   `--reps`: one GET each);
//! - `limit_udp_gbps`: a plain UDP socket pair with GSO and GRO, no crypto;
//! - `limit_aead_gbps`: AES-128-GCM (ring) sealing and opening 1,200-byte packets on one
//!   core: the rate at which one core can both seal and open;
//! - `cpu_ns_per_byte` (bulk) and `cpu_us_per_stream` (small streams): CPU time of the
//!   whole process (every thread's, from /proc) per byte and per stream.
//!
//! `paired` beside a ratio is the median of the per-repetition ratios: each KWIK run
//! against the quinn run next to it, so that a slow phase of the machine hits both sides of
//! a pair. `--json PATH` also writes every figure as one JSON object per line, after a first
//! line naming the machine (CPU model, cores, whether threads were pinned).
//!
//! At the end, the floors (paired ratios; `stripe_1_over_bulk` is KWIK ÷ KWIK) are printed
//! met or MISSED: `small_streams_per_s` ≥ 1.0 (aim 1.3), `bulk_gbps` ≥ 0.95, `rr_p99_us`
//! ≤ 1.10, `h3_gets_per_s` ≥ 0.95 (aim 1.0), `stripe_1_over_bulk` ≥ 0.9. The run's JSON
//! at the default settings is kept as the baseline in `perf/` (the newest `baseline-*`).

use clap::Parser;
use kwik_core::Config;

mod first_get;
mod limits;
mod pairs;
mod report;
mod workloads;

use limits::{cpu_ns, limit_aead, limit_udp};
use pairs::{ServerThread, kwik_pair, plain_pair, plain_transport, quinn_pair, quinn_pair_with};
use report::{Report, percentile};
use workloads::{h3_on_kwik, h3_on_quinn, on_kwik, on_plain, on_quinn, stripe};

#[derive(Parser, Clone)]
struct Args {
    /// Size of the bulk transfer in MiB.
    #[arg(long, default_value_t = 1024)]
    bulk_mib: u64,
    /// Number of small echo streams.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Concurrency of the small streams.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Number of HTTP/3 GETs for the h3 figure.
    #[arg(long, default_value_t = 10_000)]
    h3_gets: usize,
    /// Number of request/response round trips (after as many warm-up rounds / 10).
    #[arg(long, default_value_t = 20_000)]
    rr: usize,
    /// Repetitions of every measurement; the median is printed with min and max.
    #[arg(long, default_value_t = 9)]
    reps: usize,
    /// Only these figures (comma-separated prefixes: bulk, small, plain, first_get, rr,
    /// h3, stripe, limit).
    #[arg(long)]
    only: Option<String>,
    /// Also write the figures as JSON lines here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run only one stack's side of one figure, for profiles: `kwik` or `quinn`, then
    /// optionally `-small`, `-rr` or `-h3` (the bulk figure otherwise); or `plain-rr`, the
    /// round trips of a quinn client and a KWIK server's plain session (the engine without
    /// KWIK's session layer on the server's side).
    #[arg(long)]
    profile: Option<String>,
    /// Also draw KWIK ÷ quinn for every figure as an SVG file here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    /// Logical streams per carrier for KWIK's figures (the library's default otherwise).
    #[arg(long)]
    streams_per_carrier: Option<u32>,
    /// Leave the client (main) and server threads unpinned; by default they run on cores 0
    /// and 1 when the machine has two or more, so that tail figures do not depend on where
    /// the scheduler happened to put them.
    #[arg(long)]
    no_pin: bool,
    /// Record KWIK's metrics into a Prometheus recorder, rendered every 5 s as a scrape
    /// would, to measure what they cost (built with the `metrics` feature, the default;
    /// without this flag they go nowhere).
    #[arg(long)]
    metrics: bool,
}

/// Streams per carrier the small-stream figure is also measured with, beside the default.
const SHARING: [u32; 4] = [1, 4, 16, 64];

/// Logical streams per carrier: as asked, else the library's default.
fn sharing(args: &Args) -> u32 {
    args.streams_per_carrier
        .unwrap_or(Config::default().streams_per_carrier)
}

/// Installs a Prometheus recorder and renders it every 5 s on a thread of its own.
#[cfg(feature = "metrics")]
fn record_metrics() -> anyhow::Result<()> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            handle.run_upkeep();
            std::hint::black_box(handle.render());
        }
    });
    Ok(())
}

#[cfg(not(feature = "metrics"))]
fn record_metrics() -> anyhow::Result<()> {
    anyhow::bail!("--metrics: built without the `metrics` feature")
}

fn wanted(args: &Args, figure: &str) -> bool {
    args.only
        .as_deref()
        .is_none_or(|only| only.split(',').any(|p| figure.starts_with(p.trim())))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "metrics feature {}, recorder {}",
        if cfg!(feature = "metrics") {
            "on"
        } else {
            "off"
        },
        if args.metrics { "on" } else { "off" }
    );
    if args.metrics {
        record_metrics()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let total = args.bulk_mib << 20;
    let reps = args.reps.max(1);
    // Counted before the pinning narrows this thread's view.
    let online = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cores = if args.no_pin {
        Vec::new()
    } else {
        core_affinity::get_core_ids().unwrap_or_default()
    };
    let (server, pinned) = match cores.as_slice() {
        [client, server, ..] => {
            if !core_affinity::set_for_current(*client) {
                anyhow::bail!("could not pin the client thread to core {}", client.id);
            }
            println!(
                "threads pinned: client on core {}, server on core {}",
                client.id, server.id
            );
            (ServerThread::start(Some(*server))?, true)
        }
        _ => {
            println!("threads not pinned");
            (ServerThread::start(None)?, false)
        }
    };
    let srv = &server.handle;
    let mut report = Report {
        json: args.json.as_ref().map(std::fs::File::create).transpose()?,
        ratios: Vec::new(),
        floors: Vec::new(),
    };
    report.machine(&kwik_examples::host::cpu_model(), online, pinned);
    if let Some(profile) = &args.profile {
        let (stack, figure) = profile.split_once('-').unwrap_or((profile, "bulk"));
        let quinn = match (stack, figure) {
            ("quinn", _) => true,
            ("kwik", _) => false,
            ("plain", "rr") => {
                for _ in 0..reps {
                    let (cl, s) = plain_pair(srv).await?;
                    let mut samples = on_plain::rr(cl, s, srv, args.rr / 10, args.rr).await;
                    println!("{profile} {:.3}", percentile(&mut samples, 990));
                }
                return Ok(());
            }
            _ => anyhow::bail!("--profile: unknown stack or figure {profile}"),
        };
        for _ in 0..reps {
            let (n, c) = (args.streams, args.concurrency);
            let value = match (figure, quinn) {
                ("bulk", true) => {
                    let (c, s) = quinn_pair(srv).await?;
                    on_quinn::bulk(c, s, srv, total).await
                }
                ("bulk", false) => {
                    let (c, s) = kwik_pair(srv, sharing(&args)).await?;
                    on_kwik::bulk(c, s, srv, total).await
                }
                ("small", true) => {
                    let (cl, s) = quinn_pair(srv).await?;
                    on_quinn::small_streams(cl, s, srv, n, c).await
                }
                ("small", false) => {
                    let (cl, s) = kwik_pair(srv, sharing(&args)).await?;
                    on_kwik::small_streams(cl, s, srv, n, c).await
                }
                ("rr", true) => {
                    let (cl, s) = quinn_pair(srv).await?;
                    let mut samples = on_quinn::rr(cl, s, srv, args.rr / 10, args.rr).await;
                    percentile(&mut samples, 990)
                }
                ("rr", false) => {
                    let (cl, s) = kwik_pair(srv, sharing(&args)).await?;
                    let mut samples = on_kwik::rr(cl, s, srv, args.rr / 10, args.rr).await;
                    percentile(&mut samples, 990)
                }
                ("h3", true) => {
                    let (c, s) = quinn_pair(srv).await?;
                    let (c, s) = (h3_quinn::Connection::new(c), h3_quinn::Connection::new(s));
                    h3_on_quinn(c, s, srv, args.h3_gets, args.concurrency).await
                }
                ("h3", false) => {
                    let (c, s) = kwik_pair(srv, sharing(&args)).await?;
                    let (c, s) = (kwik_h3::Connection::new(c), kwik_h3::Connection::new(s));
                    h3_on_kwik(c, s, srv, args.h3_gets, args.concurrency).await
                }
                _ => anyhow::bail!("--profile: unknown figure {figure}"),
            };
            println!("{profile} {value:.3}");
        }
        return Ok(());
    }
    let mut bulk_kwik = 0.0;
    if wanted(&args, "bulk") {
        let (mut kwik, mut quinn, mut kcpu, mut qcpu) = (vec![], vec![], vec![], vec![]);
        for _ in 0..reps {
            let (c, s) = quinn_pair(srv).await?;
            let cpu = cpu_ns();
            quinn.push(on_quinn::bulk(c, s, srv, total).await);
            qcpu.push((cpu_ns() - cpu) as f64 / total as f64);
            let (c, s) = kwik_pair(srv, sharing(&args)).await?;
            let cpu = cpu_ns();
            kwik.push(on_kwik::bulk(c, s, srv, total).await);
            kcpu.push((cpu_ns() - cpu) as f64 / total as f64);
        }
        bulk_kwik = report.figure("bulk_gbps", &kwik, Some(&quinn)).median;
        report.figure("cpu_ns_per_byte", &kcpu, Some(&qcpu));
    }
    if wanted(&args, "small") {
        let (mut kwik, mut quinn) = (vec![], vec![]);
        let (mut kcpu, mut qcpu) = (vec![], vec![]);
        let mut shared: Vec<Vec<f64>> = vec![vec![]; SHARING.len()];
        let n = args.streams;
        for _ in 0..reps {
            let (c, s) = quinn_pair(srv).await?;
            let cpu = cpu_ns();
            quinn.push(on_quinn::small_streams(c, s, srv, n, args.concurrency).await);
            qcpu.push((cpu_ns() - cpu) as f64 / 1e3 / n as f64);
            let (c, s) = kwik_pair(srv, sharing(&args)).await?;
            let cpu = cpu_ns();
            kwik.push(on_kwik::small_streams(c, s, srv, n, args.concurrency).await);
            kcpu.push((cpu_ns() - cpu) as f64 / 1e3 / n as f64);
            for (per_carrier, rates) in SHARING.iter().zip(&mut shared) {
                let (c, s) = kwik_pair(srv, *per_carrier).await?;
                rates.push(on_kwik::small_streams(c, s, srv, n, args.concurrency).await);
            }
        }
        report.figure("small_streams_per_s", &kwik, Some(&quinn));
        for (per_carrier, rates) in SHARING.iter().zip(shared) {
            let name = format!("small_streams_per_s_carrier{per_carrier}");
            report.figure(&name, &rates, Some(&quinn));
        }
        report.figure("cpu_us_per_stream", &kcpu, Some(&qcpu));
    }
    if wanted(&args, "plain") {
        let (mut bulk, mut bulk_q, mut small, mut small_q) = (vec![], vec![], vec![], vec![]);
        let n = args.streams;
        for _ in 0..reps {
            let (c, s) = quinn_pair_with(srv, plain_transport(), Some(b"perf")).await?;
            bulk_q.push(on_quinn::bulk(c, s, srv, total).await);
            let (c, s) = plain_pair(srv).await?;
            bulk.push(on_plain::bulk(c, s, srv, total).await);
            let (c, s) = quinn_pair_with(srv, plain_transport(), Some(b"perf")).await?;
            small_q.push(on_quinn::small_streams(c, s, srv, n, args.concurrency).await);
            let (c, s) = plain_pair(srv).await?;
            small.push(on_plain::small_streams(c, s, srv, n, args.concurrency).await);
        }
        let (mut rr, mut rr_q) = (vec![], vec![]);
        for _ in 0..reps {
            let (c, s) = quinn_pair_with(srv, plain_transport(), Some(b"perf")).await?;
            let mut samples = on_quinn::rr(c, s, srv, args.rr / 10, args.rr).await;
            rr_q.push(percentile(&mut samples, 990));
            let (c, s) = plain_pair(srv).await?;
            let mut samples = on_plain::rr(c, s, srv, args.rr / 10, args.rr).await;
            rr.push(percentile(&mut samples, 990));
        }
        report.figure("plain_bulk_gbps", &bulk, Some(&bulk_q));
        report.figure("plain_small_streams_per_s", &small, Some(&small_q));
        report.figure("plain_rr_p99_us", &rr, Some(&rr_q));
    }
    if wanted(&args, "first_get") {
        for (name, kwik) in [("kwik-h3", true), ("h3-quinn", false)] {
            let f = first_get::first_get(kwik).await?;
            println!(
                "first_get {name}: {} bytes up, {} bytes down, {:.2} round trips",
                f.up, f.down, f.round_trips
            );
        }
    }
    if wanted(&args, "rr") {
        let warmup = args.rr / 10;
        let mut k = [vec![], vec![], vec![]];
        let mut q = [vec![], vec![], vec![]];
        for _ in 0..reps {
            let (c, s) = quinn_pair(srv).await?;
            let mut samples = on_quinn::rr(c, s, srv, warmup, args.rr).await;
            for (i, p) in [500, 990, 999].into_iter().enumerate() {
                q[i].push(percentile(&mut samples, p));
            }
            let (c, s) = kwik_pair(srv, sharing(&args)).await?;
            let mut samples = on_kwik::rr(c, s, srv, warmup, args.rr).await;
            for (i, p) in [500, 990, 999].into_iter().enumerate() {
                k[i].push(percentile(&mut samples, p));
            }
        }
        for (i, name) in ["rr_p50_us", "rr_p99_us", "rr_p999_us"]
            .into_iter()
            .enumerate()
        {
            report.figure(name, &k[i], Some(&q[i]));
        }
    }
    if wanted(&args, "h3") {
        let (mut kwik, mut quinn) = (vec![], vec![]);
        for _ in 0..reps {
            let (c, s) = quinn_pair(srv).await?;
            let (c, s) = (h3_quinn::Connection::new(c), h3_quinn::Connection::new(s));
            quinn.push(h3_on_quinn(c, s, srv, args.h3_gets, args.concurrency).await);
            let (c, s) = kwik_pair(srv, sharing(&args)).await?;
            let (c, s) = (kwik_h3::Connection::new(c), kwik_h3::Connection::new(s));
            kwik.push(h3_on_kwik(c, s, srv, args.h3_gets, args.concurrency).await);
        }
        report.figure("h3_gets_per_s", &kwik, Some(&quinn));
    }
    if wanted(&args, "stripe") {
        let (mut one, mut three) = (vec![], vec![]);
        for _ in 0..reps {
            one.push(stripe(srv, 0, total).await?);
            three.push(stripe(srv, 2, total).await?);
        }
        let one = report.figure("stripe_gbps_1", &one, None);
        let three = report.figure("stripe_gbps_3", &three, None);
        if bulk_kwik > 0.0 {
            report.single("stripe_1_over_bulk", one.median / bulk_kwik, "");
            report.single("stripe_3_over_bulk", three.median / bulk_kwik, "");
        }
    }
    if wanted(&args, "limit") {
        let udp: Vec<f64> = (0..reps.min(5))
            .map(|_| limit_udp(1.0, cores.get(1).copied()))
            .collect::<Result<_, _>>()?;
        let udp = report.figure("limit_udp_gbps", &udp, None);
        let (seal, open, both) = limit_aead(1.0)?;
        report.single("limit_aead_seal_gbps", seal, "(one core)");
        report.single("limit_aead_open_gbps", open, "(one core)");
        report.single("limit_aead_gbps", both, "(one core seals and opens)");
        if bulk_kwik > 0.0 {
            report.single("bulk_over_udp_limit", bulk_kwik / udp.median, "");
            report.single("bulk_over_aead_limit", bulk_kwik / both, "");
        }
    }
    if let Some(svg) = &args.svg {
        let title = format!("KWIK ÷ quinn, median of {reps} alternating runs on loopback");
        kwik_examples::plot::ratios_svg(svg, &title, &report.ratios)?;
        println!("ratios drawn in {}", svg.display());
    }
    report.print_floors();
    Ok(())
}
