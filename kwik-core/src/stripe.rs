//! Striping: one body served by every server of a session at once.
//!
//! The client runs this schedule: the primary signed one ticket for the whole body, and
//! the client cuts it into chunks it pulls from each server over that server's own path.
//! Each path keeps up to `depth` chunks outstanding and gets its next one the moment one
//! completes, so every path's share follows the rate it actually delivers, and no round
//! trip through the primary sits in the loop.
//! Chunks are sized by time (`rate × chunk_time`), so a chunk takes about as long on every
//! path and the client's reorder buffer stays near `total rate × chunk_time`. In the end
//! game, an idle path duplicates the outstanding chunk expected to finish last, when it
//! would finish it at least one of its round trips sooner; the first copy wins. Ranges of a failed path go back to the
//! front of the queue and are handed to the best path at once (their credit is already
//! reserved). A path that stops delivering while it holds the chunk the reader waits for
//! (no new byte for half its round trip, at least [`MIN_STALL`], after its first byte was
//! due) has that chunk copied to another path at once, long before any health verdict.
//! When the receiver's window is full, the chunk that holds it (the lowest outstanding
//! one) is split if another path would finish its rest sooner: that path pulls the back of
//! the rest, from where the chunk's own path is expected to be when the back is in, so
//! that the two meet instead of sending the same bytes; if the chunk's path still holds
//! the window once the back is in, its front share is copied once more. A copy never
//! covers bytes the receiver already holds below its front.
//!
//! Pure state: the caller feeds reports, rates and credit, and issues what it is told.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::PathId;

/// Smallest chunk, so that per-chunk control overhead stays small.
pub const MIN_CHUNK: u64 = 64 * 1024;
/// Chunk size before a path's rate is known: small, so that a slow path's first chunks do
/// not hold the reader while its rate is being learnt.
pub const INITIAL_CHUNK: u64 = 64 * 1024;
/// Smallest back of a chunk split for a full window (see [`Stripe::set_front`]).
pub const MIN_BACK: u64 = 16 * 1024;
/// Shortest silence that counts as a stall of a path holding the reader's chunk.
pub const MIN_STALL: Duration = Duration::from_millis(20);

/// One outstanding chunk.
#[derive(Debug, Clone)]
struct Chunk {
    id: u64,
    start: u64,
    end: u64,
    assigned: Instant,
    /// The other copy in the end game.
    twin: Option<u64>,
    /// One of a split pair: the rest of a chunk was split between its path (the front)
    /// and another one (the back, a copy pulled from where the front's path is expected to
    /// be when the copy ends). Each one's path is told to stop when the pair's bytes are in.
    split: bool,
    /// Where the back of this chunk's split starts, once it was split (until the back's
    /// pull fails).
    back: Option<u64>,
    /// The front share was copied too, once the back was in and the path still held the
    /// window: the chunk is not copied again.
    front_copied: bool,
}

#[derive(Debug, Default)]
struct Lane {
    /// Bytes per second, measured from completions.
    rate: Option<f64>,
    outstanding: Vec<Chunk>,
    last_done: Option<Instant>,
    /// Bytes of chunks this lane completed first.
    delivered: u64,
    /// How long the pull loop takes to get this lane's next chunk going: its round trip
    /// (the pull out, the first byte back).
    delay: Duration,
    /// The rate is still climbing (the last sample was well above the average): the path
    /// is in slow start and will take more than it has shown.
    growing: bool,
    /// The path's progress count at the last observation, and when it last grew.
    seen: u64,
    last_progress: Option<Instant>,
    /// When the lane last went from idle to busy.
    busy_since: Option<Instant>,
    /// The lane's server is draining: it finishes its chunks and takes no new one (no
    /// fresh range, re-pull or copy).
    draining: bool,
    /// The gaps between the lane's deliveries while it is busy.
    gaps: Gaps,
}

/// Smoothed gaps between a busy lane's deliveries, and their mean deviation, as TCP
/// smooths round trips (RFC 6298: gains 1/8 and 1/4).
#[derive(Debug, Default, Clone, Copy)]
struct Gaps {
    mean: f64,
    deviation: f64,
    samples: u32,
}

/// Gap samples a lane needs before its own gaps set its stall threshold.
const GAP_SAMPLES: u32 = 8;

impl Gaps {
    fn sample(&mut self, gap: Duration) {
        let g = gap.as_secs_f64();
        if self.samples == 0 {
            self.mean = g;
            self.deviation = g / 2.0;
        } else {
            self.deviation = 0.75 * self.deviation + 0.25 * (g - self.mean).abs();
            self.mean = 0.875 * self.mean + 0.125 * g;
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// A gap this lane rarely shows when healthy: mean plus four deviations, once
    /// [`GAP_SAMPLES`] were seen.
    fn unusual(&self) -> Option<Duration> {
        (self.samples >= GAP_SAMPLES).then(|| secs(self.mean + 4.0 * self.deviation))
    }
}

impl Lane {
    /// Since when the lane owes a delivery: its last byte, or when its first byte was
    /// due.
    fn owes_since(&self) -> Option<Instant> {
        if self.outstanding.is_empty() {
            return None;
        }
        let due = self.busy_since.map(|t| t + self.delay);
        match (self.last_progress, due) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long the lane may go without delivering before it counts as stalled: half a
    /// round trip and [`MIN_STALL`] at least, and at least a gap it rarely shows when
    /// healthy once it showed enough of them.
    fn stall_threshold(&self) -> Duration {
        let floor = (self.delay / 2).max(MIN_STALL);
        self.gaps.unusual().map_or(floor, |g| g.max(floor))
    }

    /// When the lane stalls if nothing more arrives.
    fn stall_deadline(&self) -> Option<Instant> {
        Some(self.owes_since()? + self.stall_threshold())
    }

    fn queued_bytes(&self) -> u64 {
        self.outstanding.iter().map(|c| c.end - c.start).sum()
    }

    /// When the lane would finish `bytes` more after its outstanding chunks.
    fn finish_estimate(&self, now: Instant, upto: usize) -> Option<Instant> {
        let rate = self.rate?;
        let bytes: u64 = self.outstanding[..upto]
            .iter()
            .map(|c| c.end - c.start)
            .sum();
        let since = self.outstanding.first().map_or(now, |c| {
            self.last_done.map_or(c.assigned, |d| d.max(c.assigned))
        });
        let estimate = since + secs(bytes as f64 / rate);
        if estimate >= now {
            return Some(estimate);
        }
        // Overdue: the lane is slower than its last measurement. Having taken this long,
        // assume it takes as long again.
        Some(now + now.saturating_duration_since(since))
    }
}

/// What the caller should pull next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The path to pull from.
    pub path: PathId,
    /// Range start.
    pub start: u64,
    /// Range end (exclusive).
    pub end: u64,
    /// The range was never pulled before. Otherwise it is a re-pull of a failed range or a
    /// copy of an outstanding chunk.
    pub fresh: bool,
    /// A copy of this outstanding chunk (end game, full window or stalled path).
    pub twin_of: Option<u64>,
    /// Why the range is pulled again; `None` for a fresh range.
    pub reason: Option<CopyReason>,
}

/// Why a range is pulled a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyReason {
    /// An idle path copies the chunk expected to finish last, finishing it at least one of
    /// its round trips sooner.
    EndGame,
    /// The path holding the reader's chunk stopped delivering while another delivered.
    Stall,
    /// The chunk at the start of a full window holds the reader; a faster path copies it.
    Window,
    /// A failed or refusing path's range goes to another path.
    Failover,
}

/// The assignment state of one striped body.
#[derive(Debug)]
pub struct Stripe {
    /// Offset of the body's first byte in the stream.
    base: u64,
    /// First byte not yet assigned.
    next: u64,
    end: u64,
    /// Ranges of failed paths, to assign first.
    requeue: VecDeque<(u64, u64)>,
    lanes: BTreeMap<PathId, Lane>,
    chunk_time: Duration,
    depth: usize,
    /// The receiver's stream window.
    window: u64,
    /// The first byte of the body the receiver does not hold yet.
    front: u64,
}

impl Stripe {
    /// A body occupying `[base, base + len)` of its stream.
    pub fn new(base: u64, len: u64, chunk_time: Duration, depth: usize) -> Self {
        Self {
            base,
            next: base,
            end: base + len,
            requeue: VecDeque::new(),
            lanes: BTreeMap::new(),
            chunk_time,
            depth: depth.max(1),
            window: u64::MAX,
            front: base,
        }
    }

    /// Tells the stripe the first byte of the body the receiver does not hold yet: how
    /// far into the chunk the reader waits for its path has got.
    pub fn set_front(&mut self, front: u64) {
        self.front = front;
    }

    /// Tells the stripe the receiver's stream window (unknown: unbounded). It never waits
    /// for more credit than half of it, which is all a receiver that read everything is
    /// sure to have granted.
    pub fn set_window(&mut self, window: u64) {
        self.window = window;
    }

    /// The first byte never pulled yet.
    pub fn next_fresh(&self) -> u64 {
        self.next
    }

    /// Offset of the body within the stream.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Makes the lanes match the usable paths: new paths join, gone ones give their
    /// chunks back.
    pub fn set_paths(&mut self, paths: &[PathId]) {
        for p in paths {
            self.lanes.entry(*p).or_default();
        }
        let gone: Vec<PathId> = self
            .lanes
            .keys()
            .filter(|p| !paths.contains(p))
            .copied()
            .collect();
        for p in gone {
            if let Some(lane) = self.lanes.remove(&p) {
                for c in lane.outstanding {
                    self.give_back(c);
                }
            }
        }
    }

    /// Tells the stripe which of its paths lead to draining servers: they finish the
    /// chunks they hold and take no new one.
    pub fn set_draining(&mut self, draining: &[PathId]) {
        for (p, lane) in self.lanes.iter_mut() {
            lane.draining = draining.contains(p);
        }
    }

    /// Tells the stripe how long `path`'s pull loop takes (its round trip). Chunks are
    /// sized so that `depth - 1` of them cover it.
    pub fn set_delay(&mut self, path: PathId, delay: Duration) {
        if let Some(lane) = self.lanes.get_mut(&path) {
            lane.delay = delay;
        }
    }

    /// Tells the stripe how far `path` got: any count that grows with each packet of
    /// stream data it delivers (the client uses QUIC STREAM frames received, which grow
    /// packet by packet, where decoded KWIK frames arrive only in whole frames).
    pub fn observe(&mut self, path: PathId, progress: u64, now: Instant) {
        if let Some(lane) = self.lanes.get_mut(&path)
            && progress > lane.seen
        {
            lane.seen = progress;
            // A gap between two deliveries of one busy spell (not the wait for the first).
            if let Some(last) = lane.last_progress
                && !lane.outstanding.is_empty()
                && lane.busy_since.is_none_or(|b| last >= b)
            {
                lane.gaps.sample(now.saturating_duration_since(last));
            }
            lane.last_progress = Some(now);
        }
    }

    /// When [`Stripe::plan_stall`] may next find the path that holds the reader's chunk
    /// stalled. A path is stalled only relative to the others: while another path owes
    /// bytes too, only if one of them delivered since this one last did (when the client
    /// itself stalls, every path looks silent at once, and none is). With a single path
    /// nothing can be copied, so there is none.
    pub fn next_deadline(&self) -> Option<Instant> {
        let (owner, c) = self.lowest()?;
        // A copy needs another lane that takes new work (a draining one takes none).
        let copier = self.lanes.iter().any(|(p, l)| *p != owner && !l.draining);
        if c.twin.is_some() || !copier {
            return None;
        }
        let lane = self.lanes.get(&owner)?;
        let since = lane.owes_since()?;
        let others_owe = self
            .lanes
            .iter()
            .any(|(p, l)| *p != owner && !l.outstanding.is_empty());
        let others_delivered = self
            .lanes
            .iter()
            .any(|(p, l)| *p != owner && l.last_progress.is_some_and(|t| t > since));
        if others_owe && !others_delivered {
            return None;
        }
        lane.stall_deadline()
    }

    /// The lowest outstanding chunk (the one the reader waits for) and its path.
    fn lowest(&self) -> Option<(PathId, &Chunk)> {
        self.lanes
            .iter()
            .flat_map(|(p, l)| l.outstanding.iter().map(move |c| (*p, c)))
            .min_by_key(|(_, c)| c.start)
    }

    /// Chunks `lane` may have outstanding.
    fn depth_of(&self, _lane: &Lane) -> usize {
        self.depth
    }

    /// Whether every byte was assigned at least once.
    pub fn all_assigned(&self) -> bool {
        self.next == self.end && self.requeue.is_empty()
    }

    /// Whether every byte was delivered.
    pub fn is_complete(&self) -> bool {
        self.all_assigned() && self.lanes.values().all(|l| l.outstanding.is_empty())
    }

    /// Bytes each path delivered first.
    pub fn delivered(&self) -> impl Iterator<Item = (PathId, u64)> + '_ {
        self.lanes.iter().map(|(p, l)| (*p, l.delivered))
    }

    /// The next pull to make, given the stream `credit` for new bytes and the largest
    /// chunk the client's window allows.
    pub fn plan(&self, now: Instant, credit: u64, max_chunk: u64) -> Option<Plan> {
        if let Some(&(start, end)) = self.requeue.front() {
            let path = self.fastest_lane(now)?;
            return Some(Plan {
                path,
                start,
                end,
                fresh: false,
                twin_of: None,
                reason: Some(CopyReason::Failover),
            });
        }
        if self.next < self.end {
            let (path, lane) = self
                .lanes
                .iter()
                .filter(|(_, l)| !l.draining && l.outstanding.len() < self.depth_of(l))
                .min_by(|a, b| {
                    let ka = (a.1.outstanding.len(), -(a.1.rate.unwrap_or(0.0)));
                    let kb = (b.1.outstanding.len(), -(b.1.rate.unwrap_or(0.0)));
                    ka.partial_cmp(&kb).unwrap_or(std::cmp::Ordering::Equal)
                })?;
            let max_chunk = max_chunk.max(MIN_CHUNK);
            let want = match lane.rate {
                // A path whose rate still climbs gets chunks for the rate it is heading
                // to, or the chunks would keep it application-limited and slow its climb.
                Some(rate) => {
                    let rate = if lane.growing { 2.0 * rate } else { rate };
                    // The chunks queued behind the one in service must cover the time
                    // the next one takes to arrive, or the path idles.
                    let cover = lane.delay.as_secs_f64() / (self.depth.max(2) - 1) as f64;
                    let time = self.chunk_time.as_secs_f64().max(cover);
                    ((rate * time) as u64).max(MIN_CHUNK)
                }
                None => INITIAL_CHUNK,
            }
            .min(max_chunk);
            let remaining = self.end - self.next;
            let size = want.min(remaining);
            if credit < size {
                // Wait for credit rather than cut slivers, unless the window is that small:
                // a receiver widens its window only once it read half of it, so no more
                // than half may ever be free. Meanwhile the window is held by the lowest
                // outstanding chunk: a faster path may copy it.
                if credit < MIN_CHUNK.min(self.window / 2).min(remaining) {
                    return self.plan_rescue(now);
                }
            }
            let size = size.min(credit);
            return Some(Plan {
                path: *path,
                start: self.next,
                end: self.next + size,
                fresh: true,
                twin_of: None,
                reason: None,
            });
        }
        self.plan_endgame(now)
    }

    /// If the path holding the reader's chunk stalled (see [`Stripe::next_deadline`]), the
    /// copy to pull: the path that would finish it first takes it, whatever its depth.
    /// The caller asks when that deadline passes, after it took in every datagram that
    /// arrived by then, so that a path's backlog counts as delivery.
    pub fn plan_stall(&self, now: Instant) -> Option<Plan> {
        // Keep in step with `next_deadline`: whenever it is due, a copy is made here.
        if self.next_deadline().is_none_or(|t| t > now) {
            return None;
        }
        let (owner, c) = self.lowest()?;
        let (start, end) = self.to_copy(c);
        // The copy holds the lowest offset of all, and servers send lower offsets first:
        // it overtakes what the other path has queued.
        let (path, _) = self
            .lanes
            .iter()
            .filter(|(p, l)| **p != owner && !l.draining)
            .map(|(p, l)| {
                let rate = l.rate.unwrap_or(1e6);
                (*p, now + l.delay + secs((end - start) as f64 / rate))
            })
            .min_by_key(|(_, t)| *t)?;
        (start < end).then_some(Plan {
            path,
            start,
            end,
            fresh: false,
            twin_of: Some(c.id),
            reason: Some(CopyReason::Stall),
        })
    }

    /// The window is full: the chunk at its start (the lowest outstanding one) holds the
    /// reader. The path that would finish a copy of it first takes the back of its rest,
    /// if that beats the path that has it: from where that path is expected to be when the
    /// copy ends, so that neither sends what the other does (a split, see [`Chunk::split`]).
    /// If the estimates hold, the two meet as the copy ends and nothing is sent twice; if
    /// the chunk's path is slower, the copy saved the reader the wait for the back, and if
    /// it is faster, it catches up on the copy and the copy is stopped.
    fn plan_rescue(&self, now: Instant) -> Option<Plan> {
        let (owner, olane, i, c) = self
            .lanes
            .iter()
            .flat_map(|(p, l)| {
                l.outstanding
                    .iter()
                    .enumerate()
                    .map(move |(i, c)| (p, l, i, c))
            })
            .min_by_key(|(_, _, _, c)| c.start)?;
        // A chunk is split once; once its back is in, its path's front share may be
        // copied once more (where its path proved slower than expected).
        if c.twin.is_some() || c.front_copied {
            return None;
        }
        let theirs = olane
            .finish_estimate(now, i + 1)
            .unwrap_or(now + Duration::from_secs(3600));
        let (path, mine, lane) = self
            .lanes
            .iter()
            .filter(|(p, l)| *p != owner && !l.draining && l.outstanding.len() < self.depth)
            .filter_map(|(p, l)| {
                let rate = l.rate?;
                let queued = l.queued_bytes() + (c.end - c.start);
                Some((*p, now + l.delay + secs(queued as f64 / rate), l))
            })
            .min_by_key(|(_, t, _)| *t)?;
        if mine >= theirs {
            return None;
        }
        let (start, end) = match c.back {
            None => {
                let start = split_point(c, self.front, olane, lane, now);
                // A back of a few packets is not worth a pull of its own.
                if c.end - start < MIN_BACK.min(c.end - c.start) {
                    return None;
                }
                (start, c.end)
            }
            Some(_) => self.to_copy(c),
        };
        (start < end).then_some(Plan {
            path,
            start,
            end,
            fresh: false,
            twin_of: Some(c.id),
            reason: Some(CopyReason::Window),
        })
    }

    /// An idle path copies the outstanding chunk expected to finish last, if it would
    /// finish it sooner.
    fn plan_endgame(&self, now: Instant) -> Option<Plan> {
        for (path, lane) in &self.lanes {
            if !lane.outstanding.is_empty() || lane.draining {
                continue;
            }
            let Some(rate) = lane.rate else {
                continue;
            };
            let mut victim: Option<(Instant, &Chunk)> = None;
            for (other, olane) in &self.lanes {
                if other == path {
                    continue;
                }
                for (i, c) in olane.outstanding.iter().enumerate() {
                    if c.twin.is_some() {
                        continue;
                    }
                    // Unknown rate: assume it finishes last.
                    let finish = olane
                        .finish_estimate(now, i + 1)
                        .unwrap_or(now + Duration::from_secs(3600));
                    if victim.is_none_or(|(f, _)| finish > f) {
                        victim = Some((finish, c));
                    }
                }
            }
            let Some((finish, c)) = victim else {
                continue;
            };
            // Worth a copy only if it beats the original by a round trip of its path: a
            // closer race is a coin toss that mostly sends the bytes twice.
            let (start, end) = self.to_copy(c);
            let mine = now + lane.delay + secs((end - start) as f64 / rate);
            if mine + lane.delay < finish && start < end {
                return Some(Plan {
                    path: *path,
                    start,
                    end,
                    fresh: false,
                    twin_of: Some(c.id),
                    reason: Some(CopyReason::EndGame),
                });
            }
        }
        None
    }

    /// The path that would finish new work first.
    fn fastest_lane(&self, now: Instant) -> Option<PathId> {
        self.lanes
            .iter()
            .filter(|(_, l)| !l.draining)
            .min_by_key(|(_, l)| {
                let rate = l.rate.unwrap_or(1e6);
                now + secs(l.queued_bytes() as f64 / rate)
            })
            .map(|(p, _)| *p)
    }

    /// Records that `plan` was issued as pull `id`.
    pub fn assigned(&mut self, plan: Plan, id: u64, now: Instant) {
        if plan.fresh {
            self.next = plan.end;
        } else if plan.twin_of.is_none() {
            self.requeue.pop_front();
        }
        let mut split = false;
        if let Some(twin) = plan.twin_of {
            for lane in self.lanes.values_mut() {
                if let Some(c) = lane.outstanding.iter_mut().find(|c| c.id == twin) {
                    c.twin = Some(id);
                    split = plan.start > c.start || plan.end < c.end;
                    c.split |= split;
                    if plan.end < c.end {
                        c.front_copied = true;
                    } else if plan.start > c.start {
                        c.back = Some(plan.start);
                    }
                }
            }
        }
        if let Some(lane) = self.lanes.get_mut(&plan.path) {
            if lane.outstanding.is_empty() {
                lane.busy_since = Some(now);
            }
            lane.outstanding.push(Chunk {
                id,
                start: plan.start,
                end: plan.end,
                assigned: now,
                twin: plan.twin_of,
                split,
                back: None,
                front_copied: false,
            });
        }
    }

    /// The client holds every byte of pull `id`. Returns the id of a twin copy that
    /// is now useless, if any.
    pub fn on_done(&mut self, id: u64, now: Instant) -> Option<u64> {
        let (_, lane) = self
            .lanes
            .iter_mut()
            .find(|(_, l)| l.outstanding.iter().any(|c| c.id == id))?;
        let i = lane.outstanding.iter().position(|c| c.id == id)?;
        let c = lane.outstanding.remove(i);
        let len = (c.end - c.start) as f64;
        let since = lane.last_done.map_or(c.assigned, |d| d.max(c.assigned));
        let secs = now.saturating_duration_since(since).as_secs_f64().max(1e-4);
        let sample = len / secs;
        lane.growing = lane.rate.is_none_or(|r| sample > 1.25 * r);
        lane.rate = Some(match lane.rate {
            Some(r) => 0.5 * r + 0.5 * sample,
            None => sample,
        });
        lane.last_done = Some(now);
        lane.delivered += c.end - c.start;
        let twin = c.twin?;
        for lane in self.lanes.values_mut() {
            if let Some(i) = lane.outstanding.iter().position(|o| o.id == twin) {
                let o = &lane.outstanding[i];
                if o.start < c.start || o.end > c.end {
                    // The back of a split is in: the front's path still owes its part, and
                    // may be copied if it stalls.
                    lane.outstanding[i].twin = None;
                    return None;
                }
                lane.outstanding.remove(i);
            }
        }
        Some(twin)
    }

    /// What a copy of outstanding chunk `c` covers: all of it, or of a split chunk whose
    /// back is in, only its front share from the receiver's front.
    fn to_copy(&self, c: &Chunk) -> (u64, u64) {
        match c.back {
            Some(back) => (self.front.clamp(c.start, back), back),
            None => (c.start, c.end),
        }
    }

    /// Whether pull `id` is one of a split pair: its path may still be sending bytes the
    /// other one delivered when the pair is done, and is to be told to stop.
    pub fn is_split(&self, id: u64) -> bool {
        self.lanes
            .values()
            .flat_map(|l| l.outstanding.iter())
            .any(|c| c.id == id && c.split)
    }

    /// Pull `id` failed (its path failed or refused) with bytes from `first_missing`
    /// undelivered.
    pub fn on_failed(&mut self, id: u64, first_missing: u64) {
        for lane in self.lanes.values_mut() {
            if let Some(i) = lane.outstanding.iter().position(|c| c.id == id) {
                let mut c = lane.outstanding.remove(i);
                c.start = first_missing.clamp(c.start, c.end);
                self.give_back(c);
                return;
            }
        }
    }

    /// Returns a chunk's undelivered bytes to the queue unless its twin still runs.
    fn give_back(&mut self, c: Chunk) {
        if let Some(twin) = c.twin {
            let alive = self
                .lanes
                .values_mut()
                .flat_map(|l| l.outstanding.iter_mut())
                .find(|o| o.id == twin);
            if let Some(t) = alive {
                t.twin = None;
                if t.back == Some(c.start) {
                    // The back of `t`'s split failed: `t`'s own path still sends it all.
                    t.back = None;
                }
                // A copy that starts further on covers only the rest: the front goes back.
                // (A front-share copy ends at the split's back, which is already in.)
                if t.start > c.start {
                    let front_end = t.start.min(c.end);
                    self.requeue.push_back((c.start, front_end));
                }
                return;
            }
        }
        if c.start < c.end {
            self.requeue.push_back((c.start, c.end));
        }
    }
}

/// Where the back of a split of `c` starts: the bytes `owner` is expected to deliver of
/// `c` from the receiver's `front` by the time `copier` would deliver the rest after what
/// it has queued, so that the two finish together. An owner already late on its own
/// estimate for `c` counts at the lower of its measured rate and the rate it has shown on
/// `c`. Without rates, the whole rest is copied.
fn split_point(c: &Chunk, front: u64, owner: &Lane, copier: &Lane, now: Instant) -> u64 {
    let m = front.clamp(c.start, c.end);
    let (Some(own), Some(copy)) = (owner.rate, copier.rate) else {
        return m;
    };
    let since = owner.last_done.map_or(c.assigned, |d| d.max(c.assigned));
    let elapsed = now.saturating_duration_since(since).as_secs_f64();
    let shown = if elapsed > 0.0 {
        (m - c.start) as f64 / elapsed
    } else {
        own
    };
    let late = now > since + secs((c.end - c.start) as f64 / own);
    let own = if late { own.min(shown) } else { own };
    // Owner's share y of the rest r: y = own × (copier's delay + queue time + (r - y) / copy).
    let rest = (c.end - m) as f64;
    let ratio = own / copy;
    let lead = copier.delay.as_secs_f64() + copier.queued_bytes() as f64 / copy;
    let share = ((own * lead + ratio * rest) / (1.0 + ratio)).clamp(0.0, rest);
    m + share as u64
}

/// A duration of `s` seconds, saturating at an hour (and at zero for anything not positive).
fn secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(s.min(3600.0))
}
