// The dashboard's entry: asks for a token where the API wants one, then shows the view the
// address names (#/jobs, #/jobs/<id>, #/sheep, #/overview, #/submit).

import { ApiError, Unauthorized, forgetToken, getJson, setToken, token } from "./api.js";
import { h, message, replace } from "./dom.js";
import { FleetWatch } from "./fleet.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { LiveEvents } from "./live.js";
import { EventRates, overviewView } from "./overview.js";
import { sheepView } from "./sheep.js";
import { submitView } from "./submit.js";

const main = document.getElementById("main");
const forget = document.getElementById("forget");
const live = new LiveEvents(document.getElementById("live"), () => askForToken("The token was refused."));
const fleet = new FleetWatch();
const rates = new EventRates(live);
let leave = () => {};

const VIEWS = {
  jobs: jobsView,
  sheep: sheepView,
  overview: overviewView,
  submit: submitView,
};

function route() {
  leave();
  const [path, search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [view, ...rest] = path.split("/");
  const context = { live, fleet, rates, query: new URLSearchParams(search) };
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === (view || "jobs")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "jobs" && rest.length) {
    document.title = `Job ${decodeURIComponent(rest.join("/"))} · Shepherd`;
    leave = jobView(main, { ...context, jobId: decodeURIComponent(rest.join("/")) });
  } else {
    const name = VIEWS[view] ? view : "jobs";
    document.title = `${name[0].toUpperCase()}${name.slice(1)} · Shepherd`;
    leave = VIEWS[name](main, context);
  }
  main.focus({ preventScroll: true });
}

/** The token form; `problem` says why it is shown again. */
function askForToken(problem) {
  leave();
  leave = () => {};
  live.stop();
  fleet.stop();
  const input = h("input", { name: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "token-help token-problem" });
  const form = h("form", { class: "stack", "aria-labelledby": "token-h", onsubmit: async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    await begin();
  } },
  h("label", {}, "Bearer token", input),
  h("p", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Open the dashboard")));
  replace(main, h("h1", { id: "token-h" }, "Sign in"),
    h("p", { id: "token-help", class: "muted" }, "This gateway asks for a token (shepherd token mints one). It is kept in this tab only, until you close it."),
    h("p", { id: "token-problem", class: "error", role: "alert" }, problem || ""),
    form);
  input.focus();
}

async function begin() {
  try {
    await getJson("/jobs", { limit: 1 });
  } catch (error) {
    if (error instanceof Unauthorized) {
      const refused = token() !== null;
      forgetToken();
      askForToken(refused ? `The token was refused: ${error.message}` : "");
      return;
    }
    if (error instanceof ApiError && error.status === 403) {
      forgetToken();
      askForToken(`This token cannot read jobs: ${error.message}`);
      return;
    }
    replace(main, h("h1", {}, "Shepherd"), h("p", { class: "error", role: "alert" }, `The gateway cannot answer: ${message(error)}`));
    return;
  }
  forget.hidden = token() === null;
  live.start();
  fleet.start();
  if (!location.hash.startsWith("#/")) history.replaceState(null, "", "#/jobs");
  route();
}

forget.addEventListener("click", () => {
  forgetToken();
  forget.hidden = true;
  askForToken("");
});
window.addEventListener("hashchange", () => {
  // Views are #/...; other fragments (the skip link's #main) stay in the page.
  if (live.controller && location.hash.startsWith("#/")) route();
});
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof Unauthorized) askForToken("The token was refused.");
});
begin();
