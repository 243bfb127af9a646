/**
 * Counts per kind over the last 60 seconds, in one-second buckets (for `ampere status`).
 * add() is on the per-event path: an index, a compare and a Map increment.
 */
export class EventWindow {
  private readonly secs = new Array<number>(60).fill(-1);
  private readonly counts: Map<string, number>[] = Array.from({ length: 60 }, () => new Map());

  add(kind: string, nowMs: number): void {
    const sec = Math.floor(nowMs / 1000);
    const i = sec % 60;
    const bucket = this.counts[i];
    if (this.secs[i] !== sec) { this.secs[i] = sec; bucket.clear(); }
    bucket.set(kind, (bucket.get(kind) ?? 0) + 1);
  }

  /** Events per kind whose second lies within the last 60 s of nowMs. */
  lastMinute(nowMs: number): { total: number; byKind: Record<string, number> } {
    const now = Math.floor(nowMs / 1000);
    const byKind: Record<string, number> = {};
    let total = 0;
    for (let i = 0; i < 60; i++) {
      if (this.secs[i] < 0 || this.secs[i] <= now - 60 || this.secs[i] > now) continue;
      for (const [k, n] of this.counts[i]) { byKind[k] = (byKind[k] ?? 0) + n; total += n; }
    }
    return { total, byKind };
  }
}
