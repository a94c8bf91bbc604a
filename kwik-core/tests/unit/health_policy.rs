//! Table tests of the path-health policy (`kwik_core::health`): exact deadlines and verdicts.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kwik_core::health::*;

const MS: Duration = Duration::from_millis(1);

fn started(t0: Instant) -> Health {
    let mut h = Health::default();
    h.start(t0, 250 * MS, 3);
    h
}

#[test]
fn window_is_the_larger_of_three_rtt_and_interval_times_threshold() {
    let h = started(Instant::now());
    for (rtt, window) in [(10, 750), (250, 750), (300, 900), (1000, 3000)] {
        assert_eq!(h.window(rtt * MS), window * MS, "rtt {rtt} ms");
    }
}

#[test]
fn probes_every_interval_and_answers_keep_the_path_alive() {
    let t0 = Instant::now();
    let mut h = started(t0);
    let rtt = 40 * MS;
    assert_eq!(h.deadline(rtt), Some(t0 + 250 * MS));
    assert_eq!(h.on_timeout(t0 + 249 * MS, rtt), HealthVerdict::default());
    let mut seq = 0;
    for i in 1..=20u32 {
        let t = t0 + 250 * MS * i;
        let v = h.on_timeout(t, rtt);
        assert_eq!(v.ping, Some(u64::from(i)));
        assert!(!v.failed);
        seq = v.ping.unwrap_or(seq);
        h.on_pong(t + rtt, seq);
    }
    assert_eq!(h.deadline(rtt), Some(t0 + 250 * MS * 21));
}

#[test]
fn silence_for_one_window_fails_the_path_exactly_then() {
    let t0 = Instant::now();
    let mut h = started(t0);
    let rtt = 40 * MS;
    let v = h.on_timeout(t0 + 250 * MS, rtt);
    h.on_pong(t0 + 290 * MS, v.ping.unwrap_or(0));
    // The path dies at 300 ms: probes at 500 and 750 ms go unanswered.
    assert_eq!(h.on_timeout(t0 + 500 * MS, rtt).ping, Some(2));
    assert_eq!(h.on_timeout(t0 + 750 * MS, rtt).ping, Some(3));
    assert_eq!(h.on_timeout(t0 + 1000 * MS, rtt).ping, Some(4));
    assert_eq!(h.deadline(rtt), Some(t0 + 1040 * MS));
    assert!(!h.on_timeout(t0 + 1039 * MS, rtt).failed);
    assert!(h.on_timeout(t0 + 1040 * MS, rtt).failed);
    // Failed once, then silent.
    assert_eq!(h.deadline(rtt), None);
    assert_eq!(h.on_timeout(t0 + 2000 * MS, rtt), HealthVerdict::default());
}

#[test]
fn long_rtt_does_not_fail_a_live_path() {
    let t0 = Instant::now();
    let mut h = started(t0);
    let rtt = 600 * MS; // Longer than the interval: probes overlap.
    let mut sent = Vec::new();
    let mut t = t0;
    while t < t0 + 10_000 * MS {
        t += 50 * MS;
        // Deliver answers one RTT after each probe.
        while let Some(&(seq, at)) = sent.first() {
            if at + rtt > t {
                break;
            }
            h.on_pong(at + rtt, seq);
            sent.remove(0);
        }
        let v = h.on_timeout(t, rtt);
        assert!(!v.failed, "failed at {:?}", t - t0);
        if let Some(seq) = v.ping {
            sent.push((seq, t));
        }
    }
}

#[test]
fn unsolicited_pongs_are_ignored() {
    let t0 = Instant::now();
    let mut h = started(t0);
    let rtt = 10 * MS;
    h.on_pong(t0 + 700 * MS, 99);
    h.on_pong(t0 + 700 * MS, 0);
    assert!(h.on_timeout(t0 + 750 * MS, rtt).failed);
}

#[test]
fn loss_widens_the_window_and_a_clean_path_narrows_it_again() {
    let mut h = started(Instant::now());
    let rtt = 40 * MS;
    assert_eq!(h.window(rtt), 750 * MS);
    // Steady loss rates: the window holds ln(1e-6) / ln(1 - (1 - p)²) probe intervals.
    for (percent, intervals) in [(1, 4), (10, 9)] {
        for _ in 0..30 {
            h.observe_loss(1000, 10 * percent);
        }
        assert_eq!(h.window(rtt), 250 * MS * intervals, "{percent} % loss");
    }
    // The loss stops: the window is back to the threshold.
    for _ in 0..30 {
        h.observe_loss(1000, 0);
    }
    assert_eq!(h.window(rtt), 750 * MS);
    // A long RTT still rules where it is the larger.
    assert_eq!(h.window(1000 * MS), 3000 * MS);
}

#[test]
fn any_packet_heard_keeps_the_path_alive() {
    let t0 = Instant::now();
    let mut h = started(t0);
    let rtt = 40 * MS;
    // No Pong at all, but packets keep arriving (a Pong stuck behind a full queue).
    for i in 1..=40u32 {
        let t = t0 + 100 * MS * i;
        h.on_progress(t);
        assert!(!h.on_timeout(t, rtt).failed, "at {t:?}");
    }
    // Then silence: it fails one window after the last packet.
    let last = t0 + 4000 * MS;
    assert!(!h.on_timeout(last + 749 * MS, rtt).failed);
    assert!(h.on_timeout(last + 750 * MS, rtt).failed);
}

const SEC: Duration = Duration::from_secs(1);

/// Runs `h` from `from` to `to` at its own deadlines, answering each probe one `rtt`
/// later (unless `answer` is false); returns the times probes were sent.
fn run(h: &mut Health, from: Instant, to: Instant, rtt: Duration, answer: bool) -> Vec<Instant> {
    let mut probes = Vec::new();
    let mut pending: Option<(u64, Instant)> = None;
    let mut t = from;
    loop {
        let next = [h.deadline(rtt), pending.map(|(_, at)| at)]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next.filter(|n| *n <= to) else {
            return probes;
        };
        t = t.max(next);
        if let Some((seq, at)) = pending.filter(|(_, at)| *at <= t) {
            h.on_pong(at, seq);
            pending = None;
        }
        let v = h.on_timeout(t, rtt);
        assert!(!v.failed, "failed at {:?}", t - from);
        if let Some(seq) = v.ping {
            probes.push(t);
            if answer {
                pending = Some((seq, t + rtt));
            }
        }
    }
}

#[test]
fn an_idle_path_is_probed_at_the_idle_cadence_and_fails_after_threshold_idle_intervals() {
    let t0 = Instant::now();
    let mut h = started(t0);
    h.probe_idle(10 * SEC, true);
    let rtt = 40 * MS;
    let probes = run(&mut h, t0, t0 + 61 * SEC, rtt, true);
    // Busy cadence for two windows (1.5 s), then one probe every 10 s.
    let busy: Vec<_> = probes.iter().filter(|t| **t <= t0 + 1500 * MS).collect();
    assert_eq!(busy.len(), 5, "{probes:?}");
    assert_eq!(
        probes.len(),
        5 + 5,
        "{:?}",
        probes.iter().map(|t| *t - t0).collect::<Vec<_>>()
    );
    assert!(h.is_idle());
    assert_eq!(h.degraded_after(rtt), 15 * SEC);
    // Then silence: it fails three idle intervals after the last answer.
    let last = *probes.last().unwrap() + rtt;
    assert_eq!(h.deadline(rtt), Some(last - rtt + 10 * SEC));
    let v = h.on_timeout(last - rtt + 10 * SEC, rtt);
    assert!(v.ping.is_some() && !v.failed);
    assert!(!h.on_timeout(last + 30 * SEC - MS, rtt).failed);
    assert!(h.on_timeout(last + 30 * SEC, rtt).failed);
}

#[test]
fn the_first_use_of_an_idle_path_restores_the_busy_window() {
    let t0 = Instant::now();
    let mut h = started(t0);
    h.probe_idle(10 * SEC, true);
    let rtt = 40 * MS;
    let _ = run(&mut h, t0, t0 + 25 * SEC, rtt, true);
    assert!(h.is_idle());
    // Used at 25 s, after the path died unseen at 24 s: probes at the busy cadence at
    // once, and it fails one busy window after the use.
    let used = t0 + 25 * SEC;
    h.on_busy(used);
    assert!(!h.is_idle());
    assert_eq!(h.deadline(rtt), Some(used + 250 * MS));
    assert_eq!(h.degraded_after(rtt), 375 * MS);
    let probes = run(&mut h, used, used + 749 * MS, rtt, false);
    assert_eq!(probes.len(), 2);
    assert!(h.on_timeout(used + 750 * MS, rtt).failed);
}

#[test]
fn a_side_that_sends_no_idle_probes_lives_on_what_it_hears() {
    let t0 = Instant::now();
    let mut h = started(t0);
    // The peer (or QUIC's keep-alive) probes an idle path; this side only listens.
    h.probe_idle(10 * SEC, false);
    let rtt = 40 * MS;
    let probes = run(&mut h, t0, t0 + 1500 * MS, rtt, true);
    assert_eq!(probes.len(), 5);
    assert!(h.is_idle());
    // A keep-alive heard every 10 s keeps it alive without a probe of its own.
    for i in 1..=6u32 {
        let t = t0 + 1500 * MS + 10 * SEC * i;
        h.on_progress(t);
        let v = h.on_timeout(t, rtt);
        assert_eq!(v, HealthVerdict::default(), "at {i}");
    }
    let last = t0 + 1500 * MS + 60 * SEC;
    assert_eq!(h.deadline(rtt), Some(last + 30 * SEC));
    assert!(h.on_timeout(last + 30 * SEC, rtt).failed);
}
