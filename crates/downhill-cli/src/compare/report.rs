//! Turns the per-epoch records of a comparison into files: `metrics.csv`, `metrics.json`,
//! three charts (PNG and SVG) and a self-contained `report.html`; and into a summary table for
//! the terminal.
//!
//! Every file is written atomically (a temporary file in the same folder, synced, then renamed
//! over the target), so an interrupted run leaves either the old file or the new one, never
//! half of one. Odd input (non-finite losses from a diverged run, no records, one epoch, one
//! optimizer) never panics: charts skip non-finite points and tables say "diverged" or "n/a".

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::plot::{Chart, Metric};
use super::record::{Claim, EpochRecord, RunFailure};

/// Columns of `metrics.csv`, in order: the fields of [`EpochRecord`].
pub const CSV_HEADER: [&str; 13] = [
    "optimizer",
    "seed",
    "epoch",
    "train_loss",
    "test_loss",
    "train_accuracy",
    "test_accuracy",
    "gap",
    "lr",
    "displacement",
    "wall_time_s",
    "state_bytes",
    "state_bytes_per_param",
];

/// Everything a report shows.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    /// One line describing the run, e.g.
    /// `"digits · MLP 64-64-10 (relu, dropout 0) · batch 32 · 20 epochs · seeds 0..3"`.
    pub title: &'a str,
    /// Optimizer labels in display order, which is also the legend and color order.
    /// Optimizers found in `records` but not here are shown after these.
    pub order: &'a [String],
    /// One record per optimizer, seed and epoch, in any order.
    pub records: &'a [EpochRecord],
    /// Runs that stopped early.
    pub failures: &'a [RunFailure],
    /// Verdicts on the lecture's claims.
    pub claims: &'a [Claim],
    /// The TOML configuration that reproduces the run, shown verbatim.
    pub config_toml: &'a str,
    /// The command line that reproduces the run.
    pub command: &'a str,
}

/// Mean and spread of one quantity over seeds, counting only finite values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stat {
    /// Mean of the finite values; NaN when there are none.
    pub mean: f64,
    /// Sample standard deviation (divisor `n - 1`) of the finite values; 0 when `n == 1`,
    /// NaN when `n == 0`.
    pub std: f64,
    /// How many finite values went into `mean` and `std`.
    pub n: usize,
    /// How many values were left out because they were NaN or infinite (diverged runs).
    pub non_finite: usize,
}

impl Stat {
    /// The statistic of `values`, leaving out (and counting) non-finite ones.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut finite = Vec::new();
        let mut non_finite = 0;
        for v in values {
            if v.is_finite() {
                finite.push(v);
            } else {
                non_finite += 1;
            }
        }
        let n = finite.len();
        if n == 0 {
            return Stat {
                mean: f64::NAN,
                std: f64::NAN,
                n,
                non_finite,
            };
        }
        let mean = finite.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            let ss: f64 = finite.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Stat {
            mean,
            std,
            n,
            non_finite,
        }
    }

    /// Whether there is at least one finite value.
    pub fn is_available(&self) -> bool {
        self.n > 0 && self.mean.is_finite()
    }
}

/// One optimizer's results over its seeds, each seed taken at the last epoch it reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The optimizer's label.
    pub optimizer: String,
    /// Number of seeds with at least one record.
    pub seeds: usize,
    /// The largest last epoch over the seeds.
    pub epochs: usize,
    /// The smallest last epoch over the seeds (less than `epochs` when a run stopped early).
    pub epochs_min: usize,
    /// Training loss at the last epoch.
    pub final_train_loss: Stat,
    /// Test loss at the last epoch.
    pub final_test_loss: Stat,
    /// Test accuracy at the last epoch, as a fraction in [0, 1].
    pub final_test_accuracy: Stat,
    /// Best test accuracy over all epochs of each seed, as a fraction in [0, 1].
    pub best_test_accuracy: Stat,
    /// Generalization gap (test loss − train loss) at the last epoch.
    pub final_gap: Stat,
    /// Cumulative training time divided by epochs, at the last epoch (seeds that never got
    /// past epoch 0 are left out).
    pub seconds_per_epoch: Stat,
    /// Bytes of optimizer state held, at the last epoch (a diverged run held it too).
    pub state_bytes: Stat,
    /// Bytes of optimizer state per parameter, at the last epoch.
    pub state_bytes_per_param: Stat,
}

/// Why a report file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Creating, writing, syncing or renaming a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file that was being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding `metrics.csv` failed.
    #[error("cannot write {}: {source}", path.display())]
    Csv {
        /// The file that was being written.
        path: PathBuf,
        /// The cause.
        source: csv::Error,
    },
    /// Encoding `metrics.json` failed.
    #[error("cannot write {}: {source}", path.display())]
    Json {
        /// The file that was being written.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// Drawing a chart failed.
    #[error("cannot draw {}: {message}", path.display())]
    Plot {
        /// The file that was being written.
        path: PathBuf,
        /// What plotters reported.
        message: String,
    },
}

/// The labels to show, in order: `order` (without repeats), then any optimizer of `records`
/// not in it, in order of first appearance.
fn labels(order: &[String], records: &[EpochRecord]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::with_capacity(order.len());
    for label in order.iter().chain(records.iter().map(|r| &r.optimizer)) {
        if !labels.contains(label) {
            labels.push(label.clone());
        }
    }
    labels
}

/// Whether a record is of a diverged model: a non-finite training or test loss.
fn diverged(r: &EpochRecord) -> bool {
    !(r.train_loss.is_finite() && r.test_loss.is_finite())
}

/// Summarizes each optimizer over its seeds, each seed at the last epoch it reached.
///
/// A seed whose last record has a non-finite loss counts as diverged: its final losses,
/// accuracy and gap are left out of the stats (and counted in [`Stat::non_finite`]); its best
/// test accuracy is taken over the epochs before it diverged.
///
/// One summary per label of `order` (an optimizer without records gets `seeds == 0` and
/// unavailable stats), then one per optimizer of `records` missing from `order`.
pub fn summarize(records: &[EpochRecord], order: &[String]) -> Vec<Summary> {
    labels(order, records)
        .into_iter()
        .map(|label| {
            // seed -> its records, in epoch order.
            let mut runs: BTreeMap<u64, Vec<&EpochRecord>> = BTreeMap::new();
            for r in records.iter().filter(|r| r.optimizer == label) {
                runs.entry(r.seed).or_default().push(r);
            }
            for run in runs.values_mut() {
                run.sort_by_key(|r| r.epoch);
            }
            let lasts: Vec<&EpochRecord> = runs
                .values()
                .filter_map(|run| run.last().copied())
                .collect();
            // A diverged record's accuracy and gap are artifacts of NaN outputs: count them
            // as non-finite too.
            let stat = |f: fn(&EpochRecord) -> f64| {
                Stat::of(
                    lasts
                        .iter()
                        .map(|r| if diverged(r) { f64::NAN } else { f(r) }),
                )
            };
            let best = Stat::of(runs.values().map(|run| {
                run.iter()
                    .filter(|r| !diverged(r))
                    .map(|r| r.test_accuracy)
                    .filter(|a| a.is_finite())
                    .fold(f64::NAN, f64::max)
            }));
            let per_epoch = Stat::of(
                lasts
                    .iter()
                    .filter(|r| r.epoch > 0)
                    .map(|r| r.wall_time_s / r.epoch as f64),
            );
            Summary {
                optimizer: label,
                seeds: runs.len(),
                epochs: lasts.iter().map(|r| r.epoch).max().unwrap_or(0),
                epochs_min: lasts.iter().map(|r| r.epoch).min().unwrap_or(0),
                final_train_loss: stat(|r| r.train_loss),
                final_test_loss: stat(|r| r.test_loss),
                final_test_accuracy: stat(|r| r.test_accuracy),
                best_test_accuracy: best,
                final_gap: stat(|r| r.gap),
                seconds_per_epoch: per_epoch,
                state_bytes: Stat::of(lasts.iter().map(|r| r.state_bytes as f64)),
                state_bytes_per_param: Stat::of(lasts.iter().map(|r| r.state_bytes_per_param)),
            }
        })
        .collect()
}

/// Column headings of the summary table.
const COLUMNS: [&str; 11] = [
    "optimizer",
    "seeds",
    "epochs",
    "train loss",
    "test loss",
    "test acc %",
    "best acc %",
    "gap",
    "s/epoch",
    "state",
    "state B/param",
];

/// How a number is written in a table cell.
#[derive(Clone, Copy)]
enum Format {
    /// At least 4 decimals and 3 significant digits (scientific when tiny or huge).
    Loss,
    /// 4 decimals with an explicit sign (scientific when huge).
    Signed,
    /// A fraction written as a percentage with 2 decimals.
    Percent,
    /// 3 decimals; never with a spread.
    Seconds,
}

/// How `v` is written: fixed-point with `decimals`, or scientific when huge.
#[derive(Clone, Copy)]
enum Notation {
    Fixed(usize),
    Scientific,
}

/// The notation for a mean `v` (already scaled, e.g. to percent): losses keep at least three
/// significant digits (`0.1170`, `0.002017`), gaps 4 decimals, percentages 2, seconds 3.
fn notation(v: f64, format: Format) -> Notation {
    let magnitude = v.abs();
    if magnitude >= 1e5 {
        return Notation::Scientific;
    }
    match format {
        Format::Signed => Notation::Fixed(4),
        Format::Loss => {
            if magnitude == 0.0 {
                Notation::Fixed(4)
            } else if magnitude < 1e-6 {
                Notation::Scientific
            } else {
                let digits = 3 - magnitude.log10().floor() as i64;
                Notation::Fixed(digits.clamp(4, 8) as usize)
            }
        }
        Format::Percent => Notation::Fixed(2),
        Format::Seconds => Notation::Fixed(3),
    }
}

fn scaled(v: f64, format: Format) -> f64 {
    match format {
        Format::Percent => 100.0 * v,
        _ => v,
    }
}

fn write_number(v: f64, notation: Notation, sign: bool) -> String {
    match (notation, sign) {
        (Notation::Scientific, true) => format!("{v:+.2e}"),
        (Notation::Scientific, false) => format!("{v:.2e}"),
        (Notation::Fixed(d), true) => format!("{v:+.d$}"),
        (Notation::Fixed(d), false) => format!("{v:.d$}"),
    }
}

/// A stat as a cell: "mean" or "mean ± std" (the std written like the mean, without sign),
/// with "(k/n)" when only k of n seeds were finite; "diverged" when none was, "n/a" when there
/// was nothing to measure.
fn cell(stat: &Stat, format: Format, with_std: bool) -> String {
    if !stat.is_available() {
        return if stat.non_finite > 0 {
            "diverged"
        } else {
            "n/a"
        }
        .to_owned();
    }
    let mean = scaled(stat.mean, format);
    let notation = notation(mean, format);
    let mut text = write_number(mean, notation, matches!(format, Format::Signed));
    if with_std && stat.std.is_finite() {
        text.push_str(" ± ");
        text.push_str(&write_number(scaled(stat.std, format), notation, false));
    }
    if stat.non_finite > 0 {
        let _ = write!(text, " ({}/{})", stat.n, stat.n + stat.non_finite);
    }
    text
}

/// `bytes` in B, KiB, MiB or GiB, with three significant digits from KiB on
/// (`"37.6 KiB"`, `"1.02 MiB"`, `"512 B"`).
fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024.0 {
        return format!("{bytes:.0} B");
    }
    let mut v = bytes / 1024.0;
    let mut unit = 0;
    // Rounded to three significant digits, 1023.5 KiB would read "1024 KiB": move up first.
    while v >= 999.5 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let decimals = if v < 9.995 {
        2
    } else if v < 99.95 {
        1
    } else {
        0
    };
    format!("{v:.decimals$} {}", UNITS[unit])
}

/// The state memory cells: the total held and the bytes per parameter (the mean over seeds,
/// which hold the same state; "n/a" without a record).
fn state_cells(s: &Summary) -> [String; 2] {
    if !s.state_bytes.is_available() || !s.state_bytes_per_param.is_available() {
        return ["n/a".to_owned(), "n/a".to_owned()];
    }
    [
        human_bytes(s.state_bytes.mean),
        format!("{:.2}", s.state_bytes_per_param.mean),
    ]
}

/// The cells of one summary row.
fn row(s: &Summary, with_std: bool) -> [String; 11] {
    let epochs = if s.seeds == 0 {
        "n/a".to_owned()
    } else if s.epochs_min == s.epochs {
        s.epochs.to_string()
    } else {
        format!("{}–{}", s.epochs_min, s.epochs)
    };
    let [state_total, state_per_param] = state_cells(s);
    [
        s.optimizer.clone(),
        s.seeds.to_string(),
        epochs,
        cell(&s.final_train_loss, Format::Loss, with_std),
        cell(&s.final_test_loss, Format::Loss, with_std),
        cell(&s.final_test_accuracy, Format::Percent, with_std),
        cell(&s.best_test_accuracy, Format::Percent, with_std),
        cell(&s.final_gap, Format::Signed, with_std),
        // Timing noise is not of interest: the mean only.
        cell(&s.seconds_per_epoch, Format::Seconds, false),
        state_total,
        state_per_param,
    ]
}

/// Whether the table shows "mean ± std" (some optimizer has more than one seed).
fn multi_seed(summaries: &[Summary]) -> bool {
    summaries.iter().any(|s| s.seeds > 1)
}

/// Notes explaining the table's notation, as needed by its contents.
fn table_notes(summaries: &[Summary]) -> Vec<&'static str> {
    let mut notes = vec![
        "Losses, accuracy and gap at the last epoch; best acc: best epoch.",
        "state: the optimizer state held (moments, 8-bit codes with their absmax), in all and \
         per parameter.",
    ];
    if multi_seed(summaries) {
        notes.push("mean ± sample standard deviation over seeds.");
    }
    let stats = |s: &Summary| {
        [
            s.final_train_loss,
            s.final_test_loss,
            s.final_test_accuracy,
            s.best_test_accuracy,
            s.final_gap,
            s.seconds_per_epoch,
        ]
    };
    if summaries
        .iter()
        .any(|s| stats(s).iter().any(|st| st.non_finite > 0 && st.n > 0))
    {
        notes.push("(k/n): only k of n seeds had a finite value.");
    }
    if summaries.iter().any(|s| s.epochs_min != s.epochs) {
        notes.push("epochs a–b: some seeds stopped early.");
    }
    notes
}

/// An aligned plain-text table of `summaries` for the terminal, with notes below it.
///
/// Accuracies are in percent; with more than one seed per optimizer each cell reads
/// "mean ± std".
pub fn summary_table(summaries: &[Summary]) -> String {
    let with_std = multi_seed(summaries);
    let rows: Vec<[String; 11]> = summaries.iter().map(|s| row(s, with_std)).collect();
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, &w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            // Widths count chars, as `format!` padding does.
            if i == 0 {
                let _ = write!(out, "{c:<w$}");
            } else {
                let _ = write!(out, "{c:>w$}");
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&COLUMNS.map(str::to_owned));
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&line(&rule));
    for r in &rows {
        out.push_str(&line(r));
    }
    for note in table_notes(summaries) {
        out.push_str(note);
        out.push('\n');
    }
    out
}

/// Writes `metrics.csv`, `metrics.json`, `train_loss.{png,svg}`, `test_accuracy.{png,svg}`,
/// `gap.{png,svg}` and `report.html` into `dir` (which must exist), each atomically, and
/// returns their paths in that order. Stops at the first file that cannot be written.
pub fn write_all(dir: &Path, report: &Report) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();

    let path = dir.join("metrics.csv");
    let csv = metrics_csv(report.records).map_err(|source| ReportError::Csv {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &csv)?;
    written.push(path);

    let path = dir.join("metrics.json");
    let json = metrics_json(report).map_err(|source| ReportError::Json {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &json)?;
    written.push(path);

    let labels = labels(report.order, report.records);
    let mut figures = Vec::new();
    for metric in Metric::ALL {
        let chart = Chart::new(metric, report.title, &labels, report.records);
        let png = dir.join(format!("{}.png", metric.file_stem()));
        write_png(&png, &chart)?;
        written.push(png);
        let path = dir.join(format!("{}.svg", metric.file_stem()));
        let plot_error = |message| ReportError::Plot {
            path: path.clone(),
            message,
        };
        let svg = chart.to_svg(true).map_err(plot_error)?;
        // The page has its own heading and caption: inline the chart without them.
        let bare = chart.to_svg(false).map_err(plot_error)?;
        write_atomic(&path, svg.as_bytes())?;
        written.push(path);
        figures.push(Figure {
            metric,
            svg: bare,
            caption: chart.caption(),
        });
    }

    let path = dir.join("report.html");
    let summaries = summarize(report.records, &labels);
    let html = report_html(report, &summaries, &figures);
    write_atomic(&path, html.as_bytes())?;
    written.push(path);
    Ok(written)
}

/// `metrics.csv`: the header, then one row per record. Non-finite numbers are written as
/// `NaN`, `inf` and `-inf`, which read back as such.
fn metrics_csv(records: &[EpochRecord]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    writer.write_record(CSV_HEADER)?;
    for record in records {
        writer.serialize(record)?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

/// `metrics.json`: `{"records": [...], "failures": [...], "claims": [...]}`, pretty-printed.
/// serde_json writes non-finite numbers as `null`.
fn metrics_json(report: &Report) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct Metrics<'a> {
        records: &'a [EpochRecord],
        failures: &'a [RunFailure],
        claims: &'a [Claim],
    }
    let mut json = serde_json::to_vec_pretty(&Metrics {
        records: report.records,
        failures: report.failures,
        claims: report.claims,
    })?;
    json.push(b'\n');
    Ok(json)
}

/// A temporary path in the same folder as `path`, keeping its extension (plotters picks the
/// image format from it).
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!(".{stem}.tmp-{}-{n}{ext}", std::process::id()))
}

/// Syncs `temp` and renames it to `path`; removes `temp` on failure.
fn commit(temp: &Path, path: &Path) -> Result<(), ReportError> {
    let result = File::open(temp)
        .and_then(|f| f.sync_all())
        .and_then(|()| fs::rename(temp, path));
    result.map_err(|source| {
        let _ = fs::remove_file(temp);
        ReportError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let temp = temp_path(path);
    let written = File::create(&temp).and_then(|mut f| f.write_all(bytes));
    if let Err(source) = written {
        let _ = fs::remove_file(&temp);
        return Err(ReportError::Io {
            path: path.to_owned(),
            source,
        });
    }
    commit(&temp, path)
}

/// Draws `chart` into `path` (a PNG) atomically.
fn write_png(path: &Path, chart: &Chart) -> Result<(), ReportError> {
    write_drawn(path, |temp| chart.to_png(temp))
}

/// Has `draw` write an image into a temporary file with `path`'s extension, then renames it
/// to `path`: a failure leaves whatever was at `path` before.
pub(crate) fn write_drawn(
    path: &Path,
    draw: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), ReportError> {
    let temp = temp_path(path);
    if let Err(message) = draw(&temp) {
        let _ = fs::remove_file(&temp);
        return Err(ReportError::Plot {
            path: path.to_owned(),
            message,
        });
    }
    commit(&temp, path)
}

/// A chart as the HTML page shows it.
struct Figure {
    metric: Metric,
    svg: String,
    caption: String,
}

/// `text` with `& < > " '` escaped, safe in HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG document made fit to inline in HTML: no XML prolog, no namespace URL (HTML does not
/// need it), scaled by CSS.
fn inline_svg(svg: &str) -> String {
    let start = svg.find("<svg").unwrap_or(0);
    svg[start..]
        .replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
        .replacen("<svg ", "<svg role=\"img\" ", 1)
}

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", Verdana, system-ui, sans-serif; margin: 0; color: #222;
  background: #fafafa; line-height: 1.45; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .3rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .6rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1rem 0 .4rem; }
.meta, figcaption, .notes { color: #555; font-size: .9rem; }
figure { margin: 1rem 0 2rem; }
figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #e4e4e4; text-align: left;
  vertical-align: top; }
th { background: #f3f3f3; }
td:first-child { white-space: nowrap; }
th.num { text-align: right; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.swatch { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px;
  margin-right: .4rem; vertical-align: -.05rem; }
ul.claims { list-style: none; padding: 0; }
ul.claims li { margin: .5rem 0; padding-left: 1.8rem; position: relative; }
ul.claims .mark { position: absolute; left: 0; font-weight: bold; width: 1.4rem;
  text-align: center; }
.holds .mark { color: #1a7f37; } .fails .mark { color: #c62828; } .unknown .mark { color: #777; }
.evidence { color: #444; font-size: .9rem; }
pre { background: #f5f5f5; border: 1px solid #e0e0e0; padding: .7rem; overflow-x: auto;
  font-size: .85rem; white-space: pre; }
"#;

/// The self-contained HTML page.
fn report_html(report: &Report, summaries: &[Summary], figures: &[Figure]) -> String {
    let mut h = String::new();
    let title = escape(report.title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>{title}</h1>\n"
    );
    let seeds = summaries.iter().map(|s| s.seeds).max().unwrap_or(0);
    let epochs = summaries.iter().map(|s| s.epochs).max().unwrap_or(0);
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} optimizer{} · {} seed{} · {} epoch{} · {} record{}{}</p>",
        summaries.len(),
        plural(summaries.len()),
        seeds,
        plural(seeds),
        epochs,
        plural(epochs),
        report.records.len(),
        plural(report.records.len()),
        if report.failures.is_empty() {
            String::new()
        } else {
            format!(
                " · {} failed run{}",
                report.failures.len(),
                plural(report.failures.len())
            )
        }
    );

    for figure in figures {
        let _ = write!(
            h,
            "<section>\n<h2>{}</h2>\n<figure>\n{}\n<figcaption>{} \
             <a href=\"{stem}.png\">PNG</a> · <a href=\"{stem}.svg\">SVG</a></figcaption>\n\
             </figure>\n</section>\n",
            escape(figure.metric.heading()),
            inline_svg(&figure.svg),
            escape(&figure.caption),
            stem = figure.metric.file_stem(),
        );
    }

    h.push_str("<section>\n<h2>Summary</h2>\n<table>\n<thead><tr>");
    for (i, c) in COLUMNS.iter().enumerate() {
        let class = if i == 0 { "" } else { " class=\"num\"" };
        let _ = write!(h, "<th{class}>{}</th>", escape(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    let with_std = multi_seed(summaries);
    for (i, s) in summaries.iter().enumerate() {
        let cells = row(s, with_std);
        let _ = write!(
            h,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td>",
            crate::draw::color_hex(i),
            escape(&cells[0])
        );
        for c in &cells[1..] {
            let _ = write!(h, "<td class=\"num\">{}</td>", escape(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n<p class=\"notes\">");
    h.push_str(&escape(&table_notes(summaries).join(" ")));
    h.push_str("</p>\n</section>\n");

    h.push_str("<section>\n<h2>Claims</h2>\n");
    if report.claims.is_empty() {
        h.push_str("<p class=\"meta\">No claims were checked.</p>\n");
    } else {
        h.push_str("<ul class=\"claims\">\n");
        for c in report.claims {
            let (class, mark, word) = match c.holds {
                Some(true) => ("holds", "✓", "holds"),
                Some(false) => ("fails", "✗", "does not hold"),
                None => ("unknown", "–", "cannot be judged"),
            };
            let _ = writeln!(
                h,
                "<li class=\"{class}\"><span class=\"mark\" title=\"{word}\">{mark}</span>\
                 {}<br><span class=\"evidence\">{}</span></li>",
                escape(&c.claim),
                escape(&c.evidence)
            );
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n");

    if !report.failures.is_empty() {
        h.push_str(
            "<section>\n<h2>Failed runs</h2>\n<table>\n<thead><tr><th>optimizer</th>\
             <th class=\"num\">seed</th><th class=\"num\">epoch</th><th>reason</th></tr></thead>\n<tbody>\n",
        );
        for f in report.failures {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td>{}</td></tr>",
                escape(&f.optimizer),
                f.seed,
                f.epoch,
                escape(&f.reason)
            );
        }
        h.push_str("</tbody>\n</table>\n</section>\n");
    }

    let _ = write!(
        h,
        "<section>\n<h2>Reproduce</h2>\n<h3>Command</h3>\n<pre>{}</pre>\n\
         <h3>Configuration</h3>\n<pre>{}</pre>\n\
         <p class=\"meta\">Data: <a href=\"metrics.csv\">metrics.csv</a> · \
         <a href=\"metrics.json\">metrics.json</a></p>\n</section>\n\
         </main>\n</body>\n</html>\n",
        escape(report.command),
        escape(report.config_toml)
    );
    h
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(optimizer: &str, seed: u64, epoch: usize, loss: f64, acc: f64) -> EpochRecord {
        EpochRecord {
            optimizer: optimizer.to_owned(),
            seed,
            epoch,
            train_loss: loss,
            test_loss: loss * 1.2,
            train_accuracy: acc,
            test_accuracy: acc * 0.98,
            gap: loss * 0.2,
            lr: 1e-3,
            displacement: if epoch == 0 { 0.0 } else { 0.5 },
            wall_time_s: 0.25 * epoch as f64,
            state_bytes: 38_480,
            state_bytes_per_param: 8.0,
        }
    }

    /// A fresh, empty folder under the system temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "downhill-report-test-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn labels_of(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a == b
    }

    #[test]
    fn csv_has_header_and_round_trips() {
        let mut records = vec![
            record("adam", 0, 0, 2.3, 0.1),
            record("sgd, \"momentum\"", 1, 1, 0.123_456_789_012_345_6, 0.5),
        ];
        records.push(EpochRecord {
            train_loss: f64::NAN,
            test_loss: f64::INFINITY,
            gap: f64::NEG_INFINITY,
            ..record("adam", 0, 2, 1.0, 0.2)
        });
        let bytes = metrics_csv(&records).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            "optimizer,seed,epoch,train_loss,test_loss,train_accuracy,test_accuracy,gap,lr,\
             displacement,wall_time_s,state_bytes,state_bytes_per_param"
        );
        assert!(text.contains("\"sgd, \"\"momentum\"\"\""), "{text}");
        let back: Vec<EpochRecord> = csv::Reader::from_reader(bytes.as_slice())
            .deserialize()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), records.len());
        assert_eq!(back[..2], records[..2]);
        let (a, b) = (&back[2], &records[2]);
        assert!(same(a.train_loss, b.train_loss));
        assert_eq!(a.test_loss, b.test_loss);
        assert_eq!(a.gap, b.gap);
    }

    #[test]
    fn csv_of_no_records_is_just_the_header() {
        let text = String::from_utf8(metrics_csv(&[]).unwrap()).unwrap();
        assert_eq!(text.trim_end(), CSV_HEADER.join(","));
    }

    #[test]
    fn summarize_over_seeds() {
        // Seed 0 and 1 of "a" run 2 epochs; seed 2 stops after 1 epoch. "b" is not in `order`.
        let mut records = vec![
            record("a", 0, 0, 2.0, 0.1),
            record("a", 0, 2, 0.5, 0.9),
            record("a", 0, 1, 1.0, 0.95),
            record("a", 1, 0, 2.0, 0.1),
            record("a", 1, 1, 1.0, 0.5),
            record("a", 1, 2, 0.7, 0.8),
            record("a", 2, 0, 2.0, 0.1),
            record("a", 2, 1, 0.9, 0.6),
            record("b", 0, 0, 2.0, 0.1),
        ];
        records[5].wall_time_s = 1.0;
        let s = summarize(&records, &labels_of(&["a", "missing"]));
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.iter().map(|s| s.optimizer.as_str()).collect::<Vec<_>>(),
            ["a", "missing", "b"]
        );
        let a = &s[0];
        assert_eq!((a.seeds, a.epochs, a.epochs_min), (3, 2, 1));
        // Final train losses: 0.5, 0.7, 0.9 -> mean 0.7, sample std 0.2.
        assert!((a.final_train_loss.mean - 0.7).abs() < 1e-12);
        assert!((a.final_train_loss.std - 0.2).abs() < 1e-12);
        assert_eq!(
            (a.final_train_loss.n, a.final_train_loss.non_finite),
            (3, 0)
        );
        // Final test accuracies: 0.98 * (0.9, 0.8, 0.6).
        assert!((a.final_test_accuracy.mean - 0.98 * 2.3 / 3.0).abs() < 1e-12);
        // Best test accuracies: 0.98 * (0.95, 0.8, 0.6).
        assert!((a.best_test_accuracy.mean - 0.98 * 2.35 / 3.0).abs() < 1e-12);
        // Seconds per epoch: 0.5 / 2, 1.0 / 2, 0.25 / 1 -> mean 1/3, sample std sqrt(3)/12.
        assert!((a.seconds_per_epoch.mean - 1.0 / 3.0).abs() < 1e-12);
        assert!((a.seconds_per_epoch.std - 3f64.sqrt() / 12.0).abs() < 1e-12);
        let missing = &s[1];
        assert_eq!(missing.seeds, 0);
        assert!(!missing.final_train_loss.is_available());
        let b = &s[2];
        assert_eq!((b.seeds, b.epochs), (1, 0));
        assert_eq!(b.final_train_loss.std, 0.0);
        assert_eq!(b.seconds_per_epoch.n, 0);
    }

    #[test]
    fn stat_skips_non_finite() {
        let s = Stat::of([1.0, f64::NAN, 3.0, f64::INFINITY]);
        assert_eq!((s.mean, s.n, s.non_finite), (2.0, 2, 2));
        assert!((s.std - 2f64.sqrt()).abs() < 1e-12);
        let s = Stat::of([f64::NAN]);
        assert!(!s.is_available());
        assert_eq!(cell(&s, Format::Loss, true), "diverged");
        assert_eq!(cell(&Stat::of([]), Format::Loss, true), "n/a");
    }

    #[test]
    fn cell_formatting() {
        let st = |mean, std| Stat {
            mean,
            std,
            n: 3,
            non_finite: 0,
        };
        assert_eq!(
            cell(&st(0.117, 0.0138), Format::Loss, true),
            "0.1170 ± 0.0138"
        );
        assert_eq!(
            cell(&st(0.002017, 3e-6), Format::Loss, true),
            "0.002017 ± 0.000003"
        );
        assert_eq!(cell(&st(2.0, 0.0), Format::Loss, false), "2.0000");
        assert_eq!(cell(&st(3e7, 1e6), Format::Loss, true), "3.00e7 ± 1.00e6");
        assert_eq!(
            cell(&st(0.9731, 0.0025), Format::Percent, true),
            "97.31 ± 0.25"
        );
        assert_eq!(
            cell(&st(-0.05, 0.01), Format::Signed, true),
            "-0.0500 ± 0.0100"
        );
        assert_eq!(
            cell(&st(0.2, 3.4e-17), Format::Seconds, true),
            "0.200 ± 0.000"
        );
        let partial = Stat {
            non_finite: 1,
            ..st(0.5, 0.1)
        };
        assert_eq!(cell(&partial, Format::Loss, true), "0.5000 ± 0.1000 (3/4)");
    }

    #[test]
    fn table_is_aligned_and_marks_diverged() {
        let records = vec![
            record("adam", 0, 1, 0.5, 0.9),
            record("adam", 1, 1, 0.7, 0.92),
            record("sgd", 0, 1, f64::NAN, 0.1),
            record("sgd", 1, 1, f64::NAN, 0.1),
        ];
        let table = summary_table(&summarize(&records, &labels_of(&["adam", "sgd"])));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("optimizer"));
        assert!(lines[1].starts_with("---------"));
        assert!(lines[2].contains("0.6000 ± 0.1414"), "{table}");
        assert!(lines[2].contains("89.18 ± 1.39"), "{table}");
        assert!(lines[3].contains("diverged"), "{table}");
        // Right-aligned columns end at the same place.
        let end = |l: &str| l.chars().count();
        assert_eq!(end(lines[0]), end(lines[2]));
        assert_eq!(end(lines[2]), end(lines[3]));
    }

    #[test]
    fn state_memory_is_in_the_table_in_all_and_per_parameter() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(1023.0), "1023 B");
        assert_eq!(human_bytes(1024.0), "1.00 KiB");
        assert_eq!(human_bytes(38_480.0), "37.6 KiB");
        assert_eq!(human_bytes(1023.6 * 1024.0), "1.00 MiB");
        assert_eq!(human_bytes(410.0 * 1024.0 * 1024.0), "410 MiB");
        // AdamW over 4810 parameters with f32 and with 8-bit state, where only the
        // 4096-element matrix is coded: 2·(4096 + 16·4) + 8·714 bytes.
        let eight = 2 * (4096 + 16 * 4) + 8 * 714;
        let records = vec![
            record("adamw", 0, 1, 0.5, 0.9),
            EpochRecord {
                state_bytes: eight,
                state_bytes_per_param: eight as f64 / 4810.0,
                ..record("adamw-8bit", 0, 1, 0.5, 0.9)
            },
            EpochRecord {
                state_bytes: eight,
                state_bytes_per_param: eight as f64 / 4810.0,
                ..record("adamw-8bit", 1, 1, f64::NAN, 0.9)
            },
        ];
        let summaries = summarize(&records, &labels_of(&["adamw", "adamw-8bit"]));
        assert_eq!(summaries[1].state_bytes.mean, eight as f64);
        let table = summary_table(&summaries);
        let lines: Vec<&str> = table.lines().collect();
        let last = |line: &str, n: usize| -> Vec<String> {
            let words: Vec<&str> = line.split_whitespace().collect();
            words[words.len() - n..]
                .iter()
                .map(|w| w.to_string())
                .collect()
        };
        assert!(lines[0].ends_with("state  state B/param"), "{table}");
        assert_eq!(last(lines[2], 3), ["37.6", "KiB", "8.00"], "{table}");
        // The mean over seeds, a diverged one included: it held its state too.
        assert_eq!(last(lines[3], 3), ["13.7", "KiB", "2.92"], "{table}");
        let end = |l: &str| l.chars().count();
        assert_eq!(end(lines[0]), end(lines[2]));
        assert!(table.contains("state: the optimizer state held"), "{table}");
        let empty = summary_table(&summarize(&[], &labels_of(&["x"])));
        assert_eq!(last(empty.lines().nth(2).unwrap(), 2), ["n/a", "n/a"]);
    }

    fn sample_report<'a>(
        title: &'a str,
        order: &'a [String],
        records: &'a [EpochRecord],
        failures: &'a [RunFailure],
        claims: &'a [Claim],
    ) -> Report<'a> {
        Report {
            title,
            order,
            records,
            failures,
            claims,
            config_toml: "[data]\nname = \"digits\" # <b>not bold</b>\n",
            command: "downhill compare --config run.toml --out 'runs/a&b'",
        }
    }

    fn check_files(dir: &Path, written: &[PathBuf]) {
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "metrics.csv",
                "metrics.json",
                "train_loss.png",
                "train_loss.svg",
                "test_accuracy.png",
                "test_accuracy.svg",
                "gap.png",
                "gap.svg",
                "report.html"
            ]
        );
        for p in written {
            assert_eq!(p.parent().unwrap(), dir);
            assert!(fs::metadata(p).unwrap().len() > 0, "{}", p.display());
            if p.extension().unwrap() == "png" {
                let bytes = fs::read(p).unwrap();
                assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", p.display());
            }
        }
        // No temporary file left behind.
        let leftovers: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn write_all_with_nan_and_failures() {
        let dir = temp_dir("nan");
        let mut records = Vec::new();
        for seed in 0..2 {
            for epoch in 0..4 {
                let loss = 2.0 / (1.0 + epoch as f64);
                records.push(record("adam", seed, epoch, loss, 0.2 * epoch as f64));
                let diverged = if epoch >= 2 { f64::NAN } else { loss };
                records.push(record("sgd <fast>", seed, epoch, diverged, 0.1));
            }
        }
        let failures = vec![RunFailure {
            optimizer: "sgd <fast>".to_owned(),
            seed: 0,
            epoch: 2,
            reason: "loss is NaN & <rising>".to_owned(),
        }];
        let claims = vec![
            Claim {
                claim: "Adam < SGD".to_owned(),
                holds: Some(true),
                evidence: "0.5 < 1.0".to_owned(),
            },
            Claim {
                claim: "b".to_owned(),
                holds: Some(false),
                evidence: "e".to_owned(),
            },
            Claim {
                claim: "c".to_owned(),
                holds: None,
                evidence: "needs lion".to_owned(),
            },
        ];
        let order = labels_of(&["adam", "sgd <fast>"]);
        let title = "digits · <MLP> & \"friends\"";
        let report = sample_report(title, &order, &records, &failures, &claims);
        let written = write_all(&dir, &report).unwrap();
        check_files(&dir, &written);

        let html = fs::read_to_string(dir.join("report.html")).unwrap();
        assert!(html.contains("digits · &lt;MLP&gt; &amp; &quot;friends&quot;"));
        assert!(!html.contains("<MLP>"));
        for bad in ["<script", "<link", "http:", "https:", "src=", "url("] {
            assert!(!html.contains(bad), "report.html contains {bad}");
        }
        assert!(html.contains("sgd &lt;fast&gt;"));
        assert!(html.contains("loss is NaN &amp; &lt;rising&gt;"));
        assert!(html.contains("# &lt;b&gt;not bold&lt;/b&gt;"));
        assert!(html.contains("runs/a&amp;b"));
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains('✓') && html.contains('✗') && html.contains('–'));
        assert!(html.contains("diverged"));

        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(json["records"].as_array().unwrap().len(), records.len());
        assert_eq!(json["failures"][0]["epoch"], 2);
        assert_eq!(json["records"][0]["state_bytes"], 38_480);
        assert_eq!(json["records"][0]["state_bytes_per_param"], 8.0);
        assert!(
            html.contains("<th class=\"num\">state B/param</th>"),
            "{html}"
        );
        assert!(html.contains("<td class=\"num\">37.6 KiB</td>"));
        assert_eq!(json["claims"][2]["holds"], serde_json::Value::Null);

        // Writing again replaces the files.
        let again = write_all(&dir, &report).unwrap();
        check_files(&dir, &again);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn write_all_single_epoch_single_optimizer() {
        let dir = temp_dir("single");
        let records = vec![record("adam", 0, 0, 2.3, 0.1)];
        let order = labels_of(&["adam"]);
        let report = sample_report("one", &order, &records, &[], &[]);
        let written = write_all(&dir, &report).unwrap();
        check_files(&dir, &written);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn write_all_no_records_and_all_nan() {
        let dir = temp_dir("empty");
        let report = sample_report("empty", &[], &[], &[], &[]);
        check_files(&dir, &write_all(&dir, &report).unwrap());
        let records: Vec<EpochRecord> = (0..3)
            .map(|e| EpochRecord {
                test_accuracy: f64::NAN,
                gap: f64::INFINITY,
                ..record("x", 0, e, f64::NAN, f64::NAN)
            })
            .collect();
        let report = sample_report("nan", &[], &records, &[], &[]);
        check_files(&dir, &write_all(&dir, &report).unwrap());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn error_names_the_file() {
        let dir = temp_dir("missing").join("does-not-exist");
        let report = sample_report("t", &[], &[], &[], &[]);
        let err = write_all(&dir, &report).unwrap_err();
        let ReportError::Io { path, .. } = &err else {
            panic!("expected an I/O error, got {err:?}");
        };
        assert_eq!(path, &dir.join("metrics.csv"));
        assert!(err.to_string().contains("metrics.csv"), "{err}");
    }
}
