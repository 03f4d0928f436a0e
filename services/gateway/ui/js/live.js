// One stream of every job's events (GET /events) for the whole page: views subscribe to it;
// a dropped stream resumes after the last event seen (Last-Event-ID), so none is missed.

import { Unauthorized, serverEvents } from "./api.js";

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;

export class LiveEvents {
  constructor(indicator, onUnauthorized) {
    this.indicator = indicator;
    this.onUnauthorized = onUnauthorized;
    this.listeners = new Set();
    this.lastEventId = null;
    this.controller = null;
  }

  /** fn({kind, status, event}) for each job event; returns the unsubscribe function. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start() {
    if (this.controller) return;
    this.controller = new AbortController();
    this.run(this.controller.signal);
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
    this.show("stopped", false);
  }

  show(text, on) {
    this.indicator.textContent = text;
    this.indicator.classList.toggle("on", on);
  }

  async run(signal) {
    let wait = RETRY_MIN_MS;
    while (!signal.aborted) {
      try {
        const stream = serverEvents("/events", {
          lastEventId: this.lastEventId, signal, onOpen: () => this.show("live", true),
        });
        for await (const message of stream) {
          wait = RETRY_MIN_MS;
          if (message.id) this.lastEventId = message.id;
          this.dispatch(message);
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof Unauthorized) {
          this.onUnauthorized();
          return;
        }
        console.warn("the event stream failed; reconnecting", error);
      }
      if (signal.aborted) return;
      this.show("reconnecting", false);
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(RETRY_MAX_MS, wait * 2);
    }
  }

  dispatch(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    const kind = message.event.replace(/^job\./, "");
    // A job's status, for every kind but "rejected" (whose data is the refusal).
    const status = kind !== "rejected" && event?.data?.job_id && event.data.state ? event.data : null;
    for (const fn of this.listeners) {
      try {
        fn({ kind, status, event });
      } catch (error) {
        console.error("a live view failed on an event", error);
      }
    }
  }
}
