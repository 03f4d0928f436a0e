// Building the page: elements from plain values (text is always text, never HTML) and the
// formats every view shares.

/** h("a", {href: "#/jobs"}, "Jobs"): an element; attributes starting with "on" are listeners. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

export const STATES = ["accepted", "queued", "running", "done", "failed", "cancelled"];
export const TERMINAL = new Set(["done", "failed", "cancelled"]);
const RANK = { accepted: 0, queued: 1, running: 2, done: 3, failed: 3, cancelled: 3 };

/** Whether `status` comes after `shown` in the job's life (a later attempt, a later state). */
export function movesOn(status, shown, progress = false) {
  if (!shown) return true;
  if (status.attempt !== shown.attempt) return status.attempt > shown.attempt;
  if (RANK[status.state] !== RANK[shown.state]) return RANK[status.state] > RANK[shown.state];
  return progress;
}

export const stateBadge = (state) => h("span", { class: `state state-${state}` }, state);

export function when(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  return moment.toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export const timeElement = (iso) => (iso ? h("time", { datetime: iso }, when(iso)) : "");

export function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 90) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  if (value < 5400) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${(value / 3600).toFixed(1)} h`;
}

export const between = (from, to) => (from && to ? (new Date(to) - new Date(from)) / 1000 : null);

export function bytes(value) {
  if (value === null || value === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${unit ? size.toFixed(1) : size} ${units[unit]}`;
}

export const modelName = (model) => (model ? `${model.name}:${model.version}` : "");

/** A <dl> of the pairs whose value is not empty. */
export function facts(pairs) {
  const list = h("dl", { class: "facts" });
  for (const [term, value] of pairs) {
    if (value === "" || value === null || value === undefined) continue;
    list.append(h("dt", {}, term), h("dd", {}, value));
  }
  return list;
}

export function replace(element, ...children) {
  element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

export const message = (error) => (error && error.message) || String(error);
