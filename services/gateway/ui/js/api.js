// The gateway's API as the dashboard uses it: every call carries the bearer token kept in
// this tab's session storage; errors are thrown with the problem's detail.

const TOKEN_KEY = "shepherd.token";

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export const token = () => sessionStorage.getItem(TOKEN_KEY);
export const setToken = (value) => sessionStorage.setItem(TOKEN_KEY, value);
export const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

function withToken(headers = {}) {
  const all = new Headers(headers);
  const held = token();
  if (held) all.set("Authorization", `Bearer ${held}`);
  return all;
}

export function url(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

async function problem(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

/** fetch() with the token; a 401 throws Unauthorized, any other error status ApiError. */
export async function call(method, path, { params, json, headers: extra = {}, signal } = {}) {
  const headers = withToken(extra);
  const init = { method, headers, signal, cache: "no-store" };
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(json);
  }
  const response = await fetch(url(path, params), init);
  if (response.status === 401) throw new Unauthorized(await problem(response));
  if (!response.ok) throw new ApiError(response.status, await problem(response));
  return response;
}

export const getJson = async (path, params) => (await call("GET", path, { params })).json();

/** Save a file of the API (which needs the token, so no plain link) under its name. */
export async function download(path, name) {
  const blob = await (await call("GET", path)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

/**
 * Server-sent events read through fetch() (EventSource cannot send a bearer token):
 * yields {id, event, data} until the stream ends or `signal` aborts it; `onOpen` is called
 * once the server has answered.
 */
export async function* serverEvents(path, { params, lastEventId, signal, onOpen } = {}) {
  const headers = { Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await call("GET", path, { params, signal, headers });
  if (response.status === 204 || !response.body) return;
  onOpen?.();
  const lines = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [] };
  try {
    for (;;) {
      const { value, done } = await lines.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (end === buffer.length - 1 && buffer[end] === "\r") break; // its \n may come next
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (event.data.length) yield { ...event, data: event.data.join("\n") };
          event = { event: "message", data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(text);
          else if (field === "event") event.event = text;
          else if (field === "id") event.id = text;
        }
      }
    }
  } finally {
    lines.cancel().catch(() => {});
  }
}
