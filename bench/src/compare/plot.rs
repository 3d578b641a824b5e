//! SVG charts of a comparison (plotters' SVG backend, no font rendering: text stays text):
//! lines of a figure against burst size, one panel per backlog and one line per server, and
//! bars of one figure per server. Pure drawing: the numbers come from `report`.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One line: a server's name and its (x, y) points in x order.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel of a line chart.
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
}

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A fixed colour per server, so every chart reads the same way.
pub fn color_of(name: &str) -> RGBColor {
    match name {
        "reactor" => RGBColor(31, 119, 180),
        "threadpool" => RGBColor(255, 127, 14),
        "blocking" => RGBColor(214, 39, 40),
        "nginx" => RGBColor(44, 160, 44),
        "victoria-metrics" => RGBColor(148, 103, 189),
        _ => RGBColor(90, 90, 90),
    }
}

/// Panels side by side; `log_y` for figures spanning orders of magnitude (latency).
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    log_y: bool,
    panels: &[Panel],
) -> DrawResult {
    let width = 40 + 420 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    let all = panels
        .iter()
        .flat_map(|p| p.lines.iter())
        .flat_map(|l| l.points.iter());
    let (mut x_max, mut y_max, mut y_min) = (1.0f64, 0.0f64, f64::MAX);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
        if y > 0.0 {
            y_min = y_min.min(y);
        }
    }
    for (area, panel) in areas.iter().zip(panels) {
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(&panel.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60);
        let x_range = 0f64..x_max * 1.05;
        if log_y {
            let lo = if y_min == f64::MAX {
                0.1
            } else {
                (y_min / 2.0).max(0.01)
            };
            let hi = (y_max * 2.0).max(lo * 10.0);
            let mut chart = builder
                .build_cartesian_2d(x_range, (lo..hi).log_scale())
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_labels(6)
                .x_label_formatter(&|v| format_value(*v))
                .y_label_formatter(&|v| format_value(*v))
                .max_light_lines(1)
                .draw()
                .map_err(err)?;
            draw_lines(&mut chart, &panel.lines, lo)?;
        } else {
            let mut chart = builder
                .build_cartesian_2d(x_range, 0f64..(y_max * 1.1).max(1.0))
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_labels(6)
                .x_label_formatter(&|v| format_value(*v))
                .y_label_formatter(&|v| format_value(*v))
                .max_light_lines(1)
                .draw()
                .map_err(err)?;
            draw_lines(&mut chart, &panel.lines, f64::MIN)?;
        }
    }
    root.present().map_err(err)
}

fn draw_lines<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    lines: &[Line],
    floor: f64,
) -> DrawResult
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    let n = lines.len() as u32;
    for (i, line) in lines.iter().enumerate() {
        let color = color_of(&line.name);
        // Lines that coincide (every slow server at ~1 s) stay visible as nested strokes:
        // the first drawn is the widest.
        let width = 2 + (n - 1 - i as u32);
        // A log axis cannot show 0: such points sit on the floor.
        let points: Vec<(f64, f64)> = line
            .points
            .iter()
            .map(|&(x, y)| (x, y.max(floor)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))
            .map_err(err)?
            .label(line.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 2 + width, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(err)
}

/// One bar per server with its value written above it.
pub fn bars(path: &Path, title: &str, y_desc: &str, bars: &[(String, f64)]) -> DrawResult {
    let root =
        SVGBackend::new(path, (160 + 130 * bars.len().max(1) as u32, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let y_max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1e-9) * 1.18;
    let n = bars.len().max(1) as u32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d((0u32..n - 1).into_segmented(), 0f64..y_max)
        .map_err(err)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(1)
        .y_desc(y_desc)
        .x_labels(bars.len().max(1))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|v| format_value(*v))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (name, v))| {
            let i = i as u32;
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                color_of(name).filled(),
            );
            r.set_margin(0, 0, 18, 18);
            r
        }))
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format_value(*v),
                (SegmentValue::CenterOf(i as u32), *v + y_max * 0.02),
                ("sans-serif", 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))
        .map_err(err)?;
    root.present().map_err(err)
}

/// Short human numbers for axes and labels: 12,300 -> "12.3k".
pub fn format_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_short() {
        assert_eq!(format_value(12_300.0), "12k");
        assert_eq!(format_value(1_234.0), "1.2k");
        assert_eq!(format_value(2_500_000.0), "2.5M");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(0.42), "0.42");
    }

    #[test]
    fn charts_are_written() {
        let dir = std::env::temp_dir().join(format!("ms-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let panel = Panel {
            title: "backlog 64".into(),
            lines: vec![Line {
                name: "reactor".into(),
                points: vec![(1000.0, 0.4), (5000.0, 1030.0)],
            }],
        };
        lines(&dir.join("l.svg"), "t", "burst", "ms", true, &[panel]).expect("lines");
        bars(
            &dir.join("b.svg"),
            "t",
            "conn/s",
            &[("reactor".into(), 12000.0)],
        )
        .expect("bars");
        let svg = std::fs::read_to_string(dir.join("b.svg")).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("reactor"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
