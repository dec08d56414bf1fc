//! One function's contour plot with every optimizer's path over it, drawn with plotters into
//! an SVG string or a PNG file.
//!
//! Contour lines come from the `contour` crate (marching squares) over a grid of
//! `ln(1 + f − min f)`, so that the valleys of Rosenbrock and Beale, where the walks happen,
//! get as many lines as their steep walls.

use std::path::Path;

use contour::ContourBuilder;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Figure, Trace};
use crate::draw::{color, ensure_font, Raster, FAMILY, FONT};

/// Size of every figure, in pixels.
const SIZE: (u32, u32) = (900, 760);
/// Grid points per side for the contour lines.
const GRID: usize = 181;
/// Contour levels.
const LEVELS: usize = 18;

/// A figure as SVG, with what the animation needs to draw paths over it.
pub(crate) struct Drawn {
    pub svg: String,
    /// The plotting area in pixels: `[left, top, right, bottom]`.
    pub area: [i32; 4],
    /// Per trace, its points in pixels (coordinates far outside the window are clamped).
    pub pixels: Vec<Pixels>,
}

/// The figure as an SVG string; with `with_paths` false, only the contours, the minima, the
/// start and the legend (the animated page draws the paths itself).
pub(crate) fn svg(fig: &Figure, with_paths: bool) -> Result<Drawn, String> {
    ensure_font()?;
    let mut svg = String::new();
    let (area, pixels) = {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let out = draw(&root, fig, with_paths)?;
        root.present().map_err(|e| e.to_string())?;
        out
    };
    Ok(Drawn { svg, area, pixels })
}

/// The figure, paths included, as a PNG file at `path` (which must end in `.png`).
pub(crate) fn png(fig: &Figure, path: &Path) -> Result<(), String> {
    ensure_font()?;
    let root = Raster::new(BitMapBackend::new(path, SIZE), FONT)?.into_drawing_area();
    draw(&root, fig, true)?;
    root.present().map_err(|e| e.to_string())
}

/// The plotting area in pixels, `[left, top, right, bottom]`.
type Area = [i32; 4];
/// A polyline, in pixels or in the function's coordinates.
type Pixels = Vec<(i32, i32)>;
type Polyline = Vec<(f64, f64)>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure,
    with_paths: bool,
) -> Result<(Area, Vec<Pixels>), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let f = fig.function;
    let ([x0, x1], [y0, y1]) = f.bounds();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("{}:  f = {}", f.name(), f.formula()),
            (FAMILY, 22).into_font(),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(54)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("x")
        .y_desc("y")
        .label_style((FAMILY, 14).into_font())
        .axis_desc_style((FAMILY, 16).into_font())
        .draw()
        .map_err(err)?;

    for (level, line) in contours(fig)?.into_iter().enumerate() {
        let t = level as f64 / (LEVELS - 1) as f64;
        let shade = RGBColor(
            (0x35 as f64 + t * (0xc8 - 0x35) as f64) as u8,
            (0x6e as f64 + t * (0xc8 - 0x6e) as f64) as u8,
            (0xb0 as f64 + t * (0xc8 - 0xb0) as f64) as u8,
        );
        for points in line {
            chart
                .draw_series(LineSeries::new(points, shade.stroke_width(1)))
                .map_err(err)?;
        }
    }

    for (i, trace) in fig.traces.iter().enumerate() {
        let style = color(i).stroke_width(2);
        let segments = if with_paths {
            clipped(trace, [x0, x1, y0, y1])
        } else {
            Vec::new()
        };
        let mut first = true;
        for segment in &segments {
            let series = chart
                .draw_series(LineSeries::new(segment.iter().copied(), style))
                .map_err(err)?;
            if std::mem::take(&mut first) {
                series
                    .label(trace.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
            }
        }
        if first {
            // No segment drawn (the animated page draws the paths): the legend entry still.
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                .map_err(err)?
                .label(trace.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        }
        if let (true, Ok(walk)) = (with_paths, &trace.walk) {
            let [x, y] = walk.last();
            if (x0..=x1).contains(&x) && (y0..=y1).contains(&y) {
                chart
                    .draw_series([Circle::new((x, y), 4, color(i).filled())])
                    .map_err(err)?;
            }
        }
    }

    let minimum = RED.stroke_width(3);
    let minima = f.minima();
    if !minima.is_empty() {
        chart
            .draw_series(minima.iter().map(|&[x, y]| Cross::new((x, y), 8, minimum)))
            .map_err(err)?
            .label(if minima.len() > 1 {
                "global minima"
            } else {
                "global minimum"
            })
            .legend(move |(x, y)| Cross::new((x + 11, y), 6, minimum));
    }
    let [sx, sy] = fig.start;
    chart
        .draw_series([Circle::new((sx, sy), 6, BLACK.filled())])
        .map_err(err)?
        .label("start")
        .legend(|(x, y)| Circle::new((x + 11, y), 5, BLACK.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0x99, 0x99, 0x99))
        .label_font((FAMILY, 14).into_font())
        .draw()
        .map_err(err)?;

    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let area = [xs.start, ys.start, xs.end, ys.end];
    let (w, h) = (x1 - x0, y1 - y0);
    let pixels = fig
        .traces
        .iter()
        .map(|t| match &t.walk {
            Ok(walk) => walk
                .path
                .iter()
                .map(|&[x, y]| {
                    let p = (
                        x.clamp(x0 - 2.0 * w, x1 + 2.0 * w),
                        y.clamp(y0 - 2.0 * h, y1 + 2.0 * h),
                    );
                    chart.backend_coord(&p)
                })
                .collect(),
            Err(_) => Vec::new(),
        })
        .collect();
    Ok((area, pixels))
}

/// The contour lines of `fig`'s function, level by level (low to high), each a list of
/// polylines.
fn contours(fig: &Figure) -> Result<Vec<Vec<Polyline>>, String> {
    let f = fig.function;
    let ([x0, x1], [y0, y1]) = f.bounds();
    let (dx, dy) = ((x1 - x0) / (GRID - 1) as f64, (y1 - y0) / (GRID - 1) as f64);
    let mut values = Vec::with_capacity(GRID * GRID);
    for j in 0..GRID {
        for i in 0..GRID {
            values.push(f.value([x0 + i as f64 * dx, y0 + j as f64 * dy]));
        }
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    for v in &mut values {
        *v = (*v - lo).ln_1p();
    }
    let hi = values.iter().copied().fold(0.0, f64::max);
    let thresholds: Vec<f64> = (1..=LEVELS)
        .map(|k| hi * k as f64 / (LEVELS + 1) as f64)
        .collect();
    // The builder puts value (i, j) at the centre of cell i: shift by half a step so that it
    // lands on (x0 + i·dx, y0 + j·dy).
    let lines = ContourBuilder::new(GRID, GRID, true)
        .x_origin(x0 - dx / 2.0)
        .y_origin(y0 - dy / 2.0)
        .x_step(dx)
        .y_step(dy)
        .lines(&values, &thresholds)
        .map_err(|e| format!("contours: {e:?}"))?;
    Ok(lines
        .iter()
        .map(|line| {
            line.geometry()
                .0
                .iter()
                .map(|ls| ls.0.iter().map(|c| (c.x, c.y)).collect())
                .collect()
        })
        .collect())
}

/// The walk of `trace` cut to the window `[x0, x1, y0, y1]`: the runs of it inside, each
/// ended (or begun) where a step crosses the border.
fn clipped(trace: &Trace, [x0, x1, y0, y1]: [f64; 4]) -> Vec<Polyline> {
    let Ok(walk) = &trace.walk else {
        return Vec::new();
    };
    let mut out: Vec<Polyline> = Vec::new();
    let mut current: Polyline = Vec::new();
    for pair in walk.path.windows(2) {
        let (a, b) = ((pair[0][0], pair[0][1]), (pair[1][0], pair[1][1]));
        match clip_segment(a, b, [x0, x1, y0, y1]) {
            Some((p, q)) => {
                if current.last() != Some(&p) {
                    if !current.is_empty() {
                        out.push(std::mem::take(&mut current));
                    }
                    current.push(p);
                }
                current.push(q);
                if q != b {
                    out.push(std::mem::take(&mut current));
                }
            }
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The part of segment `a`–`b` inside the rectangle (Liang–Barsky), if any.
fn clip_segment(
    a: (f64, f64),
    b: (f64, f64),
    [x0, x1, y0, y1]: [f64; 4],
) -> Option<((f64, f64), (f64, f64))> {
    if ![a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()) {
        return None;
    }
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    if t0 > t1 {
        return None;
    }
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * dx, a.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_clipped_to_the_window() {
        let w = [0.0, 1.0, 0.0, 1.0];
        assert_eq!(
            clip_segment((0.5, 0.5), (0.7, 0.2), w),
            Some(((0.5, 0.5), (0.7, 0.2)))
        );
        assert_eq!(
            clip_segment((0.5, 0.5), (1.5, 0.5), w),
            Some(((0.5, 0.5), (1.0, 0.5)))
        );
        assert_eq!(
            clip_segment((-1.0, 0.5), (2.0, 0.5), w),
            Some(((0.0, 0.5), (1.0, 0.5)))
        );
        assert_eq!(clip_segment((2.0, 2.0), (3.0, 0.5), w), None);
        assert_eq!(clip_segment((f64::NAN, 0.5), (0.5, 0.5), w), None);
    }
}
