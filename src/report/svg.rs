//! What the HTML report's charts share: the size of a chart, escaping, round axis ceilings, the
//! y axis with its grid, and tick labels.

use std::fmt::Write as _;

/// Chart size and margins, in SVG user units.
pub(super) const W: f64 = 560.0;
pub(super) const H: f64 = 220.0;
pub(super) const LEFT: f64 = 60.0;
pub(super) const BOTTOM: f64 = 30.0;
pub(super) const TOP: f64 = 10.0;
pub(super) const RIGHT: f64 = 10.0;
/// Escapes text for HTML element content and attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// An upper bound for the y axis: 1, 2 or 5 × a power of ten, at least `max`.
pub(super) fn nice_ceiling(max: f64) -> f64 {
    let max = max.max(0.001);
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * power)
}

/// Five horizontal grid lines from 0 to `y_max`, labelled with their value and `suffix` (e.g.
/// `" ms"`, `"/s"`). `sy` maps a value to its y coordinate.
pub(super) fn y_axis(s: &mut String, y_max: f64, sy: impl Fn(f64) -> f64, suffix: &str) {
    let pw = W - LEFT - RIGHT;
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = sy(v);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}{suffix}</text>",
            LEFT + pw,
            LEFT - 4.0,
            y + 4.0,
            trim(v)
        );
    }
}

/// A tick label without needless decimals.
pub(super) fn trim(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_ceilings_are_round() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(37.0), 50.0);
        assert_eq!(nice_ceiling(500.0), 500.0);
        assert_eq!(trim(12.5), "12.5");
        assert_eq!(trim(250.0), "250");
    }
}
