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
    this.generation = 0; // a read begun before stop() schedules no next one
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
    if (this.running) return;
    this.running = true;
    this.read(this.generation);
  }

  stop() {
    this.running = false;
    this.generation += 1;
    clearTimeout(this.timer);
  }

  async read(generation) {
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
    if (generation === this.generation) {
      this.timer = setTimeout(() => this.read(generation), EVERY_MS);
    }
  }

  /** The sheep's share of time busy over the last minute or so of readings (a sheep
   * announces every few seconds, so a shorter span would mostly measure that); else since it
   * started. */
  recentDuty(sheepId) {
    const latest = this.latest;
    const now = latest?.fleet.sheep[sheepId];
    const back = this.readings.find((r) => r.at >= latest.at - 65_000 && r.fleet.sheep[sheepId]);
    const then = back?.fleet.sheep[sheepId];
    const span = back ? (latest.at - back.at) / 1000 : 0;
    if (now && then && span >= 30 && now.started_at === then.started_at) {
      return Math.min(1, Math.max(0, (now.busy_seconds - then.busy_seconds) / span));
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
