//! The stripe scheduler against a model of paths: each serves its chunks in order at a
//! fixed rate, its progress observed every millisecond; and table tests of the rules with
//! exact deadlines.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use kwik_core::PathId;
use kwik_core::stripe::{INITIAL_CHUNK, MIN_CHUNK, Plan, Stripe};

struct ModelPath {
    id: PathId,
    /// Bytes per second.
    rate: f64,
    /// Outstanding (delegation id, bytes left).
    queue: VecDeque<(u64, u64)>,
    dead: bool,
    /// Bytes served so far: the progress the scheduler observes.
    served: u64,
}

struct Outcome {
    /// Bytes each path was first to deliver.
    delivered: Vec<(PathId, u64)>,
    elapsed: Duration,
    duplicated: u64,
}

/// Runs a stripe of `len` bytes over paths of `rates` (bytes/s) in 1 ms steps; the path
/// at `kill.0` dies at `kill.1`.
fn run(rates: &[f64], len: u64, kill: Option<(usize, Duration)>) -> Outcome {
    let start = Instant::now();
    let mut now = start;
    let step = Duration::from_millis(1);
    let mut stripe = Stripe::new(1000, len, Duration::from_millis(100), 3);
    let mut paths: Vec<ModelPath> = rates
        .iter()
        .enumerate()
        .map(|(i, r)| ModelPath {
            id: PathId(i as u32),
            rate: *r,
            queue: VecDeque::new(),
            dead: false,
            served: 0,
        })
        .collect();
    let ids: Vec<PathId> = paths.iter().map(|p| p.id).collect();
    stripe.set_paths(&ids);
    let mut next_id = 0;
    let mut duplicated = 0;
    let mut chunks: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut held: Vec<(u64, u64)> = Vec::new();
    for _ in 0..600_000 {
        if stripe.is_complete() {
            break;
        }
        if let Some((victim, at)) = kill
            && now - start >= at
            && !paths[victim].dead
        {
            paths[victim].dead = true;
            for (id, _) in paths[victim].queue.drain(..) {
                let (s, e) = chunks[&id];
                stripe.on_failed(id, first_gap(&held, s, e).unwrap_or(e));
            }
            let alive: Vec<PathId> = paths.iter().filter(|p| !p.dead).map(|p| p.id).collect();
            stripe.set_paths(&alive);
        }
        while let Some(plan) = stripe.plan(now, u64::MAX, 8 << 20) {
            assert!(plan.start < plan.end);
            if plan.twin_of.is_some() {
                duplicated += plan.end - plan.start;
            }
            stripe.assigned(plan, next_id, now);
            chunks.insert(next_id, (plan.start, plan.end));
            paths[plan.path.0 as usize]
                .queue
                .push_back((next_id, plan.end - plan.start));
            next_id += 1;
        }
        let mut cancelled = Vec::new();
        for p in paths.iter_mut().filter(|p| !p.dead) {
            let mut budget = (p.rate / 1000.0) as u64;
            while budget > 0 {
                let Some(front) = p.queue.front_mut() else {
                    break;
                };
                let n = budget.min(front.1);
                front.1 -= n;
                budget -= n;
                p.served += n;
                if front.1 == 0 {
                    let (id, _) = p.queue.pop_front().unwrap_or_default();
                    held.push(chunks[&id]);
                    cancelled.extend(stripe.on_done(id, now));
                }
            }
        }
        for twin in cancelled {
            for q in paths.iter_mut() {
                q.queue.retain(|(i, _)| *i != twin);
            }
        }
        for p in &paths {
            stripe.observe(p.id, p.served, now);
        }
        now += step;
    }
    assert!(stripe.is_complete(), "stripe did not complete");
    assert_eq!(
        first_gap(&held, 1000, 1000 + len),
        None,
        "a byte was never delivered"
    );
    Outcome {
        delivered: stripe.delivered().collect(),
        elapsed: now - start,
        duplicated,
    }
}

/// The first offset of `[start, end)` no range in `held` covers.
fn first_gap(held: &[(u64, u64)], start: u64, end: u64) -> Option<u64> {
    let mut pos = start;
    loop {
        if pos >= end {
            return None;
        }
        match held
            .iter()
            .filter(|(s, e)| *s <= pos && pos < *e)
            .map(|r| r.1)
            .max()
        {
            Some(e) => pos = e,
            None => return Some(pos),
        }
    }
}

#[test]
fn shares_follow_rates() {
    let rates = [5e6, 2.5e6, 1.25e6];
    let len = 100 << 20;
    let out = run(&rates, len, None);
    let total: f64 = rates.iter().sum();
    for (p, bytes) in &out.delivered {
        let want = rates[p.0 as usize] / total;
        let got = *bytes as f64 / len as f64;
        assert!(
            (got - want).abs() / want < 0.15,
            "{p}: share {got:.3}, capacity share {want:.3}"
        );
    }
    let ideal = len as f64 / total;
    assert!(
        out.elapsed.as_secs_f64() < ideal * 1.05,
        "took {:?}, ideal {ideal:.2} s",
        out.elapsed
    );
}

#[test]
fn end_game_copies_the_slow_tail() {
    // One fast and one very slow path: without copies the slow path's last chunk would
    // finish long after the fast one ran dry.
    let rates = [10e6, 0.2e6];
    let out = run(&rates, 8 << 20, None);
    assert!(out.duplicated > 0, "no end-game copy was made");
    let ideal = (8u64 << 20) as f64 / 10.2e6;
    assert!(
        out.elapsed.as_secs_f64() < ideal * 1.3,
        "took {:?}",
        out.elapsed
    );
}

#[test]
fn failed_path_ranges_are_reassigned() {
    let rates = [4e6, 4e6, 4e6];
    let len = 32u64 << 20;
    let out = run(&rates, len, Some((1, Duration::from_secs(1))));
    // 12 MB/s for one second, then 8 MB/s for the rest, plus one chunk time of slack.
    let ideal = 1.0 + (len as f64 - 12e6) / 8e6;
    assert!(
        out.elapsed.as_secs_f64() < ideal + 0.3,
        "took {:?}, ideal {ideal:.2} s",
        out.elapsed
    );
}

#[test]
fn waits_for_credit_rather_than_cutting_slivers() {
    let now = Instant::now();
    let mut stripe = Stripe::new(0, 10 << 20, Duration::from_millis(100), 3);
    stripe.set_paths(&[PathId(0)]);
    assert_eq!(stripe.plan(now, MIN_CHUNK - 1, 8 << 20), None);
    let plan = stripe.plan(now, u64::MAX, 8 << 20);
    assert_eq!(plan.map(|p| p.end - p.start), Some(INITIAL_CHUNK));
}

#[test]
fn a_full_window_copies_the_chunk_that_holds_it() {
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    let mut stripe = Stripe::new(0, 100 << 20, Duration::from_millis(100), 2);
    stripe.set_paths(&[PathId(0), PathId(1)]);
    // Both lanes take two chunks; lane 1 then goes quiet while lane 0 completes its own
    // and learns its rate.
    let mut id = 0;
    let mut owner = BTreeMap::new();
    while let Some(plan) = stripe.plan(t0, u64::MAX, 8 << 20) {
        stripe.assigned(plan, id, t0);
        owner.insert(id, plan);
        id += 1;
    }
    let lane0: Vec<u64> = owner
        .iter()
        .filter(|(_, p)| p.path == PathId(0))
        .map(|(i, _)| *i)
        .collect();
    for (k, i) in lane0.iter().enumerate() {
        stripe.on_done(*i, t0 + 50 * ms * (k as u32 + 1));
    }
    // The window is full (no credit): lane 0 copies lane 1's lowest chunk.
    let now = t0 + 2000 * ms;
    let plan = stripe.plan(now, 0, 8 << 20).expect("a copy");
    let lowest = owner
        .values()
        .filter(|p| p.path == PathId(1))
        .map(|p| p.start)
        .min();
    assert_eq!(plan.path, PathId(0));
    assert_eq!(Some(plan.start), lowest);
    assert!(plan.twin_of.is_some() && !plan.fresh);
}

/// Two paths of round trip `rtt` with every chunk they can take pulled at `t0`: the
/// stripe, the next pull id, and the pull and path of the chunk at offset 0.
fn two_paths_pulled(t0: Instant, rtt: Duration) -> (Stripe, u64, (u64, PathId)) {
    let mut stripe = Stripe::new(0, 100 << 20, Duration::from_millis(100), 2);
    stripe.set_paths(&[PathId(0), PathId(1)]);
    for p in [PathId(0), PathId(1)] {
        stripe.set_delay(p, rtt);
    }
    let mut id = 0;
    let mut lowest = None;
    while let Some(plan) = stripe.plan(t0, u64::MAX, 8 << 20) {
        if plan.start == 0 {
            lowest = Some((id, plan.path));
        }
        stripe.assigned(plan, id, t0);
        id += 1;
    }
    (stripe, id, lowest.expect("the first chunk"))
}

#[test]
fn a_stalled_path_loses_the_readers_chunk_at_once() {
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    let (mut stripe, id, (lowest, owner)) = two_paths_pulled(t0, 40 * ms);
    let other = if owner == PathId(0) {
        PathId(1)
    } else {
        PathId(0)
    };
    // Both deliver their first bytes at 50 ms; then the owner of the reader's chunk goes
    // silent while the other keeps delivering.
    stripe.observe(owner, 1, t0 + 50 * ms);
    for t in 50..=200u32 {
        stripe.observe(other, u64::from(t), t0 + t * ms);
    }
    // Half the round trip (20 ms, also the floor) after its last byte.
    assert_eq!(stripe.next_deadline(), Some(t0 + 70 * ms));
    assert_eq!(stripe.plan_stall(t0 + 69 * ms), None);
    // Stall copies are made only where the caller asks for them (at the deadline).
    assert_eq!(stripe.plan(t0 + 70 * ms, 0, 8 << 20), None);
    let plan = stripe.plan_stall(t0 + 70 * ms).expect("a copy");
    assert_eq!(
        (plan.path, plan.start, plan.twin_of, plan.fresh),
        (other, 0, Some(lowest), false)
    );
    stripe.assigned(plan, id, t0 + 70 * ms);
    // One copy at a time: the chunk has a twin now.
    assert_eq!(stripe.next_deadline(), None);
}

#[test]
fn a_path_still_due_its_first_byte_is_not_stalled() {
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    let mut stripe = Stripe::new(0, 100 << 20, Duration::from_millis(100), 2);
    stripe.set_paths(&[PathId(0), PathId(1)]);
    stripe.set_delay(PathId(0), 300 * ms);
    stripe.set_delay(PathId(1), 10 * ms);
    while let Some(plan) = stripe.plan(t0, u64::MAX, 8 << 20) {
        stripe.assigned(plan, plan.start, t0);
    }
    // Path 0 holds the first chunk: its first byte is due a round trip after the pull,
    // and it stalls half a round trip later, once path 1 delivered since it was due.
    assert_eq!(stripe.next_deadline(), None);
    stripe.observe(PathId(1), 1, t0 + 20 * ms);
    assert_eq!(stripe.next_deadline(), None);
    stripe.observe(PathId(1), 2, t0 + 320 * ms);
    assert_eq!(stripe.next_deadline(), Some(t0 + 450 * ms));
    // A single path has nowhere to copy to: no deadline at all.
    let mut alone = Stripe::new(0, 1 << 20, Duration::from_millis(100), 2);
    alone.set_paths(&[PathId(0)]);
    let plan = alone.plan(t0, u64::MAX, 8 << 20).expect("a chunk");
    alone.assigned(plan, 0, t0);
    assert_eq!(alone.next_deadline(), None);
}

#[test]
fn when_every_path_goes_silent_none_is_stalled() {
    // The client itself stalled (or the network went quiet for all): no path delivered
    // more than another, so nothing is copied, however long the silence.
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    let (mut stripe, _, _) = two_paths_pulled(t0, 40 * ms);
    stripe.observe(PathId(0), 1, t0 + 50 * ms);
    stripe.observe(PathId(1), 1, t0 + 50 * ms);
    assert_eq!(stripe.next_deadline(), None);
    assert_eq!(stripe.plan_stall(t0 + 5000 * ms), None);
}

#[test]
fn a_path_with_jittery_deliveries_gets_a_longer_stall_threshold() {
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    let (mut stripe, _, (_, owner)) = two_paths_pulled(t0, 10 * ms);
    let other = PathId(1 - owner.0);
    // The owner delivers every 10 or 50 ms, alternately: mean about 30 ms, deviation about
    // 20 ms, so a 40 ms silence is normal for it where the floor (20 ms) would call it a
    // stall.
    let mut t = 20;
    for i in 0..20u64 {
        t += if i % 2 == 0 { 10 } else { 50 };
        stripe.observe(owner, i + 1, t0 + t * ms);
    }
    stripe.observe(other, 1, t0 + (t + 60) * ms);
    let deadline = stripe.next_deadline().expect("a deadline");
    let threshold = deadline - (t0 + t * ms);
    assert!(threshold > 80 * ms, "{threshold:?}");
    assert_eq!(stripe.plan_stall(t0 + (t + 60) * ms), None);
}

/// Two lanes of depth 3, every chunk pulled at `t0`, and the first chunk of each done
/// 50 ms later (both rates known): the stripe, and the chunk that now holds the window
/// (`(id, start, end)`, on lane 0).
fn window_held_by_lane_0(t0: Instant) -> (Stripe, (u64, u64, u64)) {
    let mut stripe = Stripe::new(0, 100 << 20, Duration::from_millis(100), 3);
    stripe.set_paths(&[PathId(0), PathId(1)]);
    let mut chunks = Vec::new();
    let mut id = 0;
    while let Some(plan) = stripe.plan(t0, u64::MAX, 8 << 20) {
        stripe.assigned(plan, id, t0);
        chunks.push((id, plan.path, plan.start, plan.end));
        id += 1;
    }
    let first = |lane| {
        chunks
            .iter()
            .find(|c| c.1 == PathId(lane))
            .copied()
            .unwrap()
    };
    let t = t0 + Duration::from_millis(50);
    assert_eq!(stripe.on_done(first(0).0, t), None);
    assert_eq!(stripe.on_done(first(1).0, t), None);
    let lowest = chunks
        .iter()
        .filter(|c| c.0 != first(0).0 && c.0 != first(1).0)
        .min_by_key(|c| c.2)
        .copied()
        .unwrap();
    assert_eq!(lowest.1, PathId(0));
    (stripe, (lowest.0, lowest.2, lowest.3))
}

/// [`window_held_by_lane_0`], with half of the held chunk delivered, slowly, by 2 s and
/// the window full: the stripe, the held chunk's id and end, the receiver's front, the
/// time, and the copy of the back planned then.
fn split_at_half(t0: Instant) -> (Stripe, u64, u64, u64, Instant, Plan) {
    let (mut stripe, (held, start, end)) = window_held_by_lane_0(t0);
    let front = start + (end - start) / 2;
    stripe.set_front(front);
    let now = t0 + Duration::from_millis(2000);
    let plan = stripe.plan(now, 0, 8 << 20).expect("a copy of the back");
    (stripe, held, end, front, now, plan)
}

#[test]
fn a_full_window_splits_the_rest_of_a_chunk_whose_path_delivers() {
    let (mut stripe, held, end, front, now, plan) = split_at_half(Instant::now());
    assert_eq!(plan.path, PathId(1));
    assert_eq!(plan.twin_of, Some(held));
    assert_eq!(plan.end, end);
    // Lane 0 keeps a front share of the rest, at the rate it showed on this chunk: the
    // back starts past the receiver's front, and takes most of the rest.
    assert!(
        plan.start > front && plan.start < front + (end - front) / 2,
        "back from {} in [{front}, {end})",
        plan.start
    );
    let copy = 1000;
    stripe.assigned(plan, copy, now);
    assert!(stripe.is_split(copy) && stripe.is_split(held));
    // The back arriving first cancels nothing: lane 0 still owes the front share.
    let later = now + Duration::from_millis(10);
    assert_eq!(stripe.on_done(copy, later), None);
    assert!(stripe.is_split(held) && !stripe.is_complete());
    // Lane 0 is still late: its front share, and only that, is copied, once.
    let front_copy = stripe
        .plan(later, 0, 8 << 20)
        .expect("a copy of the front share");
    assert_eq!(
        (front_copy.start, front_copy.end, front_copy.twin_of),
        (front, plan.start, Some(held))
    );
    stripe.assigned(front_copy, copy + 1, later);
    assert_eq!(stripe.on_done(copy + 1, later), None);
    assert_eq!(stripe.plan(later, 0, 8 << 20), None, "copied a third time");
    assert_eq!(stripe.on_done(held, later), None);
}

#[test]
fn a_split_chunk_whose_path_fails_gives_back_its_front_share() {
    let (mut stripe, held, _, front, now, plan) = split_at_half(Instant::now());
    stripe.assigned(plan, 1000, now);
    // Lane 0 fails having delivered up to the front: the back runs on lane 1, and only
    // the front share goes back, first in line.
    stripe.on_failed(held, front);
    stripe.set_paths(&[PathId(1)]);
    let again = stripe
        .plan(now, u64::MAX, 8 << 20)
        .expect("the front share again");
    assert_eq!((again.start, again.end), (front, plan.start));
    assert_eq!(again.path, PathId(1));
    assert!(again.twin_of.is_none() && !again.fresh);
}

#[test]
fn a_split_chunk_whose_path_fails_after_its_back_is_in_gives_back_nothing_held() {
    let (mut stripe, held, _, front, now, plan) = split_at_half(Instant::now());
    stripe.assigned(plan, 1000, now);
    assert_eq!(stripe.on_done(1000, now), None);
    let front_copy = stripe
        .plan(now, 0, 8 << 20)
        .expect("a copy of the front share");
    stripe.assigned(front_copy, 1001, now);
    // Lane 0's pull fails at the front: the front share runs on lane 1, and the back is
    // in. (Only the pull fails here: a failed path would give back its other chunks too.)
    stripe.on_failed(held, front);
    let next = stripe.plan(now, u64::MAX, 8 << 20).expect("a fresh chunk");
    assert!(
        next.fresh,
        "re-pulled what the receiver holds or what runs: {next:?}"
    );
}

#[test]
fn a_failed_back_leaves_the_chunk_whole_on_its_path() {
    let (mut stripe, held, end, _, now, plan) = split_at_half(Instant::now());
    let back_start = plan.start;
    stripe.assigned(plan, 1000, now);
    // The back's path fails before it delivered: lane 0 still sends the whole chunk, so
    // nothing goes back, and a later copy of the chunk covers its whole rest.
    stripe.on_failed(1000, back_start);
    let next = stripe.plan(now, u64::MAX, 8 << 20).expect("a fresh chunk");
    assert!(next.fresh, "re-pulled a range lane 0 still sends: {next:?}");
    // Lane 0 still holds the window: the chunk's whole rest is copied, not a front share.
    let copy = stripe.plan(now, 0, 8 << 20).expect("a copy");
    assert_eq!((copy.twin_of, copy.end), (Some(held), end));
}

#[test]
fn no_stall_deadline_without_a_lane_that_takes_new_work() {
    let (a, b) = (PathId(0), PathId(1));
    let now = Instant::now();
    let mut s = Stripe::new(0, 1 << 20, Duration::from_millis(50), 3);
    s.set_paths(&[a, b]);
    let plan = s.plan(now, 1 << 20, 1 << 20).unwrap();
    s.assigned(plan, 1, now);
    assert!(
        s.next_deadline().is_some(),
        "the other lane may copy a stall"
    );
    // The only other lane drains: no copy can be made, so no deadline is due (one that is
    // would fire again and again with nothing to do).
    let other = if plan.path == a { b } else { a };
    s.set_draining(&[other]);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.plan_stall(now + Duration::from_secs(1)), None);
    // A draining lane gets no fresh chunk either.
    let next = s.plan(now, 1 << 20, 1 << 20);
    assert!(next.is_none_or(|p| p.path == plan.path), "{next:?}");
}
