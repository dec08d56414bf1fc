//! The animated page: every function's contour plot with the paths drawn step by step, a
//! slider and a play button. Self-contained: the SVGs are inline and the script is a few lines
//! of plain JavaScript; nothing is fetched.

use std::fmt::Write as _;

use super::{plot, Args, Figure};
use crate::compare::escape;
use crate::draw::color_hex;

/// The page for `figures`.
pub(crate) fn page(figures: &[Figure], args: &Args) -> Result<String, String> {
    let mut body = String::new();
    let mut data = Vec::new();
    let mut longest = 0;
    for (k, fig) in figures.iter().enumerate() {
        let drawn = plot::svg(fig, false)?;
        let [left, top, right, bottom] = drawn.area;
        let mut overlay = format!(
            "<defs><clipPath id=\"clip-{k}\"><rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\"/></clipPath></defs>\
             <g clip-path=\"url(#clip-{k})\" fill=\"none\" stroke-width=\"2\" stroke-linejoin=\"round\">",
            right - left,
            bottom - top
        );
        let mut paths = Vec::new();
        for (i, pixels) in drawn.pixels.iter().enumerate() {
            let c = color_hex(i);
            let _ = write!(
                overlay,
                "<polyline id=\"p-{k}-{i}\" stroke=\"{c}\" points=\"\"/>\
                 <circle id=\"c-{k}-{i}\" r=\"4\" fill=\"{c}\" cx=\"-10\" cy=\"-10\"/>"
            );
            longest = longest.max(pixels.len().saturating_sub(1));
            let flat: Vec<i32> = pixels.iter().flat_map(|&(x, y)| [x, y]).collect();
            paths.push(flat);
        }
        overlay.push_str("</g>");
        let svg = match drawn.svg.rfind("</svg>") {
            Some(at) => format!("{}{overlay}{}", &drawn.svg[..at], &drawn.svg[at..]),
            None => return Err("the chart is not an SVG".into()),
        };
        data.push(paths);
        let _ = writeln!(
            body,
            "<figure>{svg}<figcaption>{}</figcaption></figure>",
            escape(&caption(fig))
        );
    }
    let data = serde_json::to_string(&data).map_err(|e| e.to_string())?;
    let mut settings = format!("at most {} steps", args.steps);
    if let Some(s) = &args.schedule {
        let _ = write!(settings, ", schedule {s}");
    }
    if args.noise.over(None).is_some() {
        let _ = write!(settings, ", gradient noise (seed {})", args.seed);
    }
    Ok(format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>downhill trajectories</title>
<style>
body {{ font-family: "DejaVu Sans", Verdana, sans-serif; margin: 24px auto; max-width: 960px; color: #222; }}
figure {{ margin: 24px 0; }}
figure svg {{ max-width: 100%; height: auto; }}
figcaption {{ color: #555; font-size: 14px; }}
#controls {{ position: sticky; top: 0; background: #fff; padding: 10px 0; border-bottom: 1px solid #ddd; display: flex; gap: 12px; align-items: center; }}
#step {{ flex: 1; }}
button {{ font-size: 15px; padding: 4px 14px; }}
</style>
</head>
<body>
<h1>Optimizer trajectories</h1>
<p>Every optimizer starts from the black dot; the red crosses are the global minima. Drag the
slider or press play to watch the paths grow step by step ({settings}).</p>
<div id="controls"><button id="play">play</button>
<input id="step" type="range" min="0" max="{longest}" value="{longest}">
<span>step <output id="at">{longest}</output> / {longest}</span></div>
{body}
<script>
const DATA = {data};
const slider = document.getElementById("step");
const at = document.getElementById("at");
const play = document.getElementById("play");
function show(step) {{
  DATA.forEach((paths, k) => paths.forEach((flat, i) => {{
    const n = Math.min(step + 1, flat.length / 2);
    const pts = [];
    for (let j = 0; j < n; j++) pts.push(flat[2 * j] + "," + flat[2 * j + 1]);
    document.getElementById("p-" + k + "-" + i).setAttribute("points", pts.join(" "));
    const c = document.getElementById("c-" + k + "-" + i);
    if (n > 0) {{ c.setAttribute("cx", flat[2 * n - 2]); c.setAttribute("cy", flat[2 * n - 1]); }}
  }}));
  at.textContent = step;
}}
let timer = null;
function stop() {{ clearInterval(timer); timer = null; play.textContent = "play"; }}
play.addEventListener("click", () => {{
  if (timer) {{ stop(); return; }}
  if (+slider.value >= +slider.max) slider.value = 0;
  play.textContent = "pause";
  const stride = Math.max(1, Math.ceil(+slider.max / 400));
  timer = setInterval(() => {{
    const next = Math.min(+slider.value + stride, +slider.max + 1);
    if (next > +slider.max) {{ stop(); return; }}
    slider.value = next;
    show(next);
  }}, 30);
}});
slider.addEventListener("input", () => {{ stop(); show(+slider.value); }});
show(+slider.value);
</script>
</body>
</html>
"#
    ))
}

/// One line under a figure: where each optimizer ended.
fn caption(fig: &Figure) -> String {
    let ends: Vec<String> = fig
        .traces
        .iter()
        .map(|t| match &t.walk {
            Ok(w) => {
                let how = match w.end {
                    downhill::test_functions::WalkEnd::Reached => {
                        format!("reached a minimum in {} steps", w.steps())
                    }
                    downhill::test_functions::WalkEnd::OutOfSteps => {
                        match fig.function.distance_to_minimum(w.last()) {
                            Some(d) => format!("{d:.2} from a minimum after {} steps", w.steps()),
                            None => format!(
                                "at f = {:.3} after {} steps",
                                fig.function.value(w.last()),
                                w.steps()
                            ),
                        }
                    }
                    downhill::test_functions::WalkEnd::Escaped => {
                        format!("left the plot after {} steps", w.steps())
                    }
                };
                format!("{} {how}", t.label)
            }
            Err(e) => format!("{} stopped: {e}", t.label),
        })
        .collect();
    format!("{}: {}.", fig.function.name(), ends.join("; "))
}
