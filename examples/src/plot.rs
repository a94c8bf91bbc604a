//! SVG pictures of a transfer and of the perf figures (plotters, SVG backend only: the
//! text is left to whatever displays the file, so no font library is needed).

use std::path::Path;

use plotters::prelude::*;

/// One line of [`goodput_svg`]: a label and `(seconds, Mbit/s)` points.
pub struct Series {
    /// Shown in the legend.
    pub label: String,
    /// `(seconds since the start, Mbit/s)`.
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn plot_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the picture: {e}")
}

/// Goodput of each path over time, with the moment a server failed marked by a
/// vertical line labelled `failure_label`.
pub fn goodput_svg(
    path: &Path,
    title: &str,
    series: &[Series],
    failure: Option<(f64, &str)>,
) -> anyhow::Result<()> {
    let end = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1e-3, f64::max);
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("Mbit/s")
        .draw()
        .map_err(plot_error)?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if let Some((at, label)) = failure {
        chart
            .draw_series(LineSeries::new(
                vec![(at, 0.0), (at, top)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_error)?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One bar per figure: KWIK's median divided by quinn's, against a line at 1.0. For
/// rates a bar past the line is KWIK ahead; for costs and latencies (`cpu_*`, `rr_*`) a
/// bar short of it is.
pub fn ratios_svg(path: &Path, title: &str, ratios: &[(String, f64)]) -> anyhow::Result<()> {
    let top = ratios.iter().map(|r| r.1).fold(1.2, f64::max) * 1.1;
    let n = ratios.len().max(1);
    let root = SVGBackend::new(path, (960, 120 + 36 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(240)
        .build_cartesian_2d(0.0..top, 0.0..n as f64)
        .map_err(plot_error)?;
    let names: Vec<String> = ratios.iter().map(|r| r.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            // Labels at the middle of each bar.
            let i = (y - 0.5).round();
            if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                names.get(n - 1 - i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("KWIK ÷ quinn (same run)")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(ratios.iter().enumerate().map(|(i, (_, r))| {
            let y = (n - 1 - i) as f64;
            Rectangle::new([(0.0, y + 0.15), (*r, y + 0.85)], PALETTE[0].filled())
        }))
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(
            vec![(1.0, 0.0), (1.0, n as f64)],
            BLACK.stroke_width(2),
        ))
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn both_pictures_are_written_with_their_labels() {
        let dir = std::env::temp_dir().join(format!("kwik-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let goodput = dir.join("goodput.svg");
        let series = vec![
            Series {
                label: "path 0 (primary)".into(),
                points: (0..50).map(|i| (i as f64 * 0.1, 400.0)).collect(),
            },
            Series {
                label: "path 2".into(),
                points: (0..25).map(|i| (i as f64 * 0.1, 300.0)).collect(),
            },
        ];
        goodput_svg(
            &goodput,
            "goodput",
            &series,
            Some((2.5, "server 2 shut down")),
        )
        .unwrap();
        let svg = std::fs::read_to_string(&goodput).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        for label in ["path 0 (primary)", "path 2", "server 2 shut down", "Mbit/s"] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(
            svg.matches("<polyline").count() >= 3,
            "two series and the failure line"
        );

        let ratios = dir.join("ratios.svg");
        let figures = vec![
            ("bulk_gbps".to_owned(), 0.9),
            ("rr_p99_us".to_owned(), 1.05),
        ];
        ratios_svg(&ratios, "KWIK against quinn", &figures).unwrap();
        let svg = std::fs::read_to_string(&ratios).unwrap();
        assert!(svg.contains("bulk_gbps") && svg.contains("rr_p99_us"));
        assert_eq!(
            svg.matches("<rect").count(),
            3,
            "the background and two bars"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
