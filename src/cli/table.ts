/** Output helpers shared by the commands: aligned tables for people, JSON for scripts. */

export interface Column<T> {
  header: string;
  get: (row: T) => string | number | null | undefined;
  /** Right-align (numbers). */
  right?: boolean;
}

/** Strip control characters (hostile text such as AccountIDs must not drive the terminal). */
export function safe(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** An aligned table: a header line, then one line per row; columns separated by two spaces. */
export function formatTable<T>(rows: T[], columns: Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => { const v = c.get(r); return v === null || v === undefined ? '-' : safe(String(v)); }));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i].length)));
  const line = (values: string[]) =>
    values.map((v, i) => (columns[i].right ? v.padStart(widths[i]) : i === values.length - 1 ? v : v.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n') + '\n';
}

export function printTable<T>(rows: T[], columns: Column<T>[]): void {
  process.stdout.write(formatTable(rows, columns));
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/** Local time as 2025-01-31 14:05:09 (the operator's clock; JSON carries ISO UTC). */
export function formatTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '-';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** A span for people: 45s, 12m, 3h 5m, 2d 4h. */
export function formatSpan(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d}d ${h % 24}h` : `${d}d`;
}

export function ago(ms: number | null | undefined, now = Date.now()): string {
  return ms === null || ms === undefined ? '-' : `${formatSpan(now - ms)} ago`;
}

/** Epoch ms to ISO text for JSON output (null stays null). */
export function iso(ms: number | null | undefined): string | null {
  return ms === null || ms === undefined ? null : new Date(ms).toISOString();
}
