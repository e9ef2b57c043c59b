#![cfg(feature = "host")]
//! timeline.svg and scaling.svg, written by hand: a bar per step of the
//! PID1 phase, and the phase against the image size. Pure string builders;
//! coordinates are rounded to 0.1 px so output changes only with the data.

use crate::results::{Analysis, Comparison, Edges, PathPoint, StepStats};
use crate::stats::Summary;
use crate::table::fmt_ms;

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 190.0;
const VALUE_W: f64 = 90.0;
const ROW_H: f64 = 20.0;
const FONT: &str = "font-family=\"DejaVu Sans, Verdana, sans-serif\" font-size=\"12\"";
const BAR: &str = "#3b6ea5";
const EDGE_BAR: &str = "#9aa5b1";
const SECOND: &str = "#c0504d";
const AXIS: &str = "stroke=\"#333\"";
const BOLD: &str = " font-weight=\"bold\"";

/// One bar of the timeline, in ms from the kernel's `Run /init`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub start: f64,
    pub len: f64,
    /// Drawn in grey: time the boot report does not cover.
    pub edge: bool,
}

/// The bars for one image size: exec to main, each step at its median
/// start and duration, then spawn to the handoff running.
pub fn timeline_bars(steps: &[StepStats], edges: Option<&Edges>, c: &Comparison) -> Vec<Bar> {
    let exec = edges.map_or(0.0, |e| e.exec_to_main_ms.median);
    let spawn = edges.map_or(0.0, |e| e.spawn_to_handoff_ms.median);
    let bar = |label: &str, start: f64, len: f64, edge: bool| Bar {
        label: label.into(),
        start,
        len,
        edge,
    };
    let steps = steps
        .iter()
        .filter_map(|s| Some((s.name.as_str(), s.per_size.iter().find(|p| p.mib == c.size.mib)?)));
    let mut bars: Vec<Bar> = edges
        .map(|_| bar("exec /init → main", 0.0, exec, true))
        .into_iter()
        .collect();
    bars.extend(steps.map(|(name, p)| bar(name, exec + p.start_ms.median, p.duration_ms.median, false)));
    if edges.is_some() {
        bars.push(bar(
            "spawn → handoff running",
            (c.basalt.median - spawn).max(0.0),
            spawn,
            true,
        ));
    }
    bars
}

/// A tick spacing of 1, 2 or 5 × 10^k giving at most `ticks` intervals up to `max`.
pub fn nice_step(max: f64, ticks: usize) -> f64 {
    if max <= 0.0 || ticks == 0 {
        return 1.0;
    }
    let raw = max / ticks as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let m = [1.0, 2.0, 5.0].into_iter().find(|m| m * mag >= raw).unwrap_or(10.0);
    m * mag
}

/// A tick's label: whole numbers when the ticks are whole.
pub fn tick_label(t: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn r1(x: f64) -> String {
    format!("{:.1}", (x * 10.0).round() / 10.0)
}

/// 0, step, 2 × step, … up to `span`.
fn ticks(span: f64, step: f64) -> Vec<f64> {
    let (mut out, mut t) = (Vec::new(), 0.0);
    while t <= span + 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

/// A picture being drawn.
struct Svg(String);

impl Svg {
    /// The frame, a white background and the bold title at `title_y`.
    fn new(height: f64, title_y: f64, title: &str) -> Svg {
        let mut svg = Svg(format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{h}\" viewBox=\"0 0 {WIDTH} {h}\" \
             {FONT}>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
            h = r1(height)
        ));
        svg.text(WIDTH / 2.0, title_y, "middle", BOLD, title);
        svg
    }

    fn text(&mut self, x: f64, y: f64, anchor: &str, extra: &str, body: &str) {
        let (x, y, body) = (r1(x), r1(y), escape(body));
        self.0 += &format!("<text x=\"{x}\" y=\"{y}\" text-anchor=\"{anchor}\"{extra}>{body}</text>\n");
    }

    fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
        let [x1, y1, x2, y2] = [x1, y1, x2, y2].map(r1);
        self.0 += &format!("<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" {style}/>\n");
    }

    fn end(mut self) -> String {
        self.0 += "</svg>\n";
        self.0
    }
}

/// Renders one panel per compared size: title, bars, axis.
pub fn timeline(a: &Analysis, accel: &str) -> String {
    let panels: Vec<(&Comparison, Vec<Bar>)> = a
        .comparisons
        .iter()
        .map(|c| (c, timeline_bars(&a.steps, a.edges.as_ref(), c)))
        .collect();
    let panel_h = |bars: &[Bar]| 30.0 + bars.len() as f64 * ROW_H + 40.0;
    let height = 40.0 + panels.iter().map(|(_, b)| panel_h(b)).sum::<f64>().max(40.0);
    let accel = accel.to_uppercase();
    let mut svg = Svg::new(
        height,
        22.0,
        &format!("basalt-init PID1 phase, one bar per step (median of the runs, {accel})"),
    );
    if panels.is_empty() {
        svg.text(WIDTH / 2.0, 60.0, "middle", "", "no boots were run");
    }
    let mut y = 40.0;
    for (c, bars) in &panels {
        panel(&mut svg, y, c, bars);
        y += panel_h(bars);
    }
    svg.end()
}

/// One size's bars, from its top edge at `y`.
fn panel(svg: &mut Svg, y: f64, c: &Comparison, bars: &[Bar]) {
    let plot_w = WIDTH - LABEL_W - VALUE_W - 20.0;
    let total = c
        .basalt
        .median
        .max(bars.iter().map(|b| b.start + b.len).fold(0.0, f64::max));
    let scale = if total > 0.0 { plot_w / total } else { 0.0 };
    let (b, bb) = (fmt_ms(c.basalt.median), fmt_ms(c.busybox.median));
    let heading = format!("{} MiB image: PID1 phase {b} ms (busybox {bb} ms)", c.size.mib);
    svg.text(10.0, y + 16.0, "start", BOLD, &heading);
    let top = y + 30.0;
    for (i, b) in bars.iter().enumerate() {
        let ry = top + i as f64 * ROW_H;
        svg.text(LABEL_W - 8.0, ry + 14.0, "end", "", &b.label);
        let (x, w) = (LABEL_W + b.start * scale, (b.len * scale).max(1.0));
        let fill = if b.edge { EDGE_BAR } else { BAR };
        let [rx, ry3, rw, rh] = [x, ry + 3.0, w, ROW_H - 6.0].map(r1);
        svg.0 += &format!("<rect x=\"{rx}\" y=\"{ry3}\" width=\"{rw}\" height=\"{rh}\" fill=\"{fill}\"/>\n");
        svg.text(x + w + 6.0, ry + 14.0, "start", "", &format!("{} ms", fmt_ms(b.len)));
    }
    let axis_y = top + bars.len() as f64 * ROW_H + 4.0;
    svg.line((LABEL_W, axis_y), (LABEL_W + plot_w, axis_y), AXIS);
    let step = nice_step(total, 6);
    for t in ticks(total, step) {
        let x = LABEL_W + t * scale;
        svg.line((x, axis_y), (x, axis_y + 4.0), AXIS);
        svg.text(x, axis_y + 17.0, "middle", "", &tick_label(t, step));
    }
    let note = "ms after the kernel's \"Run /init\"";
    svg.text(LABEL_W + plot_w, axis_y + 32.0, "end", "", note);
}

/// One series of the scaling chart: (image MiB, median, min, max) in ms.
pub type Series = Vec<(f64, f64, f64, f64)>;

pub fn scaling_series(a: &Analysis) -> (Series, Series) {
    let points = &a.scaling.points;
    let phase = points
        .iter()
        .map(|p| (p.size.real_mib(), p.phase.median, p.phase.min, p.phase.max));
    let verify = points
        .iter()
        .filter_map(|p| Some((p.size.real_mib(), p.verify?.median, p.verify?.min, p.verify?.max)));
    (phase.collect(), verify.collect())
}

/// The scaling chart's plot area and its scales, from data to pixels.
struct Plot {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    span_x: f64,
    span_y: f64,
}

impl Plot {
    fn x(&self, x: f64) -> f64 {
        self.left
            + if self.span_x > 0.0 {
                x / self.span_x * (self.right - self.left)
            } else {
                0.0
            }
    }

    fn y(&self, y: f64) -> f64 {
        self.bottom
            - if self.span_y > 0.0 {
                y / self.span_y * (self.bottom - self.top)
            } else {
                0.0
            }
    }
}

/// The PID1 phase and verify-image against image size, with min–max bars.
pub fn scaling(a: &Analysis, accel: &str) -> String {
    let (phase, verify) = scaling_series(a);
    let height = 420.0;
    let title = format!(
        "basalt-init PID1 phase against root image size ({})",
        accel.to_uppercase()
    );
    let mut svg = Svg::new(height, 24.0, &title);
    if phase.is_empty() {
        svg.text(WIDTH / 2.0, height / 2.0, "middle", "", "no boots were run");
        return svg.end();
    }
    let all = [(&phase, BAR, "PID1 phase"), (&verify, SECOND, "verify-image step")];
    chart(&mut svg, (50.0, height - 60.0), &all);
    svg.end()
}

/// Medians and min–max bars of `all` (series, colour, name) against image
/// size, on axes from `top` to `bottom`, the legend at the top left.
fn chart(svg: &mut Svg, (top, bottom): (f64, f64), all: &[(&Series, &str, &str)]) {
    let points = || all.iter().flat_map(|s| s.0.iter());
    let max_x = points().map(|p| p.0).fold(0.0, f64::max);
    let max_y = points().map(|p| p.3).fold(0.0, f64::max);
    let (step_x, step_y) = (nice_step(max_x, 8), nice_step(max_y, 6));
    let plot = Plot {
        left: 80.0,
        right: WIDTH - 30.0,
        top,
        bottom,
        span_x: (max_x / step_x).ceil() * step_x,
        span_y: (max_y / step_y).ceil() * step_y,
    };
    axes(svg, &plot, step_x, step_y);
    let drawn = all.iter().filter(|s| !s.0.is_empty());
    for (i, (series, color, name)) in drawn.enumerate() {
        plot_series(svg, &plot, series, color, name, plot.top + 10.0 + 18.0 * i as f64);
    }
}

/// The slot disk's boots (part 8) beside the initramfs path: kernel to
/// /init above, the PID1 phase below, one series per path.
pub fn disk(a: &Analysis, accel: &str) -> String {
    use crate::boots::{Init, Root};
    let height = 700.0;
    let title = format!(
        "Kernel to /init and PID1 phase against root image size, per path ({})",
        accel.to_uppercase()
    );
    let mut svg = Svg::new(height, 24.0, &title);
    if a.disk.is_empty() {
        svg.text(WIDTH / 2.0, height / 2.0, "middle", "", "no disk boots were run");
        return svg.end();
    }
    let paths = [
        (Init::Basalt, Root::Initramfs, BAR),
        (Init::Busybox, Root::Initramfs, "#7f7f7f"),
        (Init::Basalt, Root::Ram, SECOND),
        (Init::Basalt, Root::Disk, "#4f8f3f"),
    ];
    type Figure = fn(&PathPoint) -> Summary;
    let series = |init, root, f: Figure| -> Series {
        let on = a.disk.iter().filter(|p| (p.init, p.root) == (init, root));
        on.map(|p| (p.size.real_mib(), f(p).median, f(p).min, f(p).max))
            .collect()
    };
    for (top, name, f) in [
        (60.0, "kernel to /init", (|p: &PathPoint| p.kernel) as Figure),
        (390.0, "PID1 phase", |p: &PathPoint| p.phase),
    ] {
        svg.text(80.0, top - 8.0, "start", BOLD, name);
        let all: Vec<(Series, &str, &str)> = paths
            .iter()
            .map(|&(i, r, c)| (series(i, r, f), c, r.label(i)))
            .collect();
        let all: Vec<(&Series, &str, &str)> = all.iter().map(|(s, c, n)| (s, *c, *n)).collect();
        chart(&mut svg, (top, top + 250.0), &all);
    }
    svg.end()
}

/// The grid, the axes, their ticks and labels.
fn axes(svg: &mut Svg, p: &Plot, step_x: f64, step_y: f64) {
    for t in ticks(p.span_y, step_y) {
        svg.line((p.left, p.y(t)), (p.right, p.y(t)), "stroke=\"#ddd\"");
        svg.text(p.left - 6.0, p.y(t) + 4.0, "end", "", &tick_label(t, step_y));
    }
    for t in ticks(p.span_x, step_x) {
        svg.line((p.x(t), p.bottom), (p.x(t), p.bottom + 4.0), AXIS);
        svg.text(p.x(t), p.bottom + 18.0, "middle", "", &tick_label(t, step_x));
    }
    svg.line((p.left, p.bottom), (p.right, p.bottom), AXIS);
    svg.line((p.left, p.top), (p.left, p.bottom), AXIS);
    let label = "root image size (MiB)";
    svg.text((p.left + p.right) / 2.0, p.bottom + 40.0, "middle", "", label);
    let mid = r1((p.top + p.bottom) / 2.0);
    svg.0 +=
        &format!("<text x=\"20\" y=\"{mid}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {mid})\">ms</text>\n");
}

/// One series: the line through the medians, a min–max bar and a dot per
/// size, and its legend entry at `legend_y`.
fn plot_series(svg: &mut Svg, p: &Plot, series: &Series, color: &str, name: &str, legend_y: f64) {
    let points: Vec<String> = series
        .iter()
        .map(|s| format!("{},{}", r1(p.x(s.0)), r1(p.y(s.1))))
        .collect();
    let points = points.join(" ");
    svg.0 += &format!("<polyline points=\"{points}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n");
    for s in series {
        svg.line(
            (p.x(s.0), p.y(s.2)),
            (p.x(s.0), p.y(s.3)),
            &format!("stroke=\"{color}\""),
        );
        let (cx, cy) = (r1(p.x(s.0)), r1(p.y(s.1)));
        svg.0 += &format!("<circle cx=\"{cx}\" cy=\"{cy}\" r=\"3.5\" fill=\"{color}\"/>\n");
    }
    let lx = p.left + 20.0;
    let style = format!("stroke=\"{color}\" stroke-width=\"2\"");
    svg.line((lx, legend_y), (lx + 24.0, legend_y), &style);
    let label = format!("{name} (median; bars: min–max)");
    svg.text(lx + 30.0, legend_y + 4.0, "start", "", &label);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{analyse, tests_support::sample_raw};

    #[test]
    fn ticks_and_labels() {
        let cases: &[(f64, usize, f64)] = &[
            (1933.0, 6, 500.0),
            (28400.0, 6, 5000.0),
            (1024.0, 8, 200.0),
            (10.0, 5, 2.0),
            (9.5, 1, 10.0),
            (0.0, 6, 1.0),
            (7.0, 0, 1.0),
        ];
        for &(max, ticks, want) in cases {
            assert_eq!(nice_step(max, ticks), want, "{max} / {ticks}");
        }
        let cases: &[(f64, f64, &str)] = &[
            (0.0, 500.0, "0"),
            (1500.0, 500.0, "1500"),
            (0.4, 0.2, "0.4"),
            (0.0, 0.5, "0.0"),
        ];
        for &(t, step, want) in cases {
            assert_eq!(tick_label(t, step), want);
        }
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    #[test]
    fn timeline_has_a_bar_per_step_plus_the_edges() {
        let a = analyse(&sample_raw());
        let bars = timeline_bars(&a.steps, a.edges.as_ref(), &a.comparisons[0]);
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        let want = [
            "exec /init → main",
            "manifest",
            "modules",
            "verify-image",
            "spawn → handoff running",
        ];
        assert_eq!(labels, want);
        // Steps start after exec (40 ms) at their offset from init's start.
        assert!((bars[2].start - (40.0 + 10.0)).abs() < 1e-9, "{bars:?}");
        assert!((bars[3].len - 1500.0).abs() < 1e-9);
        // The last bar ends where the phase ends.
        let last = bars.last().unwrap();
        assert!((last.start + last.len - a.comparisons[0].basalt.median).abs() < 1e-9);

        let svg = timeline(&a, "tcg");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(
            svg.matches("<rect ").count(),
            1 + bars.len(),
            "background + one per bar"
        );
        assert!(svg.contains("64 MiB image: PID1 phase 1920 ms (busybox 1900 ms)"));
        assert!(svg.contains("exec /init → main"));
        assert!(svg.contains("(median of the runs, TCG)"));
        // Same input, same bytes.
        assert_eq!(svg, timeline(&a, "tcg"));
    }

    #[test]
    fn scaling_chart_plots_each_size() {
        let a = analyse(&sample_raw());
        let (phase, verify) = scaling_series(&a);
        assert_eq!(phase.iter().map(|p| p.0).collect::<Vec<_>>(), [64.0, 256.0]);
        assert_eq!(verify.len(), 2);
        let svg = scaling(&a, "tcg");
        assert_eq!(svg.matches("<polyline ").count(), 2);
        assert_eq!(svg.matches("<circle ").count(), 4);
        assert!(svg.contains("root image size (MiB)"));
        let empty = scaling(&analyse(&Default::default()), "tcg");
        assert!(empty.contains("no boots were run") && empty.ends_with("</svg>\n"));
    }
}
