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

/// Renders one panel per compared size: title, bars, axis.
pub fn timeline(a: &Analysis, accel: &str) -> String {
    let panels: Vec<(&Comparison, Vec<Bar>)> = a
        .comparisons
        .iter()
        .map(|c| (c, timeline_bars(&a.steps, a.edges.as_ref(), c)))
        .collect();
    let panel_h = |bars: &[Bar]| 30.0 + bars.len() as f64 * ROW_H + 40.0;
    let height = 40.0 + panels.iter().map(|(_, b)| panel_h(b)).sum::<f64>().max(40.0);
    let mut svg = header(height);
    svg.push_str(&text(
        WIDTH / 2.0,
        22.0,
        "middle",
        " font-weight=\"bold\"",
        &format!(
            "basalt-init PID1 phase, one bar per step (median of the runs, {})",
            accel.to_uppercase()
        ),
    ));
    if panels.is_empty() {
        svg.push_str(&text(WIDTH / 2.0, 60.0, "middle", "", "no boots were run"));
    }
    let mut y = 40.0;
    let plot_w = WIDTH - LABEL_W - VALUE_W - 20.0;
    for (c, bars) in &panels {
        let total = c
            .basalt
            .median
            .max(bars.iter().map(|b| b.start + b.len).fold(0.0, f64::max));
        let scale = if total > 0.0 { plot_w / total } else { 0.0 };
        svg.push_str(&text(
            10.0,
            y + 16.0,
            "start",
            " font-weight=\"bold\"",
            &format!(
                "{} MiB image: PID1 phase {} ms (busybox {} ms)",
                c.mib,
                fmt_ms(c.basalt.median),
                fmt_ms(c.busybox.median)
            ),
        ));
        let top = y + 30.0;
        for (i, b) in bars.iter().enumerate() {
            let ry = top + i as f64 * ROW_H;
            svg.push_str(&text(LABEL_W - 8.0, ry + 14.0, "end", "", &b.label));
            let w = (b.len * scale).max(1.0);
            svg.push_str(&format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>\n",
                r1(LABEL_W + b.start * scale),
                r1(ry + 3.0),
                r1(w),
                r1(ROW_H - 6.0),
                if b.edge { EDGE_BAR } else { BAR }
            ));
            svg.push_str(&text(
                LABEL_W + b.start * scale + w + 6.0,
                ry + 14.0,
                "start",
                "",
                &format!("{} ms", fmt_ms(b.len)),
            ));
        }
        let axis_y = top + bars.len() as f64 * ROW_H + 4.0;
        svg.push_str(&format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>\n",
            r1(LABEL_W),
            r1(axis_y),
            r1(LABEL_W + plot_w),
            r1(axis_y)
        ));
        let step = nice_step(total, 6);
        let mut t = 0.0;
        while t <= total + 1e-9 {
            let x = LABEL_W + t * scale;
            svg.push_str(&format!(
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>\n",
                r1(x),
                r1(axis_y),
                r1(x),
                r1(axis_y + 4.0)
            ));
            svg.push_str(&text(x, axis_y + 17.0, "middle", "", &tick_label(t, step)));
            t += step;
        }
        svg.push_str(&text(
            LABEL_W + plot_w,
            axis_y + 32.0,
            "end",
            "",
            "ms after the kernel's \"Run /init\"",
        ));
        y += panel_h(bars);
    }
    svg.push_str("</svg>\n");
    svg
}

fn header(height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" {FONT}>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        WIDTH,
        r1(height),
        WIDTH,
        r1(height)
    )
}

/// One series of the scaling chart: (image MiB, median, min, max) in ms.
pub type Series = Vec<(f64, f64, f64, f64)>;

pub fn scaling_series(a: &Analysis) -> (Series, Series) {
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    let phase = a
        .scaling
        .points
        .iter()
        .map(|p| (mib(p.image_bytes), p.phase.median, p.phase.min, p.phase.max))
        .collect();
    let verify = a
        .scaling
        .points
        .iter()
        .filter_map(|p| {
            let v = p.verify?;
            Some((mib(p.image_bytes), v.median, v.min, v.max))
        })
        .collect();
    (phase, verify)
}

/// The PID1 phase and verify-image against image size, with min–max bars.
pub fn scaling(a: &Analysis, accel: &str) -> String {
    let (phase, verify) = scaling_series(a);
    let height = 420.0;
    let (left, right, top, bottom) = (80.0, WIDTH - 30.0, 50.0, height - 60.0);
    let max_x = phase.iter().map(|p| p.0).fold(0.0, f64::max);
    let max_y = phase.iter().chain(&verify).map(|p| p.3).fold(0.0, f64::max);
    let (step_x, step_y) = (nice_step(max_x, 8), nice_step(max_y, 6));
    let (span_x, span_y) = ((max_x / step_x).ceil() * step_x, (max_y / step_y).ceil() * step_y);
    let sx = |x: f64| left + if span_x > 0.0 { x / span_x * (right - left) } else { 0.0 };
    let sy = |y: f64| bottom - if span_y > 0.0 { y / span_y * (bottom - top) } else { 0.0 };

    let mut svg = header(height);
    svg.push_str(&text(
        WIDTH / 2.0,
        24.0,
        "middle",
        " font-weight=\"bold\"",
        &format!(
            "basalt-init PID1 phase against root image size ({})",
            accel.to_uppercase()
        ),
    ));
    if phase.is_empty() {
        svg.push_str(&text(WIDTH / 2.0, height / 2.0, "middle", "", "no boots were run"));
        svg.push_str("</svg>\n");
        return svg;
    }
    // Grid and axes.
    let mut t = 0.0;
    while t <= span_y + 1e-9 {
        svg.push_str(&format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
            r1(left),
            r1(sy(t)),
            r1(right),
            r1(sy(t))
        ));
        svg.push_str(&text(left - 6.0, sy(t) + 4.0, "end", "", &tick_label(t, step_y)));
        t += step_y;
    }
    let mut t = 0.0;
    while t <= span_x + 1e-9 {
        svg.push_str(&format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>\n",
            r1(sx(t)),
            r1(bottom),
            r1(sx(t)),
            r1(bottom + 4.0)
        ));
        svg.push_str(&text(sx(t), bottom + 18.0, "middle", "", &tick_label(t, step_x)));
        t += step_x;
    }
    svg.push_str(&format!(
        "<line x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#333\"/>\n<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\" stroke=\"#333\"/>\n",
        l = r1(left),
        r = r1(right),
        t = r1(top),
        b = r1(bottom)
    ));
    svg.push_str(&text(
        (left + right) / 2.0,
        bottom + 40.0,
        "middle",
        "",
        "root image size (MiB)",
    ));
    svg.push_str(&format!(
        "<text x=\"20\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {})\">ms</text>\n",
        r1((top + bottom) / 2.0),
        r1((top + bottom) / 2.0)
    ));
    for (series, color, name) in [(&phase, BAR, "PID1 phase"), (&verify, SECOND, "verify-image step")] {
        if series.is_empty() {
            continue;
        }
        let points: Vec<String> = series
            .iter()
            .map(|p| format!("{},{}", r1(sx(p.0)), r1(sy(p.1))))
            .collect();
        svg.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
            points.join(" ")
        ));
        for p in series.iter() {
            svg.push_str(&format!(
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"{color}\"/>\n<circle cx=\"{x}\" cy=\"{}\" r=\"3.5\" fill=\"{color}\"/>\n",
                r1(sy(p.2)),
                r1(sy(p.3)),
                r1(sy(p.1)),
                x = r1(sx(p.0)),
            ));
        }
        let (lx, ly) = (left + 20.0, top + if name == "PID1 phase" { 10.0 } else { 28.0 });
        svg.push_str(&format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
            r1(lx),
            r1(ly),
            r1(lx + 24.0),
            r1(ly)
        ));
        svg.push_str(&text(
            lx + 30.0,
            ly + 4.0,
            "start",
            "",
            &format!("{name} (median; bars: min–max)"),
        ));
    }
    svg.push_str("</svg>\n");
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
