//! The drill's timeline as an SVG chart: per time bucket, the share of sends acknowledged and
//! the share that failed over (top panel), and the p50 / p99 latency of acknowledged sends (bottom
//! panel, log scale), with a vertical line per mark (fault, rebuild, healed...). Sends are
//! counted in the bucket where they ended. Needs no system fonts: text stays `<text>` elements.

use plotters::coord::Shift;
use plotters::coord::ranged1d::Ranged;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::drill::history::{History, Mark};
use crate::stats::percentile;

const SIZE_PX: (u32, u32) = (1200, 600);
/// The finest bucket; longer drills get wider buckets so the chart has at most `MAX_BUCKETS`.
const BUCKET_MS: f64 = 100.0;
const MAX_BUCKETS: usize = 3000;
const FONT: &str = "sans-serif";

/// What each bucket shows; None where no send ended in it (the line has a gap there).
struct Buckets {
    width_ms: f64,
    acknowledged_percent: Vec<Option<f64>>,
    failed_over_percent: Vec<Option<f64>>,
    latency_p50_ms: Vec<Option<f64>>,
    latency_p99_ms: Vec<Option<f64>>,
}

fn buckets(history: &History) -> Buckets {
    let end_ms = history
        .sends
        .iter()
        .map(|s| s.end_ms)
        .fold(history.duration_ms, f64::max)
        .max(1000.0);
    let width_ms = (end_ms / MAX_BUCKETS as f64 / BUCKET_MS).ceil().max(1.0) * BUCKET_MS;
    let count = ((end_ms / width_ms).ceil() as usize).clamp(1, MAX_BUCKETS);
    let mut ended = vec![0usize; count];
    let mut failed_over = vec![0usize; count];
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); count];
    for send in &history.sends {
        let bucket = ((send.end_ms.max(0.0) / width_ms) as usize).min(count - 1);
        ended[bucket] += 1;
        if send.dcs_tried.len() > 1 {
            failed_over[bucket] += 1;
        }
        if send.event_id.is_some() {
            latencies[bucket].push(send.end_ms - send.start_ms);
        }
    }
    let percent = |part: usize, all: usize| (all > 0).then(|| 100.0 * part as f64 / all as f64);
    Buckets {
        width_ms,
        acknowledged_percent: latencies
            .iter()
            .zip(&ended)
            .map(|(l, &n)| percent(l.len(), n))
            .collect(),
        failed_over_percent: failed_over
            .iter()
            .zip(&ended)
            .map(|(&f, &n)| percent(f, n))
            .collect(),
        latency_p50_ms: latencies
            .iter_mut()
            .map(|l| (!l.is_empty()).then(|| percentile(l, 0.50)))
            .collect(),
        latency_p99_ms: latencies
            .iter_mut()
            .map(|l| (!l.is_empty()).then(|| percentile(l, 0.99)))
            .collect(),
    }
}

/// The chart as an SVG document. Should drawing fail, an SVG that says why.
pub fn timeline_svg(history: &History) -> String {
    let mut svg = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut svg, SIZE_PX).into_drawing_area();
        draw(&root, history, &buckets(history))
    };
    match drawn {
        Ok(()) => svg,
        Err(error) => format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\"><text x=\"10\" y=\"20\">chart failed: {}</text></svg>",
            SIZE_PX.0,
            SIZE_PX.1,
            error.to_string().replace('&', "&amp;").replace('<', "&lt;")
        ),
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    history: &History,
    b: &Buckets,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let title = format!(
        "fire drill: {} ({} ms buckets, sends counted when they ended)",
        history.scenario, b.width_ms
    );
    let root = root.titled(&title, (FONT, 20))?;
    let (top, bottom) = root.split_vertically(SIZE_PX.1 as i32 * 45 / 100);
    let x_end_s = b.acknowledged_percent.len() as f64 * b.width_ms / 1000.0;

    let mut rates = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_end_s, 0.0..110.0)?;
    rates
        .configure_mesh()
        .y_desc("% of sends")
        .y_labels(6)
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()?;
    line(
        &mut rates,
        b,
        &b.acknowledged_percent,
        GREEN.mix(0.9),
        "acknowledged",
    )?;
    line(
        &mut rates,
        b,
        &b.failed_over_percent,
        RGBColor(230, 140, 0).into(),
        "failed over",
    )?;
    marks(&mut rates, &history.marks, 0.0, 110.0, Some(105.0))?;
    legend(&mut rates, SeriesLabelPosition::MiddleRight)?;

    let highest_ms = b
        .latency_p99_ms
        .iter()
        .flatten()
        .fold(10.0, |a: f64, &b| a.max(b));
    let mut latency = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_end_s, (1.0..highest_ms * 2.0).log_scale())?;
    latency
        .configure_mesh()
        .x_desc("seconds since the workload started")
        .y_desc("send latency ms")
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()?;
    let floor = |values: &[Option<f64>]| -> Vec<Option<f64>> {
        values.iter().map(|v| v.map(|v| v.max(1.0))).collect()
    };
    line(
        &mut latency,
        b,
        &floor(&b.latency_p50_ms),
        BLUE.mix(0.9),
        "p50",
    )?;
    line(
        &mut latency,
        b,
        &floor(&b.latency_p99_ms),
        RED.mix(0.9),
        "p99",
    )?;
    marks(&mut latency, &history.marks, 1.0, highest_ms * 2.0, None)?;
    legend(&mut latency, SeriesLabelPosition::LowerRight)?;
    root.present()
}

fn whole(value: &f64) -> String {
    format!("{value:.0}")
}

/// One line per run of buckets that have a value; the legend entry on the first run only.
fn line<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    b: &Buckets,
    values: &[Option<f64>],
    color: RGBAColor,
    label: &str,
) -> DrawResult<DB> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut previous_had_value = false;
    for (i, value) in values.iter().enumerate() {
        let x = (i as f64 + 0.5) * b.width_ms / 1000.0;
        match (value, runs.last_mut()) {
            (Some(y), Some(run)) if previous_had_value => run.push((x, *y)),
            (Some(y), _) => runs.push(vec![(x, *y)]),
            (None, _) => {}
        }
        previous_had_value = value.is_some();
    }
    for (i, run) in runs.into_iter().enumerate() {
        let series = chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
        if i == 0 {
            series.label(label).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    Ok(())
}

/// A vertical line per mark, labelled (staggered so close marks stay legible) if `label_at`.
fn marks<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    marks: &[Mark],
    low: f64,
    high: f64,
    label_at: Option<f64>,
) -> DrawResult<DB> {
    let color = RGBColor(140, 0, 140);
    for (i, mark) in marks.iter().enumerate() {
        let x = mark.at_ms / 1000.0;
        chart.draw_series(std::iter::once(PathElement::new(
            [(x, low), (x, high)],
            color.stroke_width(1),
        )))?;
        if let Some(y) = label_at {
            let y = y - 9.0 * (i % 4) as f64;
            let label = format!(" {} ({x:.1} s)", mark.label);
            chart.draw_series(std::iter::once(Text::new(
                label,
                (x, y),
                (FONT, 13).into_font().color(&color),
            )))?;
        }
    }
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    position: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::checker::tests::clean_history;

    #[test]
    fn svg_of_a_small_history_has_lines_and_marks() {
        let mut history = clean_history();
        history.marks.push(Mark {
            at_ms: 2200.0,
            label: "DC a rebuilt & serving".into(),
        });
        let svg = timeline_svg(&history);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("fault: fire in DC a") && svg.contains("DC a rebuilt &amp; serving"));
        assert!(svg.contains("<polyline") && svg.contains("p99"));
    }

    #[test]
    fn empty_history_still_draws() {
        let svg = timeline_svg(&History::default());
        assert!(
            svg.starts_with("<svg") && svg.contains("fire drill"),
            "{svg}"
        );
    }

    #[test]
    fn buckets_count_sends_where_they_end() {
        let history = clean_history();
        let b = buckets(&history);
        assert_eq!((b.width_ms, b.acknowledged_percent.len()), (100.0, 30));
        // m0 ended at 150 ms, m4 (failed over, 500 ms) at 1600 ms.
        assert_eq!(b.acknowledged_percent[1], Some(100.0));
        assert_eq!(
            (b.failed_over_percent[16], b.latency_p99_ms[16]),
            (Some(100.0), Some(500.0))
        );
        assert_eq!(b.acknowledged_percent[0], None);
    }
}
