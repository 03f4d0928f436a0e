// The jobs view: the listing (GET /jobs), newest first, filtered and paged, kept current by
// the live events, with the count of jobs in each state (GET /job-counts).

import { getJson } from "./api.js";
import {
  STATES, between, h, message, modelName, movesOn, replace, seconds, stateBadge,
  timeElement,
} from "./dom.js";

const PAGE = 50;
const MOST_ROWS = 1000; // past it, the oldest rows go, and "Older jobs" brings them back
const COUNTS_EVERY_MS = 2000;
const NONE = "No jobs match.";

export function jobsView(main, { live, query }) {
  const filters = {
    state: query.get("state") || "",
    model: query.get("model") || "",
    sheep: query.get("sheep") || "",
  };
  const shown = new Map(); // job id -> {status, row}
  let cursor = null;
  let countsDue = null;
  let loaded = false;
  const early = []; // live events before the first page came: applied after it

  const counts = h("ul", { class: "counts", "aria-label": "Jobs by state" });
  const body = h("tbody");
  const more = h("button", { type: "button", onclick: () => load(false) }, "Older jobs");
  const note = h("p", { class: "muted", role: "status" });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs", onsubmit: apply },
    h("label", {}, "State", h("select", { name: "state" },
      h("option", { value: "" }, "any"),
      STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s)))),
    h("label", {}, "Model", h("input", {
      name: "model", value: filters.model, placeholder: "name or name:version", size: 16,
    })),
    h("label", {}, "Sheep", h("input", { name: "sheep", value: filters.sheep, size: 12 })),
    h("button", { type: "submit" }, "Filter"),
  );
  const table = h("table", {},
    h("caption", {}, "Jobs, newest first; rows change as jobs move on"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Job"),
      h("th", { scope: "col" }, "State"),
      h("th", { scope: "col" }, "Model"),
      h("th", { scope: "col", class: "wide" }, "Sheep"),
      h("th", { scope: "col", class: "num wide" }, "Attempt"),
      h("th", { scope: "col" }, "Accepted"),
      h("th", { scope: "col", class: "num" }, "Took"))),
    body);
  replace(main, h("h1", {}, "Jobs"), counts, form, h("div", { class: "table-wrap" }, table),
    h("p", { class: "actions" }, more), note);

  function apply(event) {
    event.preventDefault();
    const data = new FormData(form);
    const params = new URLSearchParams();
    for (const key of ["state", "model", "sheep"]) {
      const value = String(data.get(key) || "").trim();
      if (value) params.set(key, value);
    }
    const hash = `#/jobs${params.toString() ? `?${params}` : ""}`;
    if (location.hash === hash) load(true);
    else location.hash = hash;
  }

  function matches(status) {
    if (filters.state && status.state !== filters.state) return false;
    if (filters.sheep && status.sheep_id !== filters.sheep) return false;
    if (filters.model) {
      const [name, version] = filters.model.split(":");
      if (status.model.name !== name || (version && status.model.version !== version)) return false;
    }
    return true;
  }

  function row(status) {
    const took = between(status.accepted_at, status.finished_at);
    return h("tr", { "data-job": status.job_id, "data-state": status.state },
      h("th", { scope: "row" }, h("a", { href: `#/jobs/${encodeURIComponent(status.job_id)}` },
        h("code", {}, status.job_id))),
      h("td", {}, stateBadge(status.state),
        status.error ? h("span", { class: "muted" }, ` ${status.error.type}`) : null),
      h("td", {}, modelName(status.model)),
      h("td", { class: "wide" }, status.sheep_id || ""),
      h("td", { class: "num wide" }, String(status.attempt || 1)),
      h("td", {}, timeElement(status.accepted_at)),
      h("td", { class: "num" }, seconds(took)));
  }

  /** Show `status`: in place of its row, else where the order puts it (appended: a page). */
  function put(status, append) {
    const known = shown.get(status.job_id);
    const fresh = row(status);
    if (known) known.row.replaceWith(fresh);
    else if (append) body.append(fresh);
    else body.insertBefore(fresh, firstOlder(status));
    shown.set(status.job_id, { status, row: fresh });
    if (note.textContent === NONE) note.textContent = "";
    if (!append) while (shown.size > MOST_ROWS) dropLast(); // pages are asked for
  }

  function drop(jobId) {
    shown.get(jobId)?.row.remove();
    shown.delete(jobId);
  }

  /** The listing's order: newest accepted first (to the microsecond), then the greater id. */
  function before(a, b) {
    const [ua, ub] = [micros(a.accepted_at), micros(b.accepted_at)];
    return ua === ub ? a.job_id > b.job_id : ua > ub;
  }

  function firstOlder(status) {
    for (const tr of body.children) if (before(status, shown.get(tr.dataset.job).status)) return tr;
    return null;
  }

  /** Whether `status` belongs among the rows loaded: all are, or it is newer than the last. */
  function withinLoaded(status) {
    const last = body.lastElementChild;
    return !cursor || !last || before(status, shown.get(last.dataset.job).status);
  }

  function dropLast() {
    const last = shown.get(body.lastElementChild.dataset.job).status;
    drop(last.job_id);
    cursor = cursorAt(shown.get(body.lastElementChild.dataset.job).status);
    more.hidden = false;
  }

  async function load(first) {
    note.textContent = "";
    if (first) {
      loaded = false;
      cursor = null;
      shown.clear();
      body.replaceChildren();
    }
    try {
      const page = await getJson("/jobs", { ...filters, limit: PAGE, cursor });
      for (const job of page.jobs) if (!shown.has(job.job_id)) put(job, true);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!shown.size) note.textContent = NONE;
    } catch (error) {
      note.textContent = `Cannot list the jobs: ${message(error)}`;
    }
    if (first) {
      loaded = true;
      for (const event of early.splice(0)) onEvent(event);
    }
  }

  async function refreshCounts() {
    countsDue = null;
    try {
      const found = await getJson("/job-counts", { model: filters.model, sheep: filters.sheep });
      replace(counts, STATES.map((state) => h("li", {}, stateBadge(state), ` ${found.counts[state]}`)),
        h("li", { class: "muted" }, `${found.total} in all`));
    } catch (error) {
      replace(counts, h("li", { class: "error" }, `Counts unavailable: ${message(error)}`));
    }
  }

  function countsSoon() {
    countsDue ??= setTimeout(refreshCounts, COUNTS_EVERY_MS);
  }

  function onEvent({ kind, status }) {
    if (!loaded) {
      early.push({ kind, status });
      return;
    }
    const known = shown.get(status.job_id);
    if (known) {
      if (!movesOn(status, known.status, kind === "progress")) return;
      // The listing's acceptance time stays: the first one seen, as the index keeps it.
      if (matches(status)) put({ ...known.status, ...status, accepted_at: known.status.accepted_at }, false);
      else drop(status.job_id); // it left the filter
    } else if (status.accepted_at && matches(status) && withinLoaded(status)) {
      put(status, false);
    }
    if (kind !== "progress") countsSoon();
  }

  const unsubscribe = live.subscribe(({ kind, status }) => {
    if (status) onEvent({ kind, status });
  });

  load(true);
  refreshCounts();
  return () => {
    unsubscribe();
    clearTimeout(countsDue);
  };
}

/** `accepted_at` (RFC 3339, to the microsecond) as whole microseconds since the epoch. */
function micros(iso) {
  const [, whole, fraction = "", zone] = iso.match(/^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$/);
  const seconds = Math.floor(Date.parse(`${whole}${zone || "Z"}`) / 1000);
  return seconds * 1_000_000 + Number(fraction.padEnd(6, "0").slice(0, 6));
}

/** The listing's cursor after `status` (`<accepted µs>.<job_id>`, see GET /jobs). */
const cursorAt = (status) => `${micros(status.accepted_at)}.${status.job_id}`;
