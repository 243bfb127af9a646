import { familyOf, type Family } from '../net/ip';
// Types only (erased): src/store/schema.ts stays the schema's source for drizzle-kit and the
// migrations, but the Store never loads Drizzle itself (see Store.db).
import type { events, hosts } from './schema';

/**
 * How each ban becomes a line: `<prefix of its family><address><infix><seconds left>`, seconds
 * rounded up, 0 for none or more than maxSeconds; a range (an address with a `/`) takes
 * rangePrefix instead. The store knows lines, not whose they are (the firewall's BanLineFormat
 * has this shape).
 */
export interface LineTemplate {
  prefix: Record<Family, string>;
  rangePrefix: Record<Family, string>;
  infix: string;
  maxSeconds: number;
}

/** Lines per family (joined by newlines, '' for none) and how many in all. */
export interface RenderedLines {
  4: string;
  6: string;
  count: number;
}

/**
 * The same lines rendered a slice at a time as the caller pulls them: each slice whole lines,
 * each ending in a newline. count: the lines rendered so far (all of them once drained).
 */
export interface RenderedSlices {
  readonly slices: Iterable<Buffer>;
  readonly count: number;
}

/** A hosts row, as host() returns it (banned a boolean, as schema.ts's mode: 'boolean'). */
export type HostRow = typeof hosts.$inferSelect;
/** An events row, as recentEvents() returns it. */
export type EventRow = typeof events.$inferSelect;

export interface ActiveBan {
  id: number;
  address: string;
  family: Family;
  startedAt: number;
  until: number | null;
  reasonKind: string;
  reasonService: string;
  reasonAccount: string;
  failures: number;
  source: string;
}

/** A ban as listings show it: active or past, with the host's ban count. */
export interface BanRow extends ActiveBan {
  /** The fleet node that made it; null: this node. */
  origin: string | null;
  liftedAt: number | null;
  liftReason: string | null;
  banCount: number;
}

export interface NewBan {
  address: string;
  family: Family;
  now: number;
  until: number | null;
  reasonKind: string;
  reasonService: string;
  reasonAccount: string;
  failures: number;
  /** kernel: adopted at start from a kernel ban the database lacked; fleet: a peer's (src/fleet). */
  source: 'auto' | 'manual' | 'range' | 'legacy' | 'fail2ban' | 'kernel' | 'fleet';
  /** The fleet node that made it (fleet bans only). */
  origin?: string | null;
}

/** What the kernel needs of a ban. */
export interface KernelBanRow { address: string; family: Family; until: number | null }

/** One line of selectActiveKernelText ("address until", until empty when permanent) to its fields. */
function kernelBanRow(row: string): KernelBanRow {
  // The last space: until has none, and an address with one (a hand-edited file) must stay
  // whole, so the checks after see it and refuse it.
  const sp = row.lastIndexOf(' ');
  const address = row.slice(0, sp);
  return { address, family: familyOf(address), until: sp === row.length - 1 ? null : Number(row.slice(sp + 1)) };
}

/** The lines of selectActiveKernelText as rows, made as the caller pulls them. */
export function* kernelBanRows(text: string | null): Generator<KernelBanRow, void, undefined> {
  if (!text) return;
  for (let i = 0; i < text.length;) {
    let j = text.indexOf('\n', i);
    if (j < 0) j = text.length;
    yield kernelBanRow(text.slice(i, j));
    i = j + 1;
  }
}

/** An ActiveBan's columns, in the order toBans reads them. */
export const BAN_COLUMNS = 'id, address, family, started_at, until, reason_kind, reason_service, reason_account, failures, source';

/**
 * Rows of BAN_COLUMNS (raw arrays) to ActiveBans. For 100k bans the time goes to making the
 * values (better-sqlite3, per row) and to the garbage collector copying what survives; Drizzle's
 * mapping was only a part. So: one row array at a time (iterate: it dies young), and the few
 * distinct reason/source texts shared instead of one copy per ban.
 */
export function toBans(rows: Iterable<unknown[]>): ActiveBan[] {
  const texts = new Map<string, string>();
  const text = (v: unknown) => {
    const s = v as string;
    const seen = texts.get(s);
    if (seen !== undefined) return seen;
    if (texts.size < 10_000) texts.set(s, s);
    return s;
  };
  const out: ActiveBan[] = [];
  for (const r of rows) {
    out.push({
      id: r[0] as number, address: r[1] as string, family: r[2] as Family, startedAt: r[3] as number, until: r[4] as number | null,
      reasonKind: text(r[5]), reasonService: text(r[6]), reasonAccount: text(r[7]), failures: r[8] as number, source: text(r[9]),
    });
  }
  return out;
}
