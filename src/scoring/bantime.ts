export interface BantimeOptions {
  bantimeMs: number; // 0 = permanent
  factor: number;
  maxMs: number;
}

/**
 * Length of a host's next ban, given how many bans it had before: each repeat lasts
 * `factor` times longer, capped at max. Null = permanent (bantime 0, as the original).
 */
export function banDuration(previousBans: number, o: BantimeOptions): number | null {
  if (o.bantimeMs === 0) return null;
  const ms = o.bantimeMs * Math.pow(o.factor, Math.max(0, previousBans));
  return Math.min(Number.isFinite(ms) ? ms : o.maxMs, o.maxMs);
}
