// One job: status, timeline, progress, error, usage, inputs and outputs, logs (followed live
// while it runs), webhook deliveries, and Cancel.

import { ApiError, Unauthorized, call, download, getJson, serverEvents } from "./api.js";
import {
  TERMINAL, between, bytes, facts, h, message, modelName, movesOn, replace, seconds,
  stateBadge, timeElement,
} from "./dom.js";

const OUTPUT_SHOWN_BYTES = 64 * 1024;
const FOLLOW_AGAIN_MS = 3000; // after a log stream ends without the job's end
const HOOKS_AGAIN_MS = [2000, 8000]; // deliveries usually follow the final event

export function jobView(main, { live, jobId }) {
  const path = `/jobs/${encodeURIComponent(jobId)}`;
  const aborts = new AbortController();
  let status = null;
  let following = false;
  let filesAsked = 0; // the latest loadFiles() call is the one shown
  const early = []; // events that came before the first status
  const timers = [];
  /** Resolves after `ms`, or at once when the view is left. */
  const pause = (ms) => new Promise((resolve) => {
    const early = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      aborts.signal.removeEventListener("abort", early);
      resolve();
    }, ms);
    aborts.signal.addEventListener("abort", early, { once: true });
  });

  const heading = h("h1", {}, "Job ", h("code", {}, jobId));
  const summary = h("section", { "aria-label": "Status" });
  const actions = h("p", { class: "actions" });
  const feedback = h("p", { role: "status" });
  const timeline = h("section", { "aria-labelledby": "timeline-h" });
  const usage = h("section", { "aria-labelledby": "usage-h" });
  const files = h("section", { "aria-labelledby": "files-h" });
  const logs = h("section", { "aria-labelledby": "logs-h" });
  const hooks = h("section", { "aria-labelledby": "hooks-h" });
  replace(main, heading, summary, actions, feedback, timeline, usage, files, logs, hooks);

  function render() {
    const s = status;
    replace(summary, facts([
      ["State", h("span", {}, stateBadge(s.state))],
      ["Model", modelName(s.model)],
      ["Sheep", s.sheep_id ? h("a", { href: `#/jobs?sheep=${encodeURIComponent(s.sheep_id)}` }, s.sheep_id) : ""],
      ["Attempt", String(s.attempt)],
      ["Progress", s.progress ? h("span", {},
        h("progress", { max: "1", value: String(s.progress.fraction), "aria-label": "Progress" }),
        ` ${Math.round(s.progress.fraction * 100)}% ${s.progress.message || ""}`) : ""],
      ["Waiting for", s.missing_inputs?.length ? s.missing_inputs.join(", ") : ""],
    ]), s.error ? errorBlock(s.error) : null);
    replace(actions, TERMINAL.has(s.state) ? null
      : h("button", { type: "button", class: "danger", onclick: cancel }, "Cancel job"));
    renderTimeline(s);
    renderUsage(s);
  }

  function errorBlock(error) {
    return h("div", { class: "panel", role: "group", "aria-label": "Error" },
      h("p", { class: "error" }, h("strong", {}, error.type), `: ${error.message}`),
      error.traceback ? h("pre", { "aria-label": "Traceback" }, error.traceback) : null);
  }

  function renderTimeline(s) {
    const ended = TERMINAL.has(s.state) ? s.state : "ended";
    const stages = [
      ["accepted", s.accepted_at, between(s.accepted_at, s.enqueued_at), "until queued"],
      ["queued", s.enqueued_at, between(s.enqueued_at, s.started_at), "waiting for a sheep"],
      ["running", s.started_at, between(s.started_at, s.finished_at), "on the runner"],
      [ended, s.finished_at, between(s.accepted_at, s.finished_at), "in all"],
    ];
    replace(timeline, h("h2", { id: "timeline-h" }, "Timeline"),
      h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Stage"), h("th", { scope: "col" }, "At"),
          h("th", { scope: "col", class: "num" }, "Took"), h("th", { scope: "col" }, ""))),
        h("tbody", {}, stages.map(([stage, at, took, what]) => h("tr", { "data-stage": stage },
          h("th", { scope: "row" }, stage),
          h("td", {}, at ? timeElement(at) : h("span", { class: "muted" }, "not yet")),
          h("td", { class: "num" }, took === null ? "" : seconds(took)),
          h("td", { class: "muted" }, took === null ? "" : what)))))));
  }

  function renderUsage(s) {
    const u = s.usage;
    replace(usage, h("h2", { id: "usage-h" }, "Usage"), u ? facts([
      ["Wall", seconds(u.wall_seconds)],
      ["CPU user", seconds(u.cpu_user_seconds)],
      ["CPU system", seconds(u.cpu_system_seconds)],
      ["Peak memory", bytes(u.max_rss_bytes)],
      ["GPU time", seconds(u.gpu_seconds)],
      ["Peak GPU memory", bytes(u.max_gpu_memory_bytes)],
      ["Inputs", bytes(u.input_bytes)],
      ["Outputs", bytes(u.output_bytes)],
    ]) : h("p", { class: "muted" }, TERMINAL.has(s.state) ? "None recorded." : "Once it ends."));
  }

  function fileTable(label, listing, base) {
    if (!listing.files.length) return h("p", { class: "muted" }, `No ${label.toLowerCase()}.`);
    return h("div", { class: "table-wrap" }, h("table", {},
      h("caption", {}, label),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "File"),
        h("th", { scope: "col", class: "num" }, "Size"), h("th", { scope: "col" }, ""))),
      h("tbody", {}, listing.files.map((file) => h("tr", {},
        h("th", { scope: "row" }, h("code", {}, file.name)),
        h("td", { class: "num" }, bytes(file.size)),
        h("td", {}, h("button", {
          type: "button",
          "aria-label": `Download ${file.name}`,
          onclick: () => download(`${base}/${file.name.split("/").map(encodeURIComponent).join("/")}`,
            file.name.split("/").pop()).catch(say),
        }, "Download")))))));
  }

  async function loadFiles() {
    const asked = ++filesAsked;
    const parts = [h("h2", { id: "files-h" }, "Inputs and outputs")];
    try {
      parts.push(fileTable("Inputs", await getJson(`${path}/input`, { list: "true" }), `${path}/input`));
    } catch (error) {
      parts.push(h("p", { class: "error" }, `Inputs: ${message(error)}`));
    }
    if (status.state === "done") {
      try {
        const outputs = await getJson(`${path}/result`, { list: "true" });
        parts.push(fileTable("Outputs", outputs, `${path}/result`));
        const main = outputs.files.find((f) => f.name === "output.json");
        if (main && main.size <= OUTPUT_SHOWN_BYTES) {
          const text = await (await call("GET", `${path}/result/output.json`)).text();
          parts.push(h("h3", {}, "output.json"), h("pre", { "aria-label": "Output" }, pretty(text)));
        }
      } catch (error) {
        parts.push(h("p", { class: "error" }, `Outputs: ${message(error)}`));
      }
    } else if (!TERMINAL.has(status.state)) {
      parts.push(h("p", { class: "muted" }, "Outputs once it is done."));
    }
    if (asked === filesAsked) replace(files, parts);
  }

  function logBlocks(stdout, stderr) {
    return [
      h("h3", {}, "stdout"), h("pre", { "aria-label": "stdout", "data-log": "stdout" }, stdout || ""),
      h("h3", {}, "stderr"), h("pre", { "aria-label": "stderr", "data-log": "stderr" }, stderr || ""),
    ];
  }

  async function loadLogs() {
    const title = h("h2", { id: "logs-h" }, "Logs");
    if (!TERMINAL.has(status.state)) return followLogs(title);
    try {
      const stored = await getJson(`${path}/logs`);
      replace(logs, title, logBlocks(stored.stdout, stored.stderr),
        stored.truncated?.length ? h("p", { class: "muted" }, `Cut to their end: ${stored.truncated.join(", ")}`) : null);
    } catch (error) {
      replace(logs, title, h("p", { class: "muted" }, `No logs: ${message(error)}`));
    }
  }

  async function followLogs(title) {
    if (following) return;
    following = true;
    replace(logs, title, h("p", { class: "muted" }, "Followed live while the job runs."), logBlocks("", ""));
    const out = { stdout: logs.querySelector("[data-log=stdout]"), stderr: logs.querySelector("[data-log=stderr]") };
    const attempts = {};
    let lastId = null;
    let ended = false;
    // A stream that drops (the gateway restarts, RabbitMQ is away) resumes after the last
    // piece shown, a few seconds later, for as long as the job runs.
    while (!ended && !aborts.signal.aborted && !TERMINAL.has(status.state)) {
      try {
        const pieces = serverEvents(`${path}/logs`, {
          params: { follow: "true" }, lastEventId: lastId, signal: aborts.signal,
        });
        for await (const piece of pieces) {
          if (piece.id) lastId = piece.id;
          if (piece.event === "end") {
            ended = true;
            break;
          }
          if (piece.event !== "log") continue;
          const { stream, text, attempt } = JSON.parse(piece.data);
          if (!out[stream]) continue;
          if (attempts[stream] !== undefined && attempts[stream] !== attempt) {
            out[stream].append(`--- attempt ${attempt} ---\n`);
          }
          attempts[stream] = attempt;
          out[stream].append(text);
        }
      } catch (error) {
        if (aborts.signal.aborted) break;
        if (error instanceof ApiError || error instanceof Unauthorized) { // no retry changes it
          logs.append(h("p", { class: "error" }, `Log stream: ${message(error)}`));
          break;
        }
        console.warn("the log stream failed; following again", error);
      }
      if (!ended) await pause(FOLLOW_AGAIN_MS);
    }
    following = false;
    if (ended && !aborts.signal.aborted) await refresh();
  }

  async function loadHooks() {
    const parts = [h("h2", { id: "hooks-h" }, "Webhook deliveries")];
    try {
      const found = await getJson(`${path}/webhooks`);
      parts.push(found.attempts.length ? h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Event", "Receiver", "Attempt", "Outcome", "At", "Detail"]
          .map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, found.attempts.map((a) => h("tr", {},
          h("td", {}, a.event_type.replace("io.shepherd.", "")),
          h("td", {}, a.subscription || "callback", h("br"), h("span", { class: "muted mono" }, a.url)),
          h("td", { class: "num" }, String(a.attempt)),
          h("td", {}, a.outcome), h("td", {}, timeElement(a.at)), h("td", {}, a.detail))))))
        : h("p", { class: "muted" }, "None."));
      if (found.truncated) parts.push(h("p", { class: "muted" }, `Only the latest ${found.attempts.length} attempts.`));
    } catch (error) {
      parts.push(h("p", { class: "error" }, message(error)));
    }
    parts.push(h("button", { type: "button", onclick: loadHooks }, "Refresh deliveries"));
    replace(hooks, parts);
  }

  function say(error) {
    feedback.className = "error";
    feedback.textContent = message(error);
  }

  async function cancel() {
    feedback.className = "";
    feedback.textContent = "Cancelling…";
    try {
      await call("POST", `${path}/cancel`);
      feedback.textContent = "Cancel requested.";
    } catch (error) {
      say(error instanceof ApiError && error.status === 403
        ? `Not allowed: cancelling needs a token with the submit scope (${error.message})`
        : error);
    }
  }

  async function refresh() {
    try {
      const read = await getJson(`${path}/status`);
      const first = status === null;
      if (first || movesOn(read, status)) show(read);
      if (first) for (const { kind, next } of early.splice(0)) onEvent(kind, next);
    } catch (error) {
      replace(summary, h("p", { class: "error" }, message(error)));
    }
  }

  function show(next) {
    const ended = TERMINAL.has(next.state) && !(status && TERMINAL.has(status.state));
    const first = status === null;
    status = next;
    render();
    if (first || ended) {
      loadFiles();
      loadLogs();
      loadHooks();
    } else if (status.state === "running" && !following) {
      loadLogs();
    }
    if (ended && !first) for (const wait of HOOKS_AGAIN_MS) timers.push(setTimeout(loadHooks, wait));
  }

  function onEvent(kind, next) {
    if (movesOn(next, status, kind === "progress")) show(next);
  }

  const unsubscribe = live.subscribe(({ kind, status: next }) => {
    if (!next || next.job_id !== jobId) return;
    if (status === null) early.push({ kind, next });
    else onEvent(kind, next);
  });
  refresh();
  return () => {
    unsubscribe();
    aborts.abort();
    timers.forEach(clearTimeout);
  };
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
