// A line chart in SVG, drawn from [time, value] series; no library needed for this much.

import { h, svg } from "./dom.js";

const WIDTH = 480;
const HEIGHT = 160;
const PAD = { left: 36, right: 8, top: 8, bottom: 20 };

/** series: [{label, points: [[ms, value], ...]}]; spanMs: how far back the x axis goes. */
export function lineChart(title, series, spanMs, unit) {
  const now = Date.now();
  const top = Math.max(1, ...series.flatMap((s) => s.points.map(([, v]) => v)));
  const x = (t) => PAD.left + ((t - (now - spanMs)) / spanMs) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - (v / top) * (HEIGHT - PAD.top - PAD.bottom);
  const latest = series.map((s) => `${s.label} ${format(s.points.at(-1)?.[1] ?? 0)} ${unit}`).join(", ");
  const drawing = svg("svg", {
    class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": `${title}: now ${latest}`,
  },
  svg("line", { class: "axis", x1: PAD.left, y1: y(0), x2: WIDTH - PAD.right, y2: y(0) }),
  svg("line", { class: "axis", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: y(0) }),
  label(4, PAD.top + 10, format(top)),
  label(4, y(0), "0"),
  label(PAD.left, HEIGHT - 4, spanMs >= 120_000 ? `${Math.round(spanMs / 60000)} min ago` : `${Math.round(spanMs / 1000)} s ago`),
  label(WIDTH - PAD.right - 24, HEIGHT - 4, "now"),
  ...series.map((s, i) => svg("polyline", {
    class: `s${i % 4}`,
    points: s.points.filter(([t]) => t >= now - spanMs).map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
  })));
  return h("figure", {},
    drawing,
    h("figcaption", {}, title, h("ul", { class: "legend" },
      series.map((s, i) => h("li", { class: `k${i % 4}` }, `— ${s.label}: ${format(s.points.at(-1)?.[1] ?? 0)} ${unit}`)))));
}

function label(x, y, text) {
  const element = svg("text", { x, y });
  element.textContent = text;
  return element;
}

const format = (v) => (v >= 10 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1));
