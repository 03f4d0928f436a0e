// GET /status and GET /job-counts, read every few seconds while the page is open: the sheep
// view, the overview's counts and its queue depths over time come from these readings. A
// sheep's recent duty cycle is the growth of its busy seconds between two readings.

import { getJson } from "./api.js";

const EVERY_MS = 5000;
const KEPT = 120; // readings: ten minutes

export class FleetWatch {
  constructor() {
    this.readings = []; // {at, fleet}
    this.listeners = new Set();
    this.timer = null;
    this.error = null;
  }

  subscribe(fn) {
    this.listeners.add(fn);
    if (this.latest) fn(this.latest);
    return () => this.listeners.delete(fn);
  }

  get latest() {
    return this.readings.at(-1);
  }

  start() {
    if (this.timer === null) this.read();
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  async read() {
    try {
      const [fleet, jobs] = await Promise.all([getJson("/status"), getJson("/job-counts")]);
      this.error = null;
      this.readings.push({ at: Date.now(), fleet, counts: jobs.counts, total: jobs.total });
      if (this.readings.length > KEPT) this.readings.shift();
      for (const fn of this.listeners) fn(this.latest);
    } catch (error) {
      this.error = error;
      for (const fn of this.listeners) fn(null, error);
    }
    this.timer = setTimeout(() => this.read(), EVERY_MS);
  }

  /** The sheep's share of time busy since the reading about a minute back; else lifetime. */
  recentDuty(sheepId) {
    const now = this.latest?.fleet.sheep[sheepId];
    const back = this.readings.find((r) => r.at >= Date.now() - 65_000 && r.fleet.sheep[sheepId]);
    const then = back?.fleet.sheep[sheepId];
    if (now && then && now.last_seen !== then.last_seen && now.started_at === then.started_at) {
      const span = (new Date(now.last_seen) - new Date(then.last_seen)) / 1000;
      if (span > 0) return Math.min(1, Math.max(0, (now.busy_seconds - then.busy_seconds) / span));
    }
    return now?.duty_cycle ?? null;
  }

  /** [time, jobs in `state`] at each reading. */
  counted(state) {
    return this.readings.map(({ at, counts }) => [at, counts[state]]);
  }

  /** Jobs ready in every queue (not yet handed to a sheep), at each reading. */
  depths() {
    return this.readings.map(({ at, fleet }) => {
      let total = fleet.pool.queue_depth || 0;
      for (const c of Object.values(fleet.classes || {})) total += c.queue_depth || 0;
      for (const s of Object.values(fleet.sheep)) if (!s.sheep_class) total += s.queue_depth || 0;
      return [at, total];
    });
  }
}
