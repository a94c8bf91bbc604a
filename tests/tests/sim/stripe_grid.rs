//! Striping over a grid of heterogeneous three-path scenarios (rates, RTTs, loss up to
//! 2 %), in virtual time, with the client scheduling every pull. In every scenario the
//! striped goodput reaches at least the best single path's (each single path measured
//! alone in the same simulator). In every scenario without random loss it reaches at least
//! 0.95 of the sum of the singles and 0.92 of the summed capacity, but in one known miss:
//! scenario 3, where plain QUIC alone gets only 0.78 of the 10 Mbit/s path with a 400 ms
//! RTT behind a 50 ms queue (the singles sum to 0.88 of the capacity), so 0.92 is out of
//! any aggregation's reach; its floor is 0.84. Three scenarios put the primary on the worst
//! path, where a control loop through the primary would pace every server by it.
//!
//! Goodput is timed from the first byte the client reads to the last, and every body
//! lasts at least 20 s at the summed rate (singles: 20 s at their own rate), so that
//! handshakes and slow start do not decide it. Prints every figure; `GRID_ONLY=i` runs one
//! scenario.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::Config;
use kwik_tests::app::{payload, sha256};
use kwik_tests::cluster::Cluster;
use kwik_tests::net::LinkConfig;

/// (Mbit/s, one-way delay in ms, loss) per path; the first is the primary.
type Scenario = [(u64, u64, f64); 3];

const GRID: [Scenario; 16] = [
    [(40, 10, 0.0), (20, 30, 0.0), (10, 60, 0.0)],
    [(20, 20, 0.0), (20, 20, 0.0), (20, 20, 0.0)],
    [(100, 5, 0.0), (10, 50, 0.0), (5, 100, 0.0)],
    [(10, 10, 0.0), (10, 100, 0.0), (10, 200, 0.0)],
    [(50, 20, 0.01), (20, 20, 0.0), (10, 20, 0.0)],
    [(30, 10, 0.02), (30, 10, 0.02), (30, 10, 0.02)],
    [(5, 10, 0.0), (5, 10, 0.0), (80, 40, 0.0)],
    [(20, 5, 0.005), (15, 80, 0.01), (10, 40, 0.0)],
    [(60, 25, 0.0), (2, 25, 0.0), (2, 25, 0.0)],
    [(8, 150, 0.0), (8, 60, 0.01), (40, 5, 0.0)],
    [(25, 15, 0.01), (25, 60, 0.01), (25, 120, 0.005)],
    [(100, 2, 0.0), (100, 2, 0.0), (100, 2, 0.0)],
    [(1, 50, 0.0), (50, 10, 0.0), (20, 30, 0.02)],
    // The primary is the worst path.
    [(1, 10, 0.0), (40, 10, 0.0), (20, 30, 0.0)],
    [(8, 150, 0.0), (40, 10, 0.0), (20, 30, 0.0)],
    [(2, 300, 0.0), (40, 10, 0.0), (20, 30, 0.0)],
];

/// Seconds each body lasts at the rate it is sized for.
const BODY_SECS: u64 = 20;

/// Striped goodput over the summed capacity, in scenarios without random loss.
const LOSSLESS_FLOOR: f64 = 0.92;

/// Striped goodput over the sum of what each path gets alone, without random loss.
const SINGLES_FLOOR: f64 = 0.95;

/// Lossless scenarios where plain QUIC itself cannot reach [`LOSSLESS_FLOOR`] of the raw
/// capacity, with the floor asserted instead.
const KNOWN_MISSES: [(usize, f64); 1] = [(3, 0.84)];

fn link(&(mbit, delay, loss): &(u64, u64, f64)) -> LinkConfig {
    LinkConfig::default()
        .rate_mbit(mbit)
        .delay_ms(delay)
        .loss(loss)
        .queue_ms(50)
}

fn config() -> Config {
    let mut c = Config::default();
    c.stream_receive_window = 16 << 20;
    c.receive_window = 64 << 20;
    c
}

/// Stripes a body lasting [`BODY_SECS`] at `mbit` over `links` (the first is the
/// primary's); returns Mbit/s of goodput from the first byte read to the last.
fn goodput(seed: u64, links: &[LinkConfig], mbit: u64) -> f64 {
    let len = (mbit * 1_000_000 / 8 * BODY_SECS) as usize;
    let body = payload(seed, len);
    let want = sha256(&body);
    let mut c = Cluster::new(seed, links, config(), config(), body);
    assert!(c.join_all(Duration::from_secs(30)), "paths joined");
    c.start_stripe();
    assert!(
        c.run_to_end(Duration::from_secs(40 * BODY_SECS)),
        "body delivered"
    );
    assert_eq!(c.reader.digest(), want);
    let first = c.reader.first_byte.expect("bytes arrived");
    let last = c.reader.last_progress.expect("bytes arrived");
    if links.len() > 1 && std::env::var("TRACE").is_ok() {
        let per_path = c.received_per_path();
        let total: u64 = per_path.values().sum();
        println!(
            "   {:?} from first to last byte; received {:.3} x the body: {per_path:?}",
            last - first,
            total as f64 / len as f64
        );
    }
    len as f64 * 8.0 / (last - first).as_secs_f64() / 1e6
}

/// Runs scenario `i` and returns what fell short, if anything.
fn scenario(i: usize) -> Option<String> {
    let scenario = &GRID[i];
    let links: Vec<LinkConfig> = scenario.iter().map(link).collect();
    let seed = 100 + i as u64;
    let capacity: u64 = scenario.iter().map(|p| p.0).sum();
    let striped = goodput(seed, &links, capacity);
    let singles: Vec<f64> = links
        .iter()
        .zip(scenario)
        .map(|(l, p)| goodput(seed, std::slice::from_ref(l), p.0))
        .collect();
    let best = singles.iter().copied().fold(0.0, f64::max);
    let share = striped / capacity as f64;
    let of_singles = striped / singles.iter().sum::<f64>();
    let lossless = scenario.iter().all(|p| p.2 == 0.0);
    let floor = KNOWN_MISSES
        .iter()
        .find(|(k, _)| *k == i)
        .map_or(LOSSLESS_FLOOR, |(_, f)| *f);
    println!(
        "{i:2} {scenario:?}: striped {striped:.1} Mbit/s ({share:.3} of {capacity}, {of_singles:.3} \
         of the singles' sum), singles {singles:.1?}, vs best {:.2}{}",
        striped / best,
        if floor < LOSSLESS_FLOOR {
            format!(" (known miss, floor {floor})")
        } else {
            String::new()
        }
    );
    if striped < best {
        return Some(format!(
            "{i}: striped {striped:.1} below the best single path {best:.1}"
        ));
    }
    if lossless && share < floor {
        return Some(format!(
            "{i}: striped {share:.3} of capacity, below {floor}"
        ));
    }
    if lossless && of_singles < SINGLES_FLOOR {
        return Some(format!(
            "{i}: striped {of_singles:.3} of the singles' sum, below {SINGLES_FLOOR}"
        ));
    }
    None
}

/// Runs the scenarios `range` (or only `GRID_ONLY`) and fails naming every shortfall.
fn run(range: std::ops::Range<usize>) {
    let only: Option<usize> = std::env::var("GRID_ONLY").ok().and_then(|v| v.parse().ok());
    let failures: Vec<String> = range
        .filter(|i| only.is_none_or(|o| o == *i))
        .filter_map(scenario)
        .collect();
    assert!(failures.is_empty(), "shortfalls: {failures:#?}");
}

#[test]
fn grid_part_1() {
    run(0..4);
}

#[test]
fn grid_part_2() {
    run(4..8);
}

#[test]
fn grid_part_3() {
    run(8..12);
}

#[test]
fn grid_part_4() {
    run(12..GRID.len());
}
