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
}

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

    pub(crate) fn single(&mut self, name: &str, value: f64, note: &str) {
        println!("figure {name} {value:.3} {note}");
        if let Some(f) = &mut self.json {
            let _ = writeln!(f, r#"{{"figure":"{name}","value":{value}}}"#);
        }
    }
}
