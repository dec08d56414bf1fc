//! Line charts of one per-epoch metric against the epoch, one line per optimizer, drawn with
//! `plotters` into a PNG file or an SVG string.
//!
//! Text is laid out (and, in PNGs, rasterized) with a subset of DejaVu Sans embedded in the
//! binary, so no system font, fontconfig or freetype is needed. SVGs name the font family
//! and let the viewer pick it.
//!
//! With several seeds per optimizer the line is the mean over the seeds and a translucent band
//! spans their minimum to maximum. Non-finite values (a diverged run) are left out: a line
//! breaks where no seed has a finite value.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::record::EpochRecord;
use crate::draw::{color, ensure_font, Raster, FAMILY, FONT};

/// Size of every chart, in pixels.
const SIZE: (u32, u32) = (1200, 700);

/// Height of the header (heading, run title, caption) at the top of a chart.
const HEADER_HEIGHT: u32 = 96;

/// Which metric a chart shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Metric {
    /// Mean training loss; logarithmic axis when every value is positive.
    TrainLoss,
    /// Test accuracy, in percent.
    TestAccuracy,
    /// `test_loss - train_loss`.
    Gap,
}

impl Metric {
    /// All charts, in the order the report shows them.
    pub(super) const ALL: [Metric; 3] = [Metric::TrainLoss, Metric::TestAccuracy, Metric::Gap];

    /// File name without extension.
    pub(super) fn file_stem(self) -> &'static str {
        match self {
            Metric::TrainLoss => "train_loss",
            Metric::TestAccuracy => "test_accuracy",
            Metric::Gap => "gap",
        }
    }

    /// Heading of the chart.
    pub(super) fn heading(self) -> &'static str {
        match self {
            Metric::TrainLoss => "Training loss",
            Metric::TestAccuracy => "Test accuracy",
            Metric::Gap => "Generalization gap (test loss − train loss)",
        }
    }

    fn y_label(self, log: bool) -> &'static str {
        match (self, log) {
            (Metric::TrainLoss, true) => "train loss (log scale)",
            (Metric::TrainLoss, false) => "train loss",
            (Metric::TestAccuracy, _) => "test accuracy (%)",
            (Metric::Gap, _) => "test loss − train loss",
        }
    }

    /// The metric of `record`; NaN for a diverged record (non-finite loss), whose accuracy
    /// is an artifact of NaN outputs.
    fn value(self, record: &EpochRecord) -> f64 {
        if !(record.train_loss.is_finite() && record.test_loss.is_finite()) {
            return f64::NAN;
        }
        match self {
            Metric::TrainLoss => record.train_loss,
            Metric::TestAccuracy => 100.0 * record.test_accuracy,
            Metric::Gap => record.gap,
        }
    }
}

/// One aggregated point: the metric over the seeds that have a finite value at this epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    epoch: usize,
    mean: f64,
    min: f64,
    max: f64,
}

/// One optimizer's line, split where no seed had a finite value.
#[derive(Clone, Debug)]
struct Series {
    label: String,
    color: RGBColor,
    seeds: usize,
    segments: Vec<Vec<Point>>,
}

/// Everything needed to draw one chart.
#[derive(Clone, Debug)]
pub(super) struct Chart {
    metric: Metric,
    title: String,
    series: Vec<Series>,
    max_seeds: usize,
    skipped: usize,
}

impl Chart {
    /// Aggregates `records` for `metric`, one series per label in `labels` (colors follow that
    /// order; records whose optimizer is not in `labels` are ignored).
    pub(super) fn new(
        metric: Metric,
        title: &str,
        labels: &[String],
        records: &[EpochRecord],
    ) -> Self {
        let mut skipped = 0;
        let mut series = Vec::with_capacity(labels.len());
        for (index, label) in labels.iter().enumerate() {
            // epoch -> finite values of the seeds (None for a non-finite value).
            let mut by_epoch: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
            let mut seeds: Vec<u64> = Vec::new();
            for r in records.iter().filter(|r| &r.optimizer == label) {
                if !seeds.contains(&r.seed) {
                    seeds.push(r.seed);
                }
                let values = by_epoch.entry(r.epoch).or_default();
                let v = metric.value(r);
                if v.is_finite() {
                    values.push(v);
                } else {
                    skipped += 1;
                }
            }
            let mut segments: Vec<Vec<Point>> = Vec::new();
            let mut current: Vec<Point> = Vec::new();
            for (&epoch, values) in &by_epoch {
                if values.is_empty() {
                    if !current.is_empty() {
                        segments.push(std::mem::take(&mut current));
                    }
                    continue;
                }
                let n = values.len() as f64;
                let mean = values.iter().sum::<f64>() / n;
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                // A sum of huge finite values can overflow: keep the point out then.
                if mean.is_finite() {
                    current.push(Point {
                        epoch,
                        mean,
                        min,
                        max,
                    });
                }
            }
            if !current.is_empty() {
                segments.push(current);
            }
            series.push(Series {
                label: label.clone(),
                color: color(index),
                seeds: seeds.len(),
                segments,
            });
        }
        let max_seeds = series.iter().map(|s| s.seeds).max().unwrap_or(0);
        Chart {
            metric,
            title: title.to_owned(),
            series,
            max_seeds,
            skipped,
        }
    }

    fn points(&self) -> impl Iterator<Item = &Point> {
        self.series.iter().flat_map(|s| s.segments.iter().flatten())
    }

    /// Whether several seeds are aggregated (so bands are drawn).
    fn banded(&self) -> bool {
        self.max_seeds > 1
    }

    /// One sentence telling what the lines and bands are; shown under the heading and in the
    /// HTML caption.
    pub(super) fn caption(&self) -> String {
        if self.points().next().is_none() {
            return "No finite values to plot.".to_owned();
        }
        let mut text = if self.banded() {
            format!(
                "Lines: mean over {} seeds; shaded bands: min–max over the seeds.",
                self.max_seeds
            )
        } else {
            "One run per optimizer.".to_owned()
        };
        if self.skipped > 0 {
            text.push_str(&format!(
                " {} diverged point{} (non-finite loss) not drawn.",
                self.skipped,
                if self.skipped == 1 { "" } else { "s" }
            ));
        }
        text
    }

    /// Renders the chart as an SVG document; with `header`, the heading, run title and caption
    /// are drawn above it (leave them out where the page around it says them).
    pub(super) fn to_svg(&self, header: bool) -> Result<String, String> {
        ensure_font()?;
        let size = if header {
            SIZE
        } else {
            (SIZE.0, SIZE.1 - HEADER_HEIGHT)
        };
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
            self.draw(&root, header)?;
            root.present().map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    /// Renders the chart as a PNG file at `path` (which must end in `.png`).
    pub(super) fn to_png(&self, path: &Path) -> Result<(), String> {
        ensure_font()?;
        let root = Raster::new(BitMapBackend::new(path, SIZE), FONT)?.into_drawing_area();
        self.draw(&root, true)?;
        root.present().map_err(|e| e.to_string())
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        header: bool,
    ) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let (width, _) = root.dim_in_pixel();

        let body = if header {
            // Heading, run title, caption.
            let text_width = width.saturating_sub(40);
            let heading = TextStyle::from((FAMILY, 26).into_font()).color(&BLACK);
            let sub = TextStyle::from((FAMILY, 17).into_font()).color(&RGBColor(0x40, 0x40, 0x40));
            let note = TextStyle::from((FAMILY, 15).into_font()).color(&RGBColor(0x60, 0x60, 0x60));
            let lines = [
                (
                    fit(root, self.metric.heading(), &heading, text_width),
                    &heading,
                    12,
                ),
                (fit(root, &self.title, &sub, text_width), &sub, 44),
                (fit(root, &self.caption(), &note, text_width), &note, 68),
            ];
            for (text, style, y) in lines {
                root.draw(&Text::new(text, (20, y), style.clone()))
                    .map_err(err)?;
            }
            root.split_vertically(HEADER_HEIGHT).1
        } else {
            root.clone()
        };

        // Legend on the right, outside the plotting area.
        let legend_font = TextStyle::from((FAMILY, 16).into_font()).color(&BLACK);
        let max_label = 230;
        let labels: Vec<String> = self
            .series
            .iter()
            .map(|s| {
                let label = if s.segments.is_empty() {
                    format!("{} (no data)", s.label)
                } else {
                    s.label.clone()
                };
                fit(root, &label, &legend_font, max_label)
            })
            .collect();
        let widest = labels
            .iter()
            .map(|l| text_size(root, l, &legend_font).0)
            .max()
            .unwrap_or(0);
        let legend_width = (widest + 70).min(width / 3);
        let (plot_area, legend_area) = body.split_horizontally(width.saturating_sub(legend_width));

        self.draw_plot(&plot_area)?;
        self.draw_legend(&legend_area, &labels, &legend_font)
    }

    fn draw_plot<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let banded = self.banded();
        let values: Vec<f64> = self
            .points()
            .flat_map(|p| {
                if banded {
                    [p.min, p.max]
                } else {
                    [p.mean, p.mean]
                }
            })
            .collect();
        let max_epoch = self.points().map(|p| p.epoch).max().unwrap_or(0);
        let log = self.metric == Metric::TrainLoss
            && !values.is_empty()
            && values.iter().all(|&v| v > 0.0);
        let x = Axis::epochs(max_epoch);
        let y = match self.metric {
            Metric::TestAccuracy => Axis::values(&values, false, Some((0.0, 100.0))),
            _ => Axis::values(&values, log, None),
        };
        let y_zero_visible = !log && y.lo < 0.0 && y.hi > 0.0;
        let mid = ((x.lo + x.hi) / 2.0, (y.lo + y.hi) / 2.0);

        let axis_label = TextStyle::from((FAMILY, 18).into_font()).color(&BLACK);
        let tick_label = TextStyle::from((FAMILY, 15).into_font()).color(&BLACK);
        let mut chart = ChartBuilder::on(area)
            .margin_left(10)
            .margin_right(10)
            .margin_top(6)
            .margin_bottom(10)
            .x_label_area_size(56)
            .y_label_area_size(86)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(self.metric.y_label(log))
            .axis_desc_style(axis_label)
            .label_style(tick_label)
            .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
            .light_line_style(TRANSPARENT)
            .axis_style(RGBColor(0x55, 0x55, 0x55))
            .draw()
            .map_err(err)?;

        if values.is_empty() {
            let style = TextStyle::from((FAMILY, 20).into_font())
                .color(&RGBColor(0x77, 0x77, 0x77))
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart
                .draw_series(std::iter::once(Text::new(
                    "no finite values to plot",
                    (mid.0, mid.1),
                    style,
                )))
                .map_err(err)?;
        }

        if y_zero_visible {
            let (lo, hi) = (0.0, max_epoch.max(1) as f64);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(lo, 0.0), (hi, 0.0)],
                    RGBColor(0x88, 0x88, 0x88).stroke_width(1),
                )))
                .map_err(err)?;
        }

        if banded {
            for s in self.series.iter().filter(|s| s.seeds > 1) {
                for segment in &s.segments {
                    let band: Vec<(f64, f64)> = segment
                        .iter()
                        .map(|p| (p.epoch as f64, p.max))
                        .chain(segment.iter().rev().map(|p| (p.epoch as f64, p.min)))
                        .collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(
                            band,
                            s.color.mix(0.13).filled(),
                        )))
                        .map_err(err)?;
                }
            }
        }
        for s in &self.series {
            for segment in &s.segments {
                let line: Vec<(f64, f64)> =
                    segment.iter().map(|p| (p.epoch as f64, p.mean)).collect();
                if line.len() == 1 {
                    chart
                        .draw_series(line.iter().map(|&p| Circle::new(p, 4, s.color.filled())))
                        .map_err(err)?;
                } else {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            line,
                            s.color.stroke_width(2),
                        )))
                        .map_err(err)?;
                }
            }
        }
        Ok(())
    }

    fn draw_legend<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        labels: &[String],
        font: &TextStyle,
    ) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let row = 26;
        let (_, height) = area.dim_in_pixel();
        // Start level with the top of the plotting area; squeeze rows if there are many.
        let top = 8;
        let row = if labels.is_empty() {
            row
        } else {
            let room = i32::try_from(height)
                .unwrap_or(i32::MAX)
                .saturating_sub(top + 70);
            row.min(room / i32::try_from(labels.len()).unwrap_or(i32::MAX))
                .max(12)
        };
        // Many optimizers: smaller text to fit the smaller rows.
        let text = if row < 22 {
            TextStyle::from((FAMILY, f64::from((row - 4).max(8))).into_font()).color(&BLACK)
        } else {
            font.clone()
        };
        let text = text.pos(Pos::new(HPos::Left, VPos::Center));
        for (i, (s, label)) in self.series.iter().zip(labels).enumerate() {
            let y = top + row / 2 + row * i32::try_from(i).unwrap_or(i32::MAX);
            if self.banded() && s.seeds > 1 {
                area.draw(&Rectangle::new(
                    [(8, y - 7), (40, y + 7)],
                    s.color.mix(0.13).filled(),
                ))
                .map_err(err)?;
            }
            area.draw(&PathElement::new(
                vec![(8, y), (40, y)],
                s.color.stroke_width(3),
            ))
            .map_err(err)?;
            area.draw(&Text::new(label.clone(), (48, y), text.clone()))
                .map_err(err)?;
        }
        Ok(())
    }
}

/// Pixel size of `text` in `style`; (0, 0) when it cannot be estimated.
fn text_size<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
) -> (u32, u32) {
    area.estimate_text_size(text, style).unwrap_or((0, 0))
}

/// `text`, shortened with an ellipsis to fit in `max_width` pixels.
fn fit<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
    max_width: u32,
) -> String {
    if text_size(area, text, style).0 <= max_width {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    // Binary search the longest prefix that fits with the ellipsis.
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let candidate: String = chars[..mid].iter().chain(['…'].iter()).collect();
        if text_size(area, &candidate, style).0 <= max_width {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    chars[..lo].iter().chain(['…'].iter()).collect()
}

/// A linear or logarithmic axis over `lo..hi` with precomputed "nice" ticks.
#[derive(Clone, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
    /// Decimals for tick labels on a linear axis; `None`: significant digits (log axis).
    decimals: Option<usize>,
}

impl Axis {
    /// The epoch axis: `0..=max_epoch`, integer ticks.
    fn epochs(max_epoch: usize) -> Self {
        let hi = max_epoch.max(1) as f64;
        let step = nice_step(hi / 10.0).max(1.0).round();
        let ticks = (0..)
            .map(|i| f64::from(i) * step)
            .take_while(|&t| t <= hi + 1e-9)
            .collect();
        Axis {
            lo: 0.0,
            hi,
            log: false,
            ticks,
            decimals: Some(0),
        }
    }

    /// An axis covering `values` with a little margin, clamped to `clamp` if given.
    fn values(values: &[f64], log: bool, clamp: Option<(f64, f64)>) -> Self {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !(lo.is_finite() && hi.is_finite()) {
            // Nothing to show: a unit axis.
            let (lo, hi) = clamp.unwrap_or((0.0, 1.0));
            return Axis::linear(lo, hi);
        }
        if log {
            let (llo, lhi) = (lo.log10(), hi.log10());
            let pad = ((lhi - llo) * 0.05).max(0.05);
            let (lo, hi) = (10f64.powf(llo - pad), 10f64.powf(lhi + pad));
            if lo.is_finite() && hi.is_finite() && lo > 0.0 && hi > lo {
                return Axis::logarithmic(lo, hi);
            }
            return Axis::linear(0.0, 1.0);
        }
        let span = hi - lo;
        let pad = if span > 0.0 && span.is_finite() {
            span * 0.05
        } else {
            (lo.abs() * 0.1).max(0.5)
        };
        let (mut lo, mut hi) = (lo - pad, hi + pad);
        if let Some((min, max)) = clamp {
            lo = lo.max(min);
            hi = hi.min(max);
        }
        if !(lo.is_finite() && hi.is_finite() && hi > lo) {
            return Axis::linear(0.0, 1.0);
        }
        Axis::linear(lo, hi)
    }

    fn linear(lo: f64, hi: f64) -> Self {
        let step = nice_step((hi - lo) / 7.0);
        let first = (lo / step).ceil();
        let ticks: Vec<f64> = (0..40)
            .map(|i| (first + f64::from(i)) * step)
            .take_while(|&t| t <= hi + step * 1e-9)
            .map(|t| if t.abs() < step * 1e-9 { 0.0 } else { t })
            .collect();
        let decimals = (-step.log10().floor()).max(0.0) as usize
            + usize::from(((step / 10f64.powf(step.log10().floor())) - 2.5).abs() < 1e-9);
        Axis {
            lo,
            hi,
            log: false,
            ticks,
            decimals: Some(decimals.min(12)),
        }
    }

    fn logarithmic(lo: f64, hi: f64) -> Self {
        let decades = (hi / lo).log10();
        let ticks = if decades < 1.0 {
            // Less than a decade: evenly spaced values read better than powers of ten.
            let mut axis = Axis::linear(lo, hi);
            axis.ticks.retain(|&t| t > 0.0);
            axis.ticks
        } else {
            let mantissas: &[f64] = if decades <= 2.5 {
                &[1.0, 2.0, 5.0]
            } else if decades <= 4.0 {
                &[1.0, 3.0]
            } else {
                &[1.0]
            };
            let every = (decades / 6.0).ceil().max(1.0) as i32;
            let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
            let mut ticks = Vec::new();
            for e in (first..=last).filter(|e| (e - first) % every == 0) {
                for &m in mantissas {
                    let t = m * 10f64.powi(e);
                    if t >= lo && t <= hi {
                        ticks.push(t);
                    }
                }
            }
            ticks
        };
        Axis {
            lo,
            hi,
            log: true,
            ticks,
            decimals: None,
        }
    }

    fn fraction(&self, v: f64) -> f64 {
        if self.log {
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = self.fraction(*value);
        let px = f64::from(limit.0) + f * f64::from(limit.1 - limit.0);
        // `as` saturates (and maps NaN to 0): never panics.
        px.round().clamp(-1e7, 1e7) as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let max = hint.max_num_points().max(1);
        if self.ticks.len() <= max {
            return self.ticks.clone();
        }
        let every = self.ticks.len().div_ceil(max);
        self.ticks.iter().copied().step_by(every).collect()
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, value: &f64) -> String {
        match self.decimals {
            Some(d) => format!("{value:.d$}"),
            None => format_significant(*value),
        }
    }
}

/// A "nice" step (1, 2, 2.5 or 5 times a power of ten) close to `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = raw / magnitude;
    let nice = if m < 1.5 {
        1.0
    } else if m < 2.25 {
        2.0
    } else if m < 3.5 {
        2.5
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Up to three significant digits, without trailing zeros (`0.05`, `1`, `2.5`, `1e-05`).
fn format_significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor();
    if !(-4.0..6.0).contains(&magnitude) {
        return format!("{v:.0e}");
    }
    let decimals = (2.0 - magnitude).max(0.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.13), 0.1);
        assert_eq!(nice_step(0.3), 0.25);
        assert_eq!(nice_step(4.0), 5.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
    }

    #[test]
    fn significant_formatting() {
        assert_eq!(format_significant(0.05), "0.05");
        assert_eq!(format_significant(1.0), "1");
        assert_eq!(format_significant(2.5), "2.5");
        assert_eq!(format_significant(200.0), "200");
    }

    #[test]
    fn log_axis_has_ticks_within_a_decade() {
        let axis = Axis::values(&[0.2, 0.8], true, None);
        assert!(axis.log);
        assert!(axis.ticks.len() >= 3, "{:?}", axis.ticks);
        let axis = Axis::values(&[0.001, 2.3], true, None);
        assert!(axis.ticks.contains(&0.01) && axis.ticks.contains(&1.0));
    }

    #[test]
    fn epoch_ticks_are_integers() {
        let axis = Axis::epochs(0);
        assert_eq!(axis.ticks, vec![0.0, 1.0]);
        let axis = Axis::epochs(20);
        assert!(axis.ticks.iter().all(|t| t.fract() == 0.0));
        assert_eq!(axis.ticks.last(), Some(&20.0));
    }

    #[test]
    fn degenerate_ranges_do_not_panic() {
        for values in [
            &[][..],
            &[1.0][..],
            &[0.0, 0.0][..],
            &[f64::MAX, -f64::MAX][..],
        ] {
            let axis = Axis::values(values, false, None);
            assert!(axis.hi > axis.lo);
            let _ = axis.map(&f64::NAN, (0, 100));
        }
    }
}
