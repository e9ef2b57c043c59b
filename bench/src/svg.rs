#![cfg(feature = "host")]
//! timeline.svg and scaling.svg, written by hand: a bar per step of the
//! PID1 phase, and the phase against the image size. Pure string builders;
//! coordinates are rounded to 0.1 px so output changes only with the data.

use crate::results::{Analysis, Comparison, Edges, StepStats};
use crate::table::fmt_ms;

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 190.0;
const VALUE_W: f64 = 90.0;
const ROW_H: f64 = 20.0;
const FONT: &str = "font-family=\"DejaVu Sans, Verdana, sans-serif\" font-size=\"12\"";
const BAR: &str = "#3b6ea5";
const EDGE_BAR: &str = "#9aa5b1";
const SECOND: &str = "#c0504d";

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
    let mut bars = Vec::new();
    if edges.is_some() {
        bars.push(Bar {
            label: "exec /init → main".into(),
            start: 0.0,
            len: exec,
            edge: true,
        });
    }
    for s in steps {
        if let Some((_, dur, start)) = s.per_size.iter().find(|p| p.0 == c.mib) {
            bars.push(Bar {
                label: s.name.clone(),
                start: exec + start.median,
                len: dur.median,
                edge: false,
            });
        }
    }
    if edges.is_some() {
        bars.push(Bar {
            label: "spawn → handoff running".into(),
            start: (c.basalt.median - spawn).max(0.0),
            len: spawn,
            edge: true,
        });
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
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
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

fn text(x: f64, y: f64, anchor: &str, extra: &str, body: &str) -> String {
    format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\"{extra}>{}</text>\n",
        r1(x),
        r1(y),
        escape(body)
    )
}

fn line(x1: f64, y1: f64, x2: f64, y2: f64, style: &str) -> String {
    format!(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" {style}/>\n",
        r1(x1),
        r1(y1),
        r1(x2),
        r1(y2)
    )
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

/// The picture's frame and its bold title at `title_y`: `title`, then the
/// accelerator in capitals and a closing parenthesis.
fn page(height: f64, title_y: f64, title: &str, accel: &str) -> String {
    let title = format!("{title}{})", accel.to_uppercase());
    header(height) + &text(WIDTH / 2.0, title_y, "middle", " font-weight=\"bold\"", &title)
}

fn no_boots(y: f64) -> String {
    text(WIDTH / 2.0, y, "middle", "", "no boots were run")
}

const AXIS: &str = "stroke=\"#333\"";

/// Renders one panel per compared size: title, bars, axis.
pub fn timeline(a: &Analysis, accel: &str) -> String {
    let panels: Vec<(&Comparison, Vec<Bar>)> = a
        .comparisons
        .iter()
        .map(|c| (c, timeline_bars(&a.steps, a.edges.as_ref(), c)))
        .collect();
    let panel_h = |bars: &[Bar]| 30.0 + bars.len() as f64 * ROW_H + 40.0;
    let height = 40.0 + panels.iter().map(|(_, b)| panel_h(b)).sum::<f64>().max(40.0);
    let mut svg = page(
        height,
        22.0,
        "basalt-init PID1 phase, one bar per step (median of the runs, ",
        accel,
    );
    if panels.is_empty() {
        svg.push_str(&no_boots(60.0));
    }
    let mut y = 40.0;
    for (c, bars) in &panels {
        svg.push_str(&panel(y, c, bars));
        y += panel_h(bars);
    }
    svg.push_str("</svg>\n");
    svg
}

/// One size's bars, from its top edge at `y`.
fn panel(y: f64, c: &Comparison, bars: &[Bar]) -> String {
    let plot_w = WIDTH - LABEL_W - VALUE_W - 20.0;
    let total = c
        .basalt
        .median
        .max(bars.iter().map(|b| b.start + b.len).fold(0.0, f64::max));
    let scale = if total > 0.0 { plot_w / total } else { 0.0 };
    let (b, bb) = (fmt_ms(c.basalt.median), fmt_ms(c.busybox.median));
    let heading = format!("{} MiB image: PID1 phase {b} ms (busybox {bb} ms)", c.mib);
    let mut svg = text(10.0, y + 16.0, "start", " font-weight=\"bold\"", &heading);
    let top = y + 30.0;
    for (i, b) in bars.iter().enumerate() {
        let ry = top + i as f64 * ROW_H;
        svg.push_str(&text(LABEL_W - 8.0, ry + 14.0, "end", "", &b.label));
        let (x, w) = (LABEL_W + b.start * scale, (b.len * scale).max(1.0));
        let fill = if b.edge { EDGE_BAR } else { BAR };
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"/>\n",
            r1(x),
            r1(ry + 3.0),
            r1(w),
            r1(ROW_H - 6.0)
        ));
        svg.push_str(&text(
            x + w + 6.0,
            ry + 14.0,
            "start",
            "",
            &format!("{} ms", fmt_ms(b.len)),
        ));
    }
    let axis_y = top + bars.len() as f64 * ROW_H + 4.0;
    svg.push_str(&line(LABEL_W, axis_y, LABEL_W + plot_w, axis_y, AXIS));
    let step = nice_step(total, 6);
    for t in ticks(total, step) {
        let x = LABEL_W + t * scale;
        svg.push_str(&line(x, axis_y, x, axis_y + 4.0, AXIS));
        svg.push_str(&text(x, axis_y + 17.0, "middle", "", &tick_label(t, step)));
    }
    let note = "ms after the kernel's \"Run /init\"";
    svg.push_str(&text(LABEL_W + plot_w, axis_y + 32.0, "end", "", note));
    svg
}

fn header(height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{h}\" viewBox=\"0 0 {WIDTH} {h}\" {FONT}>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        h = r1(height)
    )
}

/// One series of the scaling chart: (image MiB, median, min, max) in ms.
pub type Series = Vec<(f64, f64, f64, f64)>;

pub fn scaling_series(a: &Analysis) -> (Series, Series) {
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    let points = &a.scaling.points;
    let phase = points
        .iter()
        .map(|p| (mib(p.image_bytes), p.phase.median, p.phase.min, p.phase.max))
        .collect();
    let verify = points
        .iter()
        .filter_map(|p| Some((mib(p.image_bytes), p.verify?.median, p.verify?.min, p.verify?.max)));
    (phase, verify.collect())
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
    let mut svg = page(height, 24.0, "basalt-init PID1 phase against root image size (", accel);
    if phase.is_empty() {
        svg.push_str(&no_boots(height / 2.0));
        svg.push_str("</svg>\n");
        return svg;
    }
    let max_x = phase.iter().map(|p| p.0).fold(0.0, f64::max);
    let max_y = phase.iter().chain(&verify).map(|p| p.3).fold(0.0, f64::max);
    let (step_x, step_y) = (nice_step(max_x, 8), nice_step(max_y, 6));
    let (span_x, span_y) = ((max_x / step_x).ceil() * step_x, (max_y / step_y).ceil() * step_y);
    let plot = Plot {
        left: 80.0,
        right: WIDTH - 30.0,
        top: 50.0,
        bottom: height - 60.0,
        span_x,
        span_y,
    };
    svg.push_str(&axes(&plot, step_x, step_y));
    for (series, color, name) in [(&phase, BAR, "PID1 phase"), (&verify, SECOND, "verify-image step")] {
        if !series.is_empty() {
            let legend_y = plot.top + if name == "PID1 phase" { 10.0 } else { 28.0 };
            svg.push_str(&plot_series(&plot, series, color, name, legend_y));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// The grid, the axes, their ticks and labels.
fn axes(p: &Plot, step_x: f64, step_y: f64) -> String {
    let mut svg = String::new();
    for t in ticks(p.span_y, step_y) {
        svg.push_str(&line(p.left, p.y(t), p.right, p.y(t), "stroke=\"#ddd\""));
        svg.push_str(&text(p.left - 6.0, p.y(t) + 4.0, "end", "", &tick_label(t, step_y)));
    }
    for t in ticks(p.span_x, step_x) {
        svg.push_str(&line(p.x(t), p.bottom, p.x(t), p.bottom + 4.0, AXIS));
        svg.push_str(&text(p.x(t), p.bottom + 18.0, "middle", "", &tick_label(t, step_x)));
    }
    svg.push_str(&line(p.left, p.bottom, p.right, p.bottom, AXIS));
    svg.push_str(&line(p.left, p.top, p.left, p.bottom, AXIS));
    svg.push_str(&text(
        (p.left + p.right) / 2.0,
        p.bottom + 40.0,
        "middle",
        "",
        "root image size (MiB)",
    ));
    let mid = r1((p.top + p.bottom) / 2.0);
    svg.push_str(&format!(
        "<text x=\"20\" y=\"{mid}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {mid})\">ms</text>\n"
    ));
    svg
}

/// One series: the line through the medians, a min–max bar and a dot per
/// size, and its legend entry at `legend_y`.
fn plot_series(p: &Plot, series: &Series, color: &str, name: &str, legend_y: f64) -> String {
    let points: Vec<String> = series
        .iter()
        .map(|s| format!("{},{}", r1(p.x(s.0)), r1(p.y(s.1))))
        .collect();
    let mut svg = format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
        points.join(" ")
    );
    for s in series {
        svg.push_str(&line(
            p.x(s.0),
            p.y(s.2),
            p.x(s.0),
            p.y(s.3),
            &format!("stroke=\"{color}\""),
        ));
        svg.push_str(&format!(
            "<circle cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{color}\"/>\n",
            r1(p.x(s.0)),
            r1(p.y(s.1))
        ));
    }
    let lx = p.left + 20.0;
    let style = format!("stroke=\"{color}\" stroke-width=\"2\"");
    svg.push_str(&line(lx, legend_y, lx + 24.0, legend_y, &style));
    svg.push_str(&text(
        lx + 30.0,
        legend_y + 4.0,
        "start",
        "",
        &format!("{name} (median; bars: min–max)"),
    ));
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{analyse, tests_support::sample_raw};

    #[test]
    fn nice_steps() {
        let cases: &[(f64, usize, f64)] = &[
            (1933.0, 6, 500.0),
            (28400.0, 6, 5000.0),
            (1024.0, 8, 200.0),
            (10.0, 5, 2.0),
            (0.0, 6, 1.0),
            (7.0, 0, 1.0),
        ];
        for &(max, ticks, want) in cases {
            assert_eq!(nice_step(max, ticks), want, "{max} / {ticks}");
        }
    }

    #[test]
    fn tick_labels() {
        let cases: &[(f64, f64, &str)] = &[
            (0.0, 500.0, "0"),
            (1500.0, 500.0, "1500"),
            (0.4, 0.2, "0.4"),
            (0.0, 0.5, "0.0"),
        ];
        for &(t, step, want) in cases {
            assert_eq!(tick_label(t, step), want);
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    #[test]
    fn timeline_has_a_bar_per_step_plus_the_edges() {
        let a = analyse(&sample_raw());
        let bars = timeline_bars(&a.steps, a.edges.as_ref(), &a.comparisons[0]);
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "exec /init → main",
                "manifest",
                "modules",
                "verify-image",
                "spawn → handoff running"
            ]
        );
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
