// The overview: jobs per second and queue depths over the last minutes, drawn from what this
// page receives (the live events, the fleet readings), and the count of jobs in each state.

import { lineChart } from "./chart.js";
import { STATES, TERMINAL, h, message, replace, stateBadge } from "./dom.js";

const BUCKET_MS = 5000;
const SPAN_MS = 10 * 60 * 1000;
const MIN_SPAN_MS = 60 * 1000;
const REDRAW_MS = 5000;

/** Counts the job events of the page's live stream in buckets of BUCKET_MS. */
export class EventRates {
  constructor(live) {
    this.buckets = new Map(); // bucket start -> {accepted, done, failed}
    this.since = Date.now();
    live.subscribe(({ kind }) => this.count(kind));
  }

  count(kind) {
    if (kind !== "accepted" && !TERMINAL.has(kind)) return;
    const start = Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS;
    const bucket = this.buckets.get(start) ?? { accepted: 0, done: 0, failed: 0, cancelled: 0 };
    bucket[kind] += 1;
    this.buckets.set(start, bucket);
    for (const key of this.buckets.keys()) if (key < start - SPAN_MS) this.buckets.delete(key);
  }

  /** [time, events a second] of `kinds` for every bucket since the page opened. */
  series(kinds) {
    const points = [];
    const last = Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS - BUCKET_MS; // whole buckets
    for (let t = Math.max(this.since, Date.now() - SPAN_MS) - BUCKET_MS; t <= last; t += BUCKET_MS) {
      const start = Math.floor(t / BUCKET_MS) * BUCKET_MS;
      const bucket = this.buckets.get(start);
      const n = bucket ? kinds.reduce((sum, k) => sum + bucket[k], 0) : 0;
      points.push([start + BUCKET_MS, n / (BUCKET_MS / 1000)]);
    }
    return points;
  }
}

export function overviewView(main, { rates, fleet }) {
  const counts = h("ul", { class: "counts", "aria-label": "Jobs by state" });
  const charts = h("div", { class: "grid" });
  const note = h("p", { class: "muted" }, "Drawn from what this page has received since it opened.");
  replace(main, h("h1", {}, "Overview"), h("h2", {}, "Jobs by state"), counts,
    h("h2", {}, "Recent minutes"), note, charts);

  function draw() {
    // From when the page opened, up to the last ten minutes, and never under one.
    const span = Math.min(SPAN_MS, Math.max(MIN_SPAN_MS, Date.now() - rates.since));
    replace(charts,
      lineChart("Jobs per second", [
        { label: "accepted", points: rates.series(["accepted"]) },
        { label: "done", points: rates.series(["done"]) },
        { label: "failed or cancelled", points: rates.series(["failed", "cancelled"]) },
      ], span, "/s"),
      lineChart("Jobs waiting and running", [
        { label: "queued", points: fleet.counted("queued") },
        { label: "running", points: fleet.counted("running") },
        { label: "ready in RabbitMQ, not yet taken", points: fleet.depths() },
      ], span, "jobs"));
    const reading = fleet.latest;
    if (reading) {
      replace(counts, STATES.map((s) => h("li", { "data-state": s }, stateBadge(s), ` ${reading.counts[s]}`)),
        h("li", { class: "muted" }, `${reading.total} in all`));
    } else if (fleet.error) {
      replace(counts, h("li", { class: "error" }, `Counts unavailable: ${message(fleet.error)}`));
    }
  }

  draw();
  const timer = setInterval(draw, REDRAW_MS);
  const unsubscribe = fleet.subscribe(draw);
  return () => {
    clearInterval(timer);
    unsubscribe();
  };
}
