// The sheep view: each sheep's state, model, current job, jobs done, duty cycle, devices.

import { h, message, modelName, replace, timeElement } from "./dom.js";

const percent = (value) => (value === null || value === undefined ? "" : `${Math.round(value * 100)}%`);

function state(sheep) {
  if (!sheep.alive) return h("span", { class: "state state-failed" }, "not heard from");
  if (!sheep.runner_alive) return h("span", { class: "state state-queued" }, "starting runner");
  return sheep.current_job
    ? h("span", { class: "state state-running" }, "busy")
    : h("span", { class: "state state-done" }, "idle");
}

export function sheepView(main, { fleet }) {
  const body = h("tbody");
  const queues = h("section", { "aria-labelledby": "queues-h" });
  const note = h("p", { role: "status", class: "muted" }, "Reading the fleet…");
  replace(main, h("h1", {}, "Sheep"), note,
    h("div", { class: "table-wrap" }, h("table", {},
      h("caption", {}, "Every sheep, as it last announced itself"),
      h("thead", {}, h("tr", {},
        ["Sheep", "State", "Model", "Current job", "Done", "Failed", "Duty cycle", "Devices",
          "Queue", "Last seen"].map((c, i) => h("th", { scope: "col", class: i >= 4 && i <= 6 ? "num" : "" }, c)))),
      body)),
    queues);

  function render(reading, error) {
    if (error) {
      note.className = "error";
      note.textContent = `Cannot read the fleet: ${message(error)}`;
      return;
    }
    const entries = Object.entries(reading.fleet.sheep);
    note.className = "muted";
    note.textContent = `${entries.length} sheep; read ${new Date(reading.at).toLocaleTimeString()}`;
    replace(body, entries.map(([id, s]) => h("tr", { "data-sheep": id },
      h("th", { scope: "row" }, id, s.sheep_class ? h("span", { class: "muted" }, ` (${s.sheep_class})`) : null),
      h("td", {}, state(s)),
      h("td", {}, s.model ? modelName(s.model) : h("span", { class: "muted" }, "none")),
      h("td", {}, s.current_job
        ? h("a", { href: `#/jobs/${encodeURIComponent(s.current_job)}` }, h("code", {}, s.current_job)) : ""),
      h("td", { class: "num" }, String(s.jobs_done)),
      h("td", { class: "num" }, String(s.jobs_failed)),
      h("td", { class: "num" }, percent(fleet.recentDuty(id))),
      h("td", {}, s.devices.length ? s.devices.join(", ") : h("span", { class: "muted" }, "CPU")),
      h("td", {}, s.queue_depth ?? ""),
      h("td", {}, timeElement(s.last_seen)))));
    const fleetNow = reading.fleet;
    replace(queues, h("h2", { id: "queues-h" }, "Waiting"), h("ul", { class: "counts" },
      h("li", {}, `pool: ${fleetNow.pool.queue_depth ?? "?"}`),
      Object.entries(fleetNow.classes || {}).map(([name, c]) => h("li", {}, `class ${name}: ${c.queue_depth ?? "?"}`))));
  }

  return fleet.subscribe(render);
}
