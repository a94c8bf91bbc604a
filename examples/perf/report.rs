//! The figures: median, minimum and maximum of the repetitions, printed and written as JSON.

use std::io::Write;
use std::time::Duration;

/// Median, min and max.
#[derive(Clone, Copy, Default)]
pub(crate) struct Stat {
    pub(crate) median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Stat::default();
    }
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

pub(crate) fn percentile(samples: &mut [Duration], per_mille: usize) -> f64 {
    samples.sort();
    let i = (samples.len() * per_mille / 1000).min(samples.len().saturating_sub(1));
    samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

pub(crate) struct Report {
    pub(crate) json: Option<std::fs::File>,
    /// Every figure's KWIK ÷ quinn ratio, for the picture.
    pub(crate) ratios: Vec<(String, f64)>,
    /// The floors checked so far, with the value each figure reached.
    pub(crate) floors: Vec<(&'static Floor, f64)>,
}

/// What a figure must reach: its paired ratio against quinn (or its value, for a figure
/// without a quinn side), at least or at most `limit`; `aim` is where it should head.
pub(crate) struct Floor {
    figure: &'static str,
    at_most: bool,
    limit: f64,
    aim: Option<f64>,
}

const FLOORS: [Floor; 5] = [
    Floor {
        figure: "small_streams_per_s",
        at_most: false,
        limit: 1.0,
        aim: Some(1.3),
    },
    Floor {
        figure: "bulk_gbps",
        at_most: false,
        limit: 0.95,
        aim: None,
    },
    Floor {
        figure: "rr_p99_us",
        at_most: true,
        limit: 1.10,
        aim: None,
    },
    Floor {
        figure: "h3_gets_per_s",
        at_most: false,
        limit: 0.95,
        aim: Some(1.0),
    },
    Floor {
        figure: "stripe_1_over_bulk",
        at_most: false,
        limit: 0.9,
        aim: None,
    },
];

impl Report {
    /// Prints a figure from its repetitions: KWIK's median, min and max, quinn's, the ratio
    /// of the medians and the median of the per-repetition ratios (each KWIK repetition
    /// against the quinn one beside it, which cancels the machine's slow phases). Returns
    /// KWIK's statistics.
    pub(crate) fn figure(&mut self, name: &str, kwik: &[f64], quinn: Option<&[f64]>) -> Stat {
        let paired = quinn
            .filter(|q| q.len() == kwik.len())
            .map(|q| stat(kwik.iter().zip(q).map(|(k, q)| k / q).collect()).median);
        let (kwik, quinn) = (stat(kwik.to_vec()), quinn.map(|q| stat(q.to_vec())));
        let ratio = quinn.map(|q| kwik.median / q.median);
        if let Some(r) = ratio {
            self.ratios.push((name.to_owned(), r));
        }
        if let Some(p) = paired {
            self.check(name, p);
        }
        let q = quinn.map_or(String::new(), |q| {
            format!(" quinn={:.3} [{:.3}..{:.3}]", q.median, q.min, q.max)
        });
        let r = ratio.map_or(String::new(), |r| format!(" ratio={r:.3}"));
        let pr = paired.map_or(String::new(), |r| format!(" paired={r:.3}"));
        println!(
            "figure {name} kwik={:.3} [{:.3}..{:.3}]{q}{r}{pr}",
            kwik.median, kwik.min, kwik.max
        );
        if let Some(f) = &mut self.json {
            let quinn = quinn.map_or("null".to_owned(), |q| {
                format!(
                    r#"{{"median":{},"min":{},"max":{}}}"#,
                    q.median, q.min, q.max
                )
            });
            let none = || "null".to_owned();
            let _ = writeln!(
                f,
                r#"{{"figure":"{name}","kwik":{{"median":{},"min":{},"max":{}}},"quinn":{quinn},"ratio":{},"paired_ratio":{}}}"#,
                kwik.median,
                kwik.min,
                kwik.max,
                ratio.map_or_else(none, |r| r.to_string()),
                paired.map_or_else(none, |r| r.to_string())
            );
        }
        kwik
    }

    /// Names the machine the figures come from, first in the output and in the JSON.
    pub(crate) fn machine(&mut self, cpu: &str, cores: usize, pinned: bool) {
        println!("machine: {cpu}, {cores} cores");
        if let Some(f) = &mut self.json {
            let cpu = cpu.replace(['"', '\\'], "");
            let _ = writeln!(
                f,
                r#"{{"machine":{{"cpu":"{cpu}","cores":{cores},"pinned":{pinned}}}}}"#
            );
        }
    }

    pub(crate) fn single(&mut self, name: &str, value: f64, note: &str) {
        println!("figure {name} {value:.3} {note}");
        self.check(name, value);
        if let Some(f) = &mut self.json {
            let _ = writeln!(f, r#"{{"figure":"{name}","value":{value}}}"#);
        }
    }
}

impl Floor {
    fn met(&self, value: f64) -> bool {
        if self.at_most {
            value <= self.limit
        } else {
            value >= self.limit
        }
    }
}

impl Report {
    /// Checks `value` against the floor of figure `name`, if it has one.
    fn check(&mut self, name: &str, value: f64) {
        let Some(floor) = FLOORS.iter().find(|f| f.figure == name) else {
            return;
        };
        let met = floor.met(value);
        self.floors.push((floor, value));
        if let Some(f) = &mut self.json {
            let _ = writeln!(
                f,
                r#"{{"floor":"{name}","value":{value},"limit":{},"at_most":{},"met":{met}}}"#,
                floor.limit, floor.at_most
            );
        }
    }

    /// Prints every floor checked, met or missed, and the aims.
    pub(crate) fn print_floors(&self) {
        for &(floor, value) in &self.floors {
            let (name, met) = (floor.figure, floor.met(value));
            let op = if floor.at_most { "<=" } else { ">=" };
            let aim = floor
                .aim
                .map_or(String::new(), |a| format!(", aim {op} {a}"));
            println!(
                "floor {name} {value:.3} {op} {}: {}{aim}",
                floor.limit,
                if met { "met" } else { "MISSED" }
            );
        }
    }
}
