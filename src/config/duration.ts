const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** "90s", "10m", "1h", "7d", "2w", "500ms"; a bare number is seconds (as in fail2ban). Returns ms, or null. */
export function parseDuration(text: string): number | null {
  const m = /^\s*(\d{1,12})\s*(ms|s|m|h|d|w)?\s*$/i.exec(text);
  if (!m) return null;
  const ms = Number(m[1]) * UNITS[(m[2] ?? 's').toLowerCase()];
  return Number.isSafeInteger(ms) ? ms : null;
}

/** The shortest exact text for a duration in ms: 3600000 -> "1h", 0 -> "0s". */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  for (const [unit, size] of [['w', UNITS.w], ['d', UNITS.d], ['h', UNITS.h], ['m', UNITS.m], ['s', UNITS.s]] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
