/** Figures, their spread, and the one markdown table the benchmark prints. */

export interface Row {
  /** Section number and name, e.g. "1 Reaction". */
  section: string;
  measure: string;
  variant: string;
  /** Median over the runs (or the pooled percentile, see `measure`). */
  value: number;
  unit: string;
  /** Min and max of the per-run values. */
  spread?: [number, number];
  runs: number;
  target?: string;
  met?: boolean;
  /** How it was measured (process/in-process, sample size): short. */
  how?: string;
  /** Digits after the point. */
  digits?: number;
  /** Shown instead of the number (a yes/no result). */
  text?: string;
}

export function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export function spread(xs: number[]): [number, number] {
  return [Math.min(...xs), Math.max(...xs)];
}

export function fmt(v: number, digits = 2): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(digits);
}

export function fmtBytes(b: number): string {
  return `${(b / 1048576).toFixed(1)}`;
}

export function table(rows: Row[]): string {
  const head = '| # | Measure | Variant | Median | Spread (min–max of runs) | Runs | Target | Met |';
  const sep = '|---|---|---|---:|---|---:|---|---|';
  const lines = rows.map((r) => {
    const d = r.digits ?? 2;
    const v = r.text ?? `${fmt(r.value, d)} ${r.unit}`.trim();
    const s = r.spread && r.runs > 1 ? `${fmt(r.spread[0], d)} – ${fmt(r.spread[1], d)}` : '–';
    const met = r.met === undefined ? '' : r.met ? 'yes' : '**no**';
    const measure = r.how ? `${r.measure} <sub>${r.how}</sub>` : r.measure;
    return `| ${r.section} | ${measure} | ${r.variant} | ${v} | ${s} | ${r.runs} | ${r.target ?? ''} | ${met} |`;
  });
  return [head, sep, ...lines].join('\n');
}
