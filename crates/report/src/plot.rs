//! Plots, drawn with plotters into SVG text.
//!
//! The SVG backend writes text as `<text>` elements and lets the viewer's browser pick a
//! sans-serif font, so no font library is linked and the plots render the same on any machine.
//! plotters estimates text widths for layout without a font (roughly 0.55 em a character), which
//! is why label areas below are sized from the longest label.
//!
//! Every plot is a pure function of figures ([`crate::summary`]) and a [`Palette`], so drawing
//! the same results twice gives the same bytes. Axes are drawn through `Axis`, which decides
//! between a linear and a logarithmic scale: when the values span more than [`LOG_SPREAD`]× (a
//! process starts in 0.6 ms, runc in 30 ms, QEMU in seconds) a linear axis would squash all but
//! the slowest into one pixel.

use crate::format;
use crate::summary::{DensitySeries, InterferenceRow, MemoryRow, StartupRow, ThroughputRow};
use isolab_host::stats::{Summary, N_TOO_SMALL};
use isolab_results::Family;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// Errors of drawing a plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters failed to draw.
    #[error("drawing the {plot} plot: {message}")]
    Draw {
        /// Which plot.
        plot: &'static str,
        /// plotters' message.
        message: String,
    },
    /// A stop was requested while the plot was drawn ([`isolab_host::interrupt::work_stopped`]).
    #[error("stopped while drawing a plot")]
    Interrupted,
}

/// Values spanning more than this factor get a logarithmic axis.
pub const LOG_SPREAD: f64 = 20.0;

/// Width of every plot, in pixels: fits a printed A4 page and a laptop screen at 100% zoom.
const WIDTH: u32 = 960;
const FONT: &str = "sans-serif";
// plotters writes font sizes divided by 1.24 into the SVG: 19 gives 15 px labels.
const TITLE_SIZE: u32 = 26;
const LABEL_SIZE: u32 = 19;
const SMALL_SIZE: u32 = 17;
/// Height of one category (one backend's bar or box).
const ROW: u32 = 44;

fn err(plot: &'static str) -> impl Fn(Box<dyn std::fmt::Display>) -> PlotError {
    move |e| PlotError::Draw {
        plot,
        message: e.to_string(),
    }
}

/// Shorthand: one drawing call, its plotters error turned into a [`PlotError`] for `plot`.
/// Every drawing call first asks whether a stop was requested ([`isolab_host::interrupt::work_stopped`]):
/// a plot of many elements is drawn in many calls, so a stop ends it within one of them.
macro_rules! draw {
    ($plot:expr, $e:expr) => {{
        if isolab_host::interrupt::work_stopped() {
            return Err(PlotError::Interrupted);
        }
        $e.map_err(|e| err($plot)(Box::new(e)))?
    }};
}

/// The most rows (bars, boxes, lines) of a plot the report draws. A plot of more is a wall of
/// slivers no one can read, and its SVG grows with every row, twice (once as a file, once
/// inline in the page): a results file naming thousands of backends gets its tables, and a
/// note instead of plots. The lab's own files have a few dozen rows at most (a dozen backends,
/// three working sets).
pub const MAX_ROWS: usize = 100;

/// How many points one drawing call draws at most, so that a row of many samples is drawn in
/// several calls, each after a look at the stop request.
const CHUNK: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Colours

/// Colours of the backends, fixed for a whole report so a backend looks the same in every plot.
/// Families get related hues (Okabe–Ito's colour-blind-safe set): grey for the baseline, blues
/// and green for containers, oranges and purple for VMs.
#[derive(Clone, Debug)]
pub struct Palette {
    colors: HashMap<String, RGBColor>,
}

const CONTAINER_COLORS: [RGBColor; 4] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0x1B, 0x4F, 0x72),
];
const VM_COLORS: [RGBColor; 4] = [
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0x8C, 0x4A, 0x1E),
];
const OTHER_COLORS: [RGBColor; 3] = [
    RGBColor(0x99, 0x99, 0x99),
    RGBColor(0x6A, 0x3D, 0x9A),
    RGBColor(0xB1, 0x59, 0x28),
];
/// Phases of the start-up waterfall (Tableau 10: distinct neighbours).
const PHASE_COLORS: [RGBColor; 20] = [
    RGBColor(0x4E, 0x79, 0xA7),
    RGBColor(0xF2, 0x8E, 0x2B),
    RGBColor(0xE1, 0x57, 0x59),
    RGBColor(0x76, 0xB7, 0xB2),
    RGBColor(0x59, 0xA1, 0x4F),
    RGBColor(0xED, 0xC9, 0x48),
    RGBColor(0xB0, 0x7A, 0xA1),
    RGBColor(0xFF, 0x9D, 0xA7),
    RGBColor(0x9C, 0x75, 0x5F),
    RGBColor(0xBA, 0xB0, 0xAC),
    RGBColor(0xA0, 0xCB, 0xE8),
    RGBColor(0xFF, 0xBE, 0x7D),
    RGBColor(0x8C, 0xD1, 0x7D),
    RGBColor(0xB6, 0x99, 0x2D),
    RGBColor(0x49, 0x98, 0x94),
    RGBColor(0xD3, 0x72, 0x95),
    RGBColor(0x79, 0x70, 0x6E),
    RGBColor(0xD4, 0xA6, 0xC8),
    RGBColor(0xD7, 0xB5, 0xA6),
    RGBColor(0xFA, 0xBF, 0xD2),
];

impl Palette {
    /// Colours for backends and their families, given in the order they first appear in the
    /// report.
    pub fn new<'a>(names: impl IntoIterator<Item = (&'a str, Family)>) -> Palette {
        let mut colors: HashMap<String, RGBColor> = HashMap::new();
        let mut used = [0usize; 4];
        for (name, family) in names {
            if colors.contains_key(name) {
                continue;
            }
            let (set, i): (&[RGBColor], usize) = match family {
                Family::Process => (&[RGBColor(0x55, 0x55, 0x55)], 0),
                Family::Container | Family::Sandbox => (&CONTAINER_COLORS, 1),
                Family::VmNoOs | Family::Vm | Family::VmGuestOs | Family::Emulated => {
                    (&VM_COLORS, 2)
                }
                Family::Floor | Family::Unknown => (&OTHER_COLORS, 3),
            };
            colors.insert(name.to_string(), set[used[i] % set.len()]);
            used[i] += 1;
        }
        Palette { colors }
    }

    /// The colour of `backend`.
    pub fn of(&self, backend: &str) -> RGBColor {
        self.colors.get(backend).copied().unwrap_or(OTHER_COLORS[0])
    }
}

/// `c` mixed with white: `amount` 0 is `c`, 1 is white.
fn lighter(c: RGBColor, amount: f64) -> RGBColor {
    let mix = |x: u8| (f64::from(x) + (255.0 - f64::from(x)) * amount).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

// ---------------------------------------------------------------------------------------------
// Axes

/// One axis: numbers on a linear or logarithmic scale, or named categories.
///
/// plotters draws in "plot coordinates"; a logarithmic axis stores log10 of each value there, so
/// one linear coordinate system serves both scales and the tick marks are chosen here, at 1, 2
/// and 5 of each decade, where a reader expects them.
#[derive(Clone, Debug)]
enum Axis {
    Linear {
        lo: f64,
        hi: f64,
    },
    Log {
        lo: f64,
        hi: f64,
    },
    /// Categories, the first at the top (vertical axis) or at the left (horizontal axis).
    Categories {
        names: Vec<String>,
        top_first: bool,
    },
}

impl Axis {
    /// A numeric axis for `values`: logarithmic when they span more than [`LOG_SPREAD`]× (and
    /// `allow_log`), otherwise linear from 0 (bars must start at zero or their lengths lie).
    /// `headroom` widens the top end, as a fraction of the axis's length, for labels drawn past
    /// the largest value.
    fn numeric(values: &[f64], allow_log: bool, headroom: f64) -> Axis {
        let positive: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
        let min = positive.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(0.0, f64::max);
        if allow_log && min.is_finite() && max / min > LOG_SPREAD {
            // Start at the 1, 2 or 5 just below the smallest value, so no decade is empty.
            let below = min / 1.15;
            let decade = 10f64.powf(below.log10().floor());
            let lo = [5.0, 2.0, 1.0]
                .iter()
                .map(|m| m * decade)
                .find(|v| *v <= below)
                .unwrap_or(decade);
            let hi = max * 1.3;
            let decades = hi.log10() - lo.log10();
            Axis::Log {
                lo,
                hi: 10f64.powf(hi.log10() + decades * headroom.max(0.0)),
            }
        } else {
            Axis::Linear {
                lo: 0.0,
                hi: if max > 0.0 {
                    max * (1.08 + headroom.max(0.0))
                } else {
                    1.0
                },
            }
        }
    }

    fn is_log(&self) -> bool {
        matches!(self, Axis::Log { .. })
    }

    /// The plot-coordinate range.
    fn range(&self) -> Range<f64> {
        match self {
            Axis::Linear { lo, hi } => *lo..*hi,
            Axis::Log { lo, hi } => lo.log10()..hi.log10(),
            Axis::Categories { names, .. } => 0.0..names.len() as f64,
        }
    }

    /// A value in plot coordinates (for categories, the centre of category `v`).
    fn at(&self, v: f64) -> f64 {
        match self {
            Axis::Linear { .. } => v,
            Axis::Log { lo, .. } => v.max(*lo).log10(),
            Axis::Categories { names, top_first } => {
                if *top_first {
                    names.len() as f64 - v - 0.5
                } else {
                    v + 0.5
                }
            }
        }
    }

    /// Where the tick marks go, in plot coordinates.
    fn ticks(&self) -> Vec<f64> {
        match self {
            Axis::Linear { lo, hi } => {
                let step = nice_step((hi - lo) / 6.0);
                let mut t = Vec::new();
                let mut x = (lo / step).ceil() * step;
                while x <= *hi + step * 1e-9 {
                    t.push(x);
                    x += step;
                }
                t
            }
            Axis::Log { lo, hi } => {
                let decades = (hi.log10() - lo.log10()).ceil() as i32;
                let mantissas: &[f64] = if decades <= 4 {
                    &[1.0, 2.0, 5.0]
                } else {
                    &[1.0]
                };
                let first = lo.log10().floor() as i32;
                let mut t = Vec::new();
                for k in first..=hi.log10().ceil() as i32 {
                    for m in mantissas {
                        let v = m * 10f64.powi(k);
                        if v >= *lo * 0.999 && v <= *hi {
                            t.push(v.log10());
                        }
                    }
                }
                t
            }
            Axis::Categories { names, .. } => (0..names.len()).map(|i| self.at(i as f64)).collect(),
        }
    }

    /// The label of a tick at plot coordinate `p`.
    fn text(&self, p: f64) -> String {
        match self {
            Axis::Linear { .. } => tick_number(p),
            Axis::Log { .. } => tick_number(10f64.powf(p)),
            Axis::Categories { names, top_first } => {
                let i = if *top_first {
                    names.len() as f64 - p - 0.5
                } else {
                    p - 0.5
                };
                names.get(i.round() as usize).cloned().unwrap_or_default()
            }
        }
    }

    /// The coordinate spec plotters needs: this range, ticks exactly where [`Axis::ticks`]
    /// says.
    fn spec(&self) -> Ticked {
        Ticked {
            inner: self.range().into(),
            ticks: self.ticks(),
        }
    }
}

/// A plotters coordinate: a linear range whose tick marks are given, not computed. (plotters'
/// own `WithKeyPoints` does the same but cannot take a label formatter for `f64` axes.)
#[derive(Clone)]
struct Ticked {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    // Labels come from the formatter given to the mesh; the default is never used.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Only bold lines (at the ticks); no light lines between them.
        if hint.weight().allow_light_points() {
            vec![]
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// A tick label: no more digits than the number has (`0.5`, `20`, `1500`).
fn tick_number(v: f64) -> String {
    let r = (v * 1e6).round() / 1e6;
    if r.abs() >= 1000.0 || r == r.round() {
        format!("{r:.0}")
    } else {
        let s = format!("{r:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Rough width in pixels of `text` at `size` (plotters' own estimate without a font).
fn text_width(text: &str, size: u32) -> u32 {
    (text.chars().count() as f64 * f64::from(size) * 0.56) as u32
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Ticked, Ticked>>;

/// Axis titles.
struct Titles<'t> {
    plot: &'static str,
    caption: &'t str,
    x: &'t str,
    y: &'t str,
}

/// Build a chart on `area` with axes `x` and `y`, mesh, tick labels and axis titles.
fn chart<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    t: &Titles,
    x: &Axis,
    y: &Axis,
) -> Result<Chart<'a, 'b>, PlotError> {
    let y_labels: Vec<String> = y.ticks().iter().map(|p| y.text(*p)).collect();
    let y_area = y_labels
        .iter()
        .map(|l| text_width(l, LABEL_SIZE))
        .max()
        .unwrap_or(0)
        + if t.y.is_empty() { 20 } else { 48 };
    let mut c = draw!(
        t.plot,
        ChartBuilder::on(area)
            .caption(t.caption, (FONT, TITLE_SIZE))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(if t.x.is_empty() { 34 } else { 58 })
            .y_label_area_size(y_area)
            .build_cartesian_2d(x.spec(), y.spec())
    );
    let fx = |p: &f64| x.text(*p);
    let fy = |p: &f64| y.text(*p);
    let mut mesh = c.configure_mesh();
    mesh.x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .label_style((FONT, LABEL_SIZE))
        .axis_desc_style((FONT, LABEL_SIZE))
        .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
        .light_line_style(TRANSPARENT);
    if !t.x.is_empty() {
        mesh.x_desc(t.x);
    }
    if !t.y.is_empty() {
        mesh.y_desc(t.y);
    }
    if matches!(y, Axis::Categories { .. }) {
        mesh.disable_y_mesh();
    }
    if matches!(x, Axis::Categories { .. }) {
        mesh.disable_x_mesh();
    }
    draw!(t.plot, mesh.draw());
    Ok(c)
}

/// Draw a row of legend entries (swatch and text), wrapping at the plot's width. Drawn outside
/// the plotting area, so a legend never hides data.
fn legend(
    plot: &'static str,
    area: &DrawingArea<SVGBackend, Shift>,
    items: &[(String, RGBColor)],
) -> Result<(), PlotError> {
    let style =
        TextStyle::from((FONT, LABEL_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let (mut x, mut y) = (20i32, 14i32);
    for (text, color) in items {
        let w = 26 + text_width(text, LABEL_SIZE) as i32 + 22;
        if x + w > WIDTH as i32 - 10 && x > 20 {
            x = 20;
            y += 26;
        }
        draw!(
            plot,
            area.draw(&Rectangle::new(
                [(x, y - 7), (x + 16, y + 7)],
                color.filled()
            ))
        );
        draw!(
            plot,
            area.draw(&Text::new(text.clone(), (x + 24, y), style.clone()))
        );
        x += w;
    }
    Ok(())
}

/// Height a legend of `items` needs.
fn legend_height(items: &[(String, RGBColor)]) -> u32 {
    let mut rows = 1;
    let mut x = 20;
    for (text, _) in items {
        let w = 26 + text_width(text, LABEL_SIZE) + 22;
        if x + w > WIDTH - 10 && x > 20 {
            rows += 1;
            x = 20;
        }
        x += w;
    }
    rows * 26 + 8
}

/// Start an SVG of `height`, run `body` on its drawing area, and return the SVG text.
fn svg(
    plot: &'static str,
    height: u32,
    body: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), PlotError>,
) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        draw!(plot, root.fill(&WHITE));
        body(&root)?;
        draw!(plot, root.present());
    }
    Ok(out)
}

/// A summary's median and the ends of its whisker: its 95% CI, or the median itself (no
/// whisker) when its samples are too few for one ([`Summary::ci`]).
fn span(s: &Summary) -> [f64; 3] {
    let (low, high) = s.ci().unwrap_or((s.median, s.median));
    [s.median, low, high]
}

fn text_style(size: u32, color: RGBColor, h: HPos) -> TextStyle<'static> {
    TextStyle {
        font: (FONT, size).into_font(),
        color: color.to_backend_color(),
        pos: Pos::new(h, VPos::Center),
    }
}

// ---------------------------------------------------------------------------------------------
// Start-up

/// Start-up distribution: one row per backend, a box from the 25th to the 75th percentile, the
/// median as a thick bar, whiskers from the 5th to the 95th, and every sample as a dot.
pub fn startup_distribution(
    rows: &[StartupRow],
    palette: &Palette,
) -> Result<Option<String>, PlotError> {
    const PLOT: &str = "start-up distribution";
    let rows: Vec<&StartupRow> = rows.iter().filter(|r| r.startup.is_some()).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.samples_ns.iter().map(|ns| ns / 1e6))
        .collect();
    // Room at the right of the slowest for its median's label.
    let x = Axis::numeric(&all, true, 0.15);
    let y = Axis::Categories {
        names: rows.iter().map(|r| r.label.clone()).collect(),
        top_first: true,
    };
    let x_title = if x.is_log() {
        "start-up time: launch requested → workload's first instruction (ms, log scale)"
    } else {
        "start-up time: launch requested → workload's first instruction (ms)"
    };
    let height = 120 + ROW * rows.len() as u32 + 30;
    let out = svg(PLOT, height, |root| {
        let titles = Titles {
            plot: PLOT,
            caption: "Start-up time per backend",
            x: x_title,
            y: "",
        };
        let mut c = chart(root, &titles, &x, &y)?;
        for (i, r) in rows.iter().enumerate() {
            let color = palette.of(&r.backend);
            let mut sorted: Vec<f64> = r.samples_ns.iter().map(|ns| ns / 1e6).collect();
            sorted.sort_by(f64::total_cmp);
            let q = |p: f64| x.at(isolab_host::stats::percentile(&sorted, p));
            let cy = y.at(i as f64);
            // Whiskers p5–p95, with end caps.
            let whisker = ShapeStyle::from(&color).stroke_width(2);
            draw!(
                PLOT,
                c.draw_series([
                    PathElement::new(vec![(q(5.0), cy), (q(95.0), cy)], whisker),
                    PathElement::new(vec![(q(5.0), cy - 0.15), (q(5.0), cy + 0.15)], whisker),
                    PathElement::new(vec![(q(95.0), cy - 0.15), (q(95.0), cy + 0.15)], whisker),
                ])
            );
            // The box: the middle half of the samples.
            draw!(
                PLOT,
                c.draw_series([
                    Rectangle::new(
                        [(q(25.0), cy - 0.28), (q(75.0), cy + 0.28)],
                        lighter(color, 0.6).filled()
                    ),
                    Rectangle::new(
                        [(q(25.0), cy - 0.28), (q(75.0), cy + 0.28)],
                        ShapeStyle::from(&color).stroke_width(1)
                    ),
                ])
            );
            // Every sample, spread vertically by a fixed pattern (not random: same bytes each
            // time) so equal values stay visible.
            for (start, chunk) in (0..).step_by(CHUNK).zip(sorted.chunks(CHUNK)) {
                draw!(
                    PLOT,
                    c.draw_series(chunk.iter().enumerate().map(|(j, v)| {
                        let k = start + j;
                        let dy = ((k * 7) % 11) as f64 / 10.0 * 0.4 - 0.2;
                        Circle::new((x.at(*v), cy + dy), 2, color.mix(0.55).filled())
                    }))
                );
            }
            // The median, thick, and its value.
            let med = q(50.0);
            draw!(
                PLOT,
                c.draw_series([PathElement::new(
                    vec![(med, cy - 0.32), (med, cy + 0.32)],
                    ShapeStyle::from(&BLACK).stroke_width(3),
                )])
            );
            let median_ns = r.startup.map_or(0.0, |s| s.median);
            let (px, py) = c.backend_coord(&(q(95.0).max(q(100.0)), cy));
            draw!(
                PLOT,
                root.draw(&Text::new(
                    format!("median {}", format::duration(median_ns)),
                    (px + 10, py),
                    text_style(SMALL_SIZE, RGBColor(0x22, 0x22, 0x22), HPos::Left),
                ))
            );
        }
        Ok(())
    })?;
    Ok(Some(out))
}

/// Phase names in the order they happen, merged over backends: a phase one backend has and
/// the others lack goes just before the first phase that follows it there (runc's `bundle`
/// before `fork`), so the legend reads like a timeline and each phase keeps one colour.
fn phase_order(rows: &[&StartupRow]) -> Vec<String> {
    // The order is a linked list (`next`/`prev` are positions in `names`), so a phase goes in
    // before another in one step wherever that one is, and `at` finds a phase in one lookup:
    // merging costs what the rows hold, however many phases they name.
    const END: usize = usize::MAX;
    let mut names: Vec<String> = Vec::new();
    let (mut next, mut prev): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let (mut first, mut last) = (END, END);
    let mut at: HashMap<String, usize> = HashMap::new();
    for r in rows {
        let seq: Vec<&String> = r.phases.iter().map(|(p, _)| p).collect();
        // For each phase of this row, the first phase after it that the order held before the
        // row: the one it goes in front of. (A row names each phase once, so no phase after
        // it is added before it is.)
        let mut known_after = vec![END; seq.len()];
        let mut known = END;
        for i in (0..seq.len()).rev() {
            known_after[i] = known;
            if let Some(&n) = at.get(seq[i]) {
                known = n;
            }
        }
        for (i, p) in seq.iter().enumerate() {
            if at.contains_key(*p) {
                continue;
            }
            let n = names.len();
            names.push((*p).clone());
            at.insert((*p).clone(), n);
            let before = known_after[i];
            // Link `n` in front of `before`, or at the end.
            let after = if before == END { last } else { prev[before] };
            next.push(before);
            prev.push(after);
            match after {
                END => first = n,
                a => next[a] = n,
            }
            match before {
                END => last = n,
                b => prev[b] = n,
            }
        }
    }
    let mut order = Vec::with_capacity(names.len());
    let mut i = first;
    while i != END {
        order.push(names[i].clone());
        i = next[i];
    }
    order
}

/// The start-up waterfall: one bar per backend, split into its phases (the median duration of
/// each), with the total at the end of the bar. The lab's lesson at a glance: where the time of
/// starting a process, a container or a VM goes.
///
/// `fast_only` keeps only the backends within 10× of the fastest, so their phases are not
/// squashed by a much slower one (drawn as a second, zoomed plot; none when that would keep one
/// bar, or all of them).
pub fn startup_waterfall(
    rows: &[StartupRow],
    fast_only: bool,
) -> Result<Option<String>, PlotError> {
    const PLOT: &str = "start-up waterfall";
    let total = |r: &StartupRow| r.phases.iter().map(|p| p.1).sum::<f64>();
    let mut rows: Vec<&StartupRow> = rows.iter().filter(|r| !r.phases.is_empty()).collect();
    // Phase colours from every backend, so the zoomed plot colours each phase as the full one.
    let phases = phase_order(&rows);
    // The zoom keeps the backends within 10× of the fastest: on one scale with a runtime or an
    // emulator 20–1000× slower, their phases would be slivers.
    let fastest = rows.iter().map(|r| total(r)).fold(f64::INFINITY, f64::min);
    if fast_only {
        let all = rows.len();
        rows.retain(|r| total(r) <= fastest * 10.0);
        if rows.len() < 2 || rows.len() == all {
            return Ok(None);
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let place: HashMap<&str, usize> = phases
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let color = |p: &str| PHASE_COLORS[place.get(p).copied().unwrap_or(0) % PHASE_COLORS.len()];
    let max_ms = rows.iter().map(|r| total(r) / 1e6).fold(0.0, f64::max);
    // Room at the right for the median's label.
    let x = Axis::Linear {
        lo: 0.0,
        hi: max_ms * 1.3,
    };
    let y = Axis::Categories {
        names: rows.iter().map(|r| r.label.clone()).collect(),
        top_first: true,
    };
    let shown: HashSet<&str> = rows
        .iter()
        .flat_map(|r| r.phases.iter().map(|(q, _)| q.as_str()))
        .collect();
    let items: Vec<(String, RGBColor)> = phases
        .iter()
        .filter(|p| shown.contains(p.as_str()))
        .map(|p| (format!("→ {p}"), color(p)))
        .collect();
    let lh = legend_height(&items);
    let height = 120 + ROW * rows.len() as u32 + lh;
    let out = svg(PLOT, height, |root| {
        let (top, bottom) = root.split_vertically(height - lh);
        let titles = Titles {
            plot: PLOT,
            caption: if fast_only {
                "Where start-up time goes (zoom on the fastest backends)"
            } else {
                "Where start-up time goes: median of each phase"
            },
            x: "time since launch requested (ms)",
            y: "",
        };
        let mut c = chart(&top, &titles, &x, &y)?;
        for (i, r) in rows.iter().enumerate() {
            let cy = y.at(i as f64);
            let mut t0 = 0.0;
            for (name, ns) in &r.phases {
                let t1 = t0 + ns / 1e6;
                draw!(
                    PLOT,
                    c.draw_series([Rectangle::new(
                        [(t0, cy - 0.3), (t1, cy + 0.3)],
                        color(name).filled(),
                    )])
                );
                // Name the phase inside its segment when it fits.
                let (px0, _) = c.backend_coord(&(t0, cy));
                let (px1, _) = c.backend_coord(&(t1, cy));
                if (px1 - px0) as u32 > text_width(name, SMALL_SIZE) + 8 {
                    draw!(
                        PLOT,
                        c.draw_series([Text::new(
                            name.clone(),
                            ((t0 + t1) / 2.0, cy),
                            text_style(SMALL_SIZE, WHITE, HPos::Center),
                        )])
                    );
                }
                t0 = t1;
            }
            // The label is the median start-up, the figure every table shows; the bar is the
            // sum of the phase medians, which is close to it but not the same thing.
            let median = r.startup.map_or(total(r), |s| s.median);
            let (px, py) = c.backend_coord(&(t0, cy));
            draw!(
                PLOT,
                top.draw(&Text::new(
                    format!("median {}", format::duration(median)),
                    (px + 6, py),
                    text_style(LABEL_SIZE, BLACK, HPos::Left),
                ))
            );
        }
        legend(PLOT, &bottom, &items)
    })?;
    Ok(Some(out))
}

// ---------------------------------------------------------------------------------------------
// Memory

/// Memory per instance: one bar per backend and working-set size, the fixed cost (at ready) in
/// the backend's colour and what the workload touched (ready → done) lighter after it.
pub fn memory(rows: &[MemoryRow], palette: &Palette) -> Result<Option<String>, PlotError> {
    const PLOT: &str = "memory";
    let rows: Vec<&MemoryRow> = rows.iter().filter(|r| r.fixed.is_some()).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let fixed = |r: &MemoryRow| mib(r.fixed.map_or(0.0, |s| s.median));
    let touched = |r: &MemoryRow| mib(r.touched.map_or(0.0, |s| s.median.max(0.0)));
    let totals: Vec<f64> = rows.iter().map(|r| fixed(r) + touched(r)).collect();
    let x = Axis::Linear {
        lo: 0.0,
        hi: totals.iter().copied().fold(0.0, f64::max) * 1.3,
    };
    let y = Axis::Categories {
        names: rows
            .iter()
            .map(|r| format!("{} · {} MiB", r.label, r.mib))
            .collect(),
        top_first: true,
    };
    let items = vec![
        (
            "fixed cost: held at ready".to_string(),
            RGBColor(0x44, 0x44, 0x44),
        ),
        (
            "touched by the workload: done − ready".to_string(),
            lighter(RGBColor(0x44, 0x44, 0x44), 0.6),
        ),
    ];
    let lh = legend_height(&items);
    let height = 120 + ROW * rows.len() as u32 + lh;
    let out = svg(PLOT, height, |root| {
        let (top, bottom) = root.split_vertically(height - lh);
        let titles = Titles {
            plot: PLOT,
            caption: "Memory one instance costs the host (kernel + anonymous memory, median)",
            x: "MiB held by the instance",
            y: "",
        };
        let mut c = chart(&top, &titles, &x, &y)?;
        for (i, r) in rows.iter().enumerate() {
            let cy = y.at(i as f64);
            let color = palette.of(&r.backend);
            let (f, t) = (fixed(r), touched(r));
            draw!(
                PLOT,
                c.draw_series([
                    Rectangle::new([(0.0, cy - 0.3), (f, cy + 0.3)], color.filled()),
                    Rectangle::new(
                        [(f, cy - 0.3), (f + t, cy + 0.3)],
                        lighter(color, 0.6).filled()
                    ),
                ])
            );
            let (px, py) = c.backend_coord(&(f + t, cy));
            draw!(
                PLOT,
                top.draw(&Text::new(
                    format!(
                        "{} + {}",
                        format::bytes(f * 1048576.0),
                        format::bytes(t * 1048576.0)
                    ),
                    (px + 6, py),
                    text_style(SMALL_SIZE, BLACK, HPos::Left),
                ))
            );
        }
        legend(PLOT, &bottom, &items)
    })?;
    Ok(Some(out))
}

// ---------------------------------------------------------------------------------------------
// Throughput

/// Throughput relative to `process`: for each kernel a group of bars, one per backend, with the
/// bootstrap 95% CI as a whisker and a dashed line at 1× (as fast as a plain process).
pub fn throughput(rows: &[ThroughputRow], palette: &Palette) -> Result<Option<String>, PlotError> {
    const PLOT: &str = "throughput";
    let rows: Vec<&ThroughputRow> = rows.iter().filter(|r| r.vs_process.is_some()).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    // Groups (workloads) and series (backends) in the order they first appear, each with its
    // place: a bar's position is two lookups.
    let mut groups: Vec<String> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let mut series: Vec<(String, String)> = Vec::new();
    let mut series_of: HashMap<&str, usize> = HashMap::new();
    for r in &rows {
        let g = crate::summary::workload_name(&r.workload);
        if !group_of.contains_key(&g) {
            group_of.insert(g.clone(), groups.len());
            groups.push(g);
        }
        if !series_of.contains_key(r.backend.as_str()) {
            series_of.insert(&r.backend, series.len());
            series.push((r.backend.clone(), r.label.clone()));
        }
    }
    let values: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.vs_process)
        .flat_map(|s| span(&s))
        .chain([1.0])
        .collect();
    let y = Axis::numeric(&values, true, 0.1);
    let x = Axis::Categories {
        names: groups.clone(),
        top_first: false,
    };
    let items: Vec<(String, RGBColor)> = series
        .iter()
        .map(|(b, l)| (l.clone(), palette.of(b)))
        .collect();
    let lh = legend_height(&items);
    let height = 480 + lh;
    let out = svg(PLOT, height, |root| {
        let (top, bottom) = root.split_vertically(height - lh);
        let titles = Titles {
            plot: PLOT,
            caption: "Throughput relative to a plain process (higher is faster)",
            x: "kernel and working set",
            y: if y.is_log() {
                "rate ÷ process's rate, same round (×, log scale)"
            } else {
                "rate ÷ process's rate, same round (×)"
            },
        };
        let mut c = chart(&top, &titles, &x, &y)?;
        let width = 0.8 / series.len() as f64;
        let one = y.at(1.0);
        for r in &rows {
            let Some(s) = r.vs_process else { continue };
            let g = group_of
                .get(&crate::summary::workload_name(&r.workload))
                .copied()
                .unwrap_or(0) as f64;
            let k = series_of.get(r.backend.as_str()).copied().unwrap_or(0) as f64;
            let x0 = g + 0.1 + k * width;
            let color = palette.of(&r.backend);
            let [m, lo, hi] = span(&s).map(|v| y.at(v));
            let mid = x0 + width / 2.0;
            // Bars grow from 1× (as fast as a process): up is faster, down is slower.
            draw!(
                PLOT,
                c.draw_series([Rectangle::new(
                    [(x0 + width * 0.08, one), (x0 + width * 0.92, m)],
                    color.filled()
                ),])
            );
            let above = s.median >= 1.0;
            let (px, py) = c.backend_coord(&(mid, if above { hi } else { lo }));
            draw!(
                PLOT,
                top.draw(&Text::new(
                    format!("{}×", format::sig3(s.median)),
                    (px, if above { py - 12 } else { py + 12 }),
                    text_style(SMALL_SIZE, BLACK, HPos::Center),
                ))
            );
            // Too few rounds for an interval: no whisker, and the plot says why.
            if s.ci().is_none() {
                draw!(
                    PLOT,
                    top.draw(&Text::new(
                        N_TOO_SMALL,
                        (px, if above { py - 26 } else { py + 26 }),
                        text_style(SMALL_SIZE, BLACK, HPos::Center),
                    ))
                );
                continue;
            }
            let whisker = ShapeStyle::from(&BLACK).stroke_width(2);
            draw!(
                PLOT,
                c.draw_series([
                    PathElement::new(vec![(mid, lo), (mid, hi)], whisker),
                    PathElement::new(
                        vec![(mid - width * 0.2, lo), (mid + width * 0.2, lo)],
                        whisker
                    ),
                    PathElement::new(
                        vec![(mid - width * 0.2, hi), (mid + width * 0.2, hi)],
                        whisker
                    ),
                ])
            );
        }
        draw!(
            PLOT,
            c.draw_series([DashedPathElement::new(
                vec![(0.0, one), (groups.len() as f64, one)],
                6,
                4,
                ShapeStyle::from(&BLACK).stroke_width(1),
            )])
        );
        legend(PLOT, &bottom, &items)
    })?;
    Ok(Some(out))
}

// ---------------------------------------------------------------------------------------------
// Interference

/// The victim's slowdown against the number of aggressors of one kind beside it: a line per
/// backend and configuration (solid: unlimited; dashed: limited), the median with its 95% CI
/// as a whisker, from 1× alone. `None` when no slowdown was measured.
pub fn interference(
    rows: &[InterferenceRow],
    aggressor: &str,
    palette: &Palette,
) -> Result<Option<String>, PlotError> {
    const PLOT: &str = "interference";
    let rows: Vec<&InterferenceRow> = rows
        .iter()
        .filter(|r| r.aggressor == aggressor && r.slowdown.is_some())
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    // One line per backend, victim and configuration.
    // Each line's rows, gathered in one pass.
    type LineKey = (String, String, isolab_results::Config, String);
    let mut lines: Vec<LineKey> = Vec::new();
    let mut of_line: HashMap<LineKey, Vec<&InterferenceRow>> = HashMap::new();
    for r in &rows {
        let key = (
            r.backend.clone(),
            r.victim.kernel.clone(),
            r.config,
            r.label.clone(),
        );
        of_line
            .entry(key.clone())
            .or_insert_with(|| {
                lines.push(key);
                Vec::new()
            })
            .push(r);
    }
    let victims: Vec<&str> = {
        let mut v: Vec<&str> = rows.iter().map(|r| r.victim.kernel.as_str()).collect();
        v.dedup();
        v
    };
    // The numbers of aggressors as categories (1, 2, 4, … are evenly spaced), alone first.
    let mut counts: Vec<u32> = rows.iter().map(|r| r.count).collect();
    counts.sort_unstable();
    counts.dedup();
    let column = |n: u32| counts.binary_search(&n).map_or(0.0, |i| i as f64 + 1.0);
    let ys: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.slowdown)
        .flat_map(|s| span(&s))
        .chain([1.0])
        .collect();
    let x = Axis::Categories {
        names: std::iter::once("alone".to_string())
            .chain(counts.iter().map(u32::to_string))
            .collect(),
        top_first: false,
    };
    let last = counts.len() as f64 + 1.0;
    let y = Axis::numeric(&ys, true, 0.1);
    let mut items: Vec<(String, RGBColor)> = Vec::new();
    let mut named = HashSet::new();
    for (backend, victim, _, label) in &lines {
        let name = if victims.len() > 1 {
            format!("{label}, victim {victim}")
        } else {
            label.clone()
        };
        if named.insert(name.clone()) {
            items.push((name, palette.of(backend)));
        }
    }
    let lh = legend_height(&items);
    let height = 460 + lh;
    let caption = format!(
        "The victim beside {} (solid: unlimited; dashed: limited)",
        match aggressor {
            "cpu" => "CPU hogs",
            "mem" => "memory-bandwidth streamers",
            "disk" => "disk writers",
            "fork" => "fork bombs",
            "oom" => "memory hogs",
            other => other,
        }
    );
    let out = svg(PLOT, height, |root| {
        let (area, bottom) = root.split_vertically(height - lh);
        let titles = Titles {
            plot: PLOT,
            caption: &caption,
            x: "aggressors beside the victim",
            y: if y.is_log() {
                "victim's time ÷ its time alone, same round (×, log scale)"
            } else {
                "victim's time ÷ its time alone, same round (×)"
            },
        };
        let mut c = chart(&area, &titles, &x, &y)?;
        let one = y.at(1.0);
        draw!(
            PLOT,
            c.draw_series([DashedPathElement::new(
                vec![(0.0, one), (last, one)],
                6,
                4,
                ShapeStyle::from(&RGBColor(0x88, 0x88, 0x88)).stroke_width(1),
            )])
        );
        // Points with too few rounds for an interval: no whisker, and a word beside them.
        let mut too_small: Vec<(f64, f64)> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let (backend, _, config, _) = line;
            let color = palette.of(backend);
            // Lines of one backend side by side, so their whiskers do not hide each other.
            let shift = (i as f64 - (lines.len() as f64 - 1.0) / 2.0) * 0.03;
            let mut pts: Vec<(f64, f64, f64, f64)> = vec![(x.at(0.0) + shift, one, one, one)];
            // The line's rows: its backend's, victim's and configuration's (a backend has one
            // label), by the number of aggressors.
            let mut mine: Vec<&InterferenceRow> = of_line[line].clone();
            mine.sort_by_key(|r| r.count);
            for r in mine {
                let Some(s) = r.slowdown else { continue };
                let [m, lo, hi] = span(&s).map(|v| y.at(v));
                pts.push((x.at(column(r.count)) + shift, m, lo, hi));
                if s.ci().is_none() {
                    too_small.push((x.at(column(r.count)) + shift, m));
                }
            }
            let path: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
            let style = ShapeStyle::from(&color).stroke_width(3);
            match config {
                isolab_results::Config::Unlimited => {
                    draw!(PLOT, c.draw_series(LineSeries::new(path.clone(), style)))
                }
                isolab_results::Config::Limited => draw!(
                    PLOT,
                    c.draw_series([DashedPathElement::new(path.clone(), 10, 6, style)])
                ),
            };
            draw!(
                PLOT,
                c.draw_series(path.iter().map(|p| Circle::new(*p, 4, color.filled())))
            );
            let whisker = ShapeStyle::from(&color).stroke_width(2);
            draw!(
                PLOT,
                c.draw_series(
                    pts.iter()
                        .skip(1)
                        .map(|p| { PathElement::new(vec![(p.0, p.2), (p.0, p.3)], whisker) })
                )
            );
        }
        for p in too_small {
            let (px, py) = c.backend_coord(&p);
            draw!(
                PLOT,
                area.draw(&Text::new(
                    N_TOO_SMALL,
                    (px + 8, py),
                    text_style(SMALL_SIZE, BLACK, HPos::Left),
                ))
            );
        }
        legend(PLOT, &bottom, &items)
    })?;
    Ok(Some(out))
}

// ---------------------------------------------------------------------------------------------
// Density

/// One line of a line plot: its label, colour and points.
type Line = (String, RGBColor, Vec<(f64, f64)>);

/// One line per backend: `value(step)` against the number of instances alive.
fn density_lines(
    plot: &'static str,
    series: &[DensitySeries],
    palette: &Palette,
    caption: &str,
    y_title: &str,
    allow_log: bool,
    value: impl Fn(&crate::summary::DensitySeries, &isolab_results::DensityStep) -> Option<f64>,
) -> Result<Option<String>, PlotError> {
    let points: Vec<Line> = series
        .iter()
        .map(|d| {
            let pts = d
                .steps
                .iter()
                .filter_map(|s| Some((f64::from(s.n), value(d, s)?)))
                .collect();
            (d.label.clone(), palette.of(&d.backend), pts)
        })
        .filter(|(_, _, p): &Line| !p.is_empty())
        .collect();
    if points.is_empty() {
        return Ok(None);
    }
    let xs: Vec<f64> = points
        .iter()
        .flat_map(|p| p.2.iter().map(|q| q.0))
        .collect();
    let ys: Vec<f64> = points
        .iter()
        .flat_map(|p| p.2.iter().map(|q| q.1))
        .collect();
    let x = Axis::numeric(&xs, false, 0.0);
    let y = Axis::numeric(&ys, allow_log, 0.0);
    let items: Vec<(String, RGBColor)> = points.iter().map(|p| (p.0.clone(), p.1)).collect();
    let lh = legend_height(&items);
    let height = 460 + lh;
    let out = svg(plot, height, |root| {
        let (top, bottom) = root.split_vertically(height - lh);
        let y_title = if y.is_log() {
            format!("{y_title} (log scale)")
        } else {
            y_title.to_string()
        };
        let titles = Titles {
            plot,
            caption,
            x: "instances alive at once",
            y: &y_title,
        };
        let mut c = chart(&top, &titles, &x, &y)?;
        for (_, color, pts) in &points {
            let pts: Vec<(f64, f64)> = pts.iter().map(|(n, v)| (*n, y.at(*v))).collect();
            draw!(
                plot,
                c.draw_series(LineSeries::new(
                    pts.clone(),
                    ShapeStyle::from(color).stroke_width(3)
                ))
            );
            draw!(
                plot,
                c.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            );
        }
        legend(plot, &bottom, &items)
    })?;
    Ok(Some(out))
}

/// Host memory against the number of instances, one line per backend.
pub fn density_memory(
    series: &[DensitySeries],
    palette: &Palette,
) -> Result<Option<String>, PlotError> {
    density_lines(
        "density memory",
        series,
        palette,
        "Memory of N idle instances (kernel memory + anonymous PSS)",
        "MiB",
        // Linear, always: the slope of each line is the cost of one more instance.
        false,
        |_, s| Some(s.instance_bytes as f64 / 1048576.0),
    )
}

/// Host memory of N instances of the lab's image, one line per backend (`lab run images`).
pub fn images_memory(
    series: &[DensitySeries],
    palette: &Palette,
) -> Result<Option<String>, PlotError> {
    density_lines(
        "images memory",
        series,
        palette,
        "Host memory of N instances of one image (its page cache counted once)",
        "MiB",
        false,
        |_, s| s.image.host_bytes.map(|b| b as f64 / 1048576.0),
    )
}

/// Launch rate at each step of the ladder, one line per backend.
pub fn density_launch(
    series: &[DensitySeries],
    palette: &Palette,
) -> Result<Option<String>, PlotError> {
    density_lines(
        "density launch rate",
        series,
        palette,
        "How fast instances start while others are running",
        "instances started per second",
        true,
        |_, s| {
            (s.added > 0 && s.launch_ns > 0)
                .then(|| f64::from(s.added) / (s.launch_ns as f64 / 1e9))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Fixture;
    use crate::summary;

    #[test]
    fn log_axes_tick_at_one_two_five() {
        let a = Axis::numeric(&[0.6, 32.0], true, 0.0);
        assert!(a.is_log());
        let labels: Vec<String> = a.ticks().iter().map(|t| a.text(*t)).collect();
        assert_eq!(labels, ["0.5", "1", "2", "5", "10", "20"]);
        let l = Axis::numeric(&[0.6, 3.0], true, 0.0);
        assert!(!l.is_log());
        assert_eq!(l.ticks().first(), Some(&0.0));
    }

    #[test]
    fn phases_merge_into_one_timeline() {
        let row = |phases: &[&str]| StartupRow {
            backend: "b".into(),
            label: "b".into(),
            samples_ns: vec![],
            startup: None,
            vs_process: None,
            phases: phases.iter().map(|p| (p.to_string(), 1.0)).collect(),
            failed: 0,
            traced: Vec::new(),
            trace_cost: None,
            cpu: None,
        };
        let process = row(&["cgroup", "fork", "exec", "ready"]);
        let container = row(&["cgroup", "fork", "namespaces", "rootfs", "exec", "ready"]);
        let runc = row(&["cgroup", "bundle", "fork", "exec", "ready"]);
        assert_eq!(
            phase_order(&[&process, &container, &runc]),
            [
                "cgroup",
                "bundle",
                "fork",
                "namespaces",
                "rootfs",
                "exec",
                "ready"
            ]
        );
    }

    #[test]
    fn categories_read_top_down() {
        let a = Axis::Categories {
            names: vec!["a".into(), "b".into(), "c".into()],
            top_first: true,
        };
        assert_eq!(a.at(0.0), 2.5);
        assert_eq!(a.text(2.5), "a");
        assert_eq!(a.text(0.5), "c");
    }

    #[test]
    fn plots_have_text_labels_without_a_font_library() {
        let mut f = Fixture::new("startup");
        for round in 0..5 {
            f.startup("process", round, 600_000 + u64::from(round) * 1000);
            f.startup("oci:runc", round, 30_000_000 + u64::from(round) * 1000);
        }
        let rows = summary::startup(&f.results());
        let palette = Palette::new([
            ("process", Family::Process),
            ("oci:runc", Family::Container),
        ]);
        let svg = startup_distribution(&rows, &palette).unwrap().unwrap();
        assert!(svg.starts_with("<svg"));
        for text in [
            "oci:runc",
            "log scale",
            "(ms",
            ">\n10\n</text>",
            "median 602 µs",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        let w = startup_waterfall(&rows, false).unwrap().unwrap();
        for text in [
            "→ cgroup",
            "→ fork",
            "→ ready",
            "time since launch requested (ms)",
        ] {
            assert!(w.contains(text), "{text} missing");
        }
        // Only process is within 10× of the fastest: a zoom on one bar only is pointless.
        assert_eq!(startup_waterfall(&rows, true).unwrap(), None);
        assert_eq!(startup_waterfall(&[], false).unwrap(), None);
    }
}
