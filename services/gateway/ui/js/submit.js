// Submit a job from the page (POST /start-job): a model and a JSON payload, for trying things.

import { call } from "./api.js";
import { h, message, replace } from "./dom.js";

export function submitView(main, { fleet }) {
  const models = h("datalist", { id: "known-models" });
  const result = h("p", { role: "status" });
  const form = h("form", { class: "stack", onsubmit: submit, "aria-describedby": "submit-help" },
    h("label", {}, "Model name", h("input", { name: "model", required: true, list: "known-models", autocomplete: "off" })),
    h("label", {}, "Version (optional)", h("input", { name: "version", placeholder: "latest" })),
    h("label", {}, "Payload (JSON)", h("textarea", { name: "payload", spellcheck: "false" }, "{}")),
    h("label", {}, "Priority", h("select", { name: "priority" },
      h("option", { value: "" }, "the model's own"),
      ["high", "normal", "low"].map((p) => h("option", { value: p }, p)))),
    h("label", {}, "Sheep (optional)", h("input", { name: "sheep_id" })),
    h("p", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Submit job")),
    models);
  replace(main, h("h1", {}, "Submit a job"),
    h("p", { id: "submit-help", class: "muted" }, "Runs the model on the payload, as POST /start-job would; needs a token with the submit scope."),
    form, result);

  const unsubscribe = fleet.subscribe((reading) => {
    if (!reading) return;
    const names = new Set(Object.values(reading.fleet.sheep).map((s) => s.model?.name).filter(Boolean));
    replace(models, [...names].sort().map((name) => h("option", { value: name })));
  });

  async function submit(event) {
    event.preventDefault();
    const data = new FormData(form);
    let payload;
    try {
      payload = JSON.parse(String(data.get("payload")));
    } catch (error) {
      result.className = "error";
      result.textContent = `The payload is not JSON: ${message(error)}`;
      form.elements.payload.focus();
      return;
    }
    const model = { name: String(data.get("model")).trim() };
    const version = String(data.get("version")).trim();
    if (version) model.version = version;
    const request = { model, payload };
    if (data.get("priority")) request.priority = data.get("priority");
    const sheep = String(data.get("sheep_id")).trim();
    if (sheep) request.sheep_id = sheep;
    result.className = "";
    result.textContent = "Submitting…";
    try {
      const accepted = await (await call("POST", "/start-job", { json: request })).json();
      replace(result, "Accepted: ", h("a", { href: `#/jobs/${encodeURIComponent(accepted.job_id)}` },
        h("code", {}, accepted.job_id)), ` (${accepted.state})`);
    } catch (error) {
      result.className = "error";
      result.textContent = `Refused: ${message(error)}`;
    }
  }

  return unsubscribe;
}
