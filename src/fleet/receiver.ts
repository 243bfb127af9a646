import type { QueryResultRow } from 'pg';
import { checkDecision, peerLimit, peerRoom, type Applied, type ApplyDeps, type Received } from './apply';
import type { PeerBan } from '../decisions';
import type { LocalFleetState } from './local';
import type { KeyedBuckets } from './rate';

export type Query = <R extends QueryResultRow>(text: string, params?: unknown[]) => Promise<{ rows: R[] }>;

/**
 * Rows read per query of a catch-up: one kernel batch and one row write each. Larger pages
 * held more memory than they saved time (docs/notes/measurements.md, Fleet catch-up).
 */
const PAGE = 5000;

// A network (a mask shorter than a host's) keeps its mask in the text, so the address check refuses it.
const COLUMNS = `id::text AS id, txid::text AS txid, origin, action,
    CASE WHEN masklen(address) = CASE family(address) WHEN 4 THEN 32 ELSE 128 END THEN host(address) ELSE address::text END AS address,
    date_part('epoch', until) * 1000 AS until, reason_kind AS "reasonKind", reason_service AS "reasonService",
    reason_account AS "reasonAccount", failures, operator, date_part('epoch', created_at) * 1000 AS "createdAt"`;
// date_part gives float8 at once; extract goes through numeric, far slower (docs/notes/measurements.md, Fleet catch-up).

/**
 * Peers' decisions after (txid, id), oldest transaction first, of the transactions committed
 * in the round's snapshot only (pg_visible_in_snapshot): the rows of one still running are read
 * once, in a later round, when it has committed. That also leaves out a txid no transaction has
 * had yet: only a forged one, written where a node may still name the column (a fleet made
 * before drizzle-pg/0002). Decisions older than fleet_ban_max are left out: none of them can
 * still be in force here. $6 is the snapshot; with $7, only the rows of those transactions.
 */
const fetchSql = (snapshot: string, onlyThose: boolean) => `SELECT ${COLUMNS}
  FROM fleet_decisions
  WHERE (txid, id) > ($1::xid8, $2::bigint) AND pg_visible_in_snapshot(txid, ${snapshot})${onlyThose ? ' AND txid = ANY($7::xid8[])' : ''}
    AND origin <> $3 AND created_at > now() - make_interval(secs => $4)
  ORDER BY fleet_decisions.txid, fleet_decisions.id LIMIT $5`;
// Qualified: a bare "id" or "txid" in ORDER BY would be the text columns of the select list, in text order.
const FETCH = fetchSql('$6::pg_snapshot', false);
const FETCH_PENDING = fetchSql('$6::pg_snapshot', true);

/**
 * A round's snapshot and its first page in one round trip: a notification's ban reaches the
 * kernel one hop sooner. No row yet: one row of nulls but the snapshot.
 */
const FIRST = `SELECT s.snap, d.* FROM (SELECT pg_current_snapshot()::text AS snap) s
  LEFT JOIN LATERAL (${fetchSql('s.snap::pg_snapshot', false).replace('SELECT id::text AS id,', 'SELECT fleet_decisions.txid AS ord_txid, fleet_decisions.id AS ord_id, id::text AS id,')}) d ON true
  ORDER BY d.ord_txid, d.ord_id`;

/** The transactions running in a snapshot's text ("xmin:xmax:xip,xip,..."). */
function runningIn(snapshot: string): Set<bigint> {
  const xip = snapshot.split(':')[2] ?? '';
  return new Set(xip === '' ? [] : xip.split(',').map((t) => BigInt(t)));
}

export interface ReceiverHooks {
  onResult(d: Received, res: Applied): void;
}

type Position = [txid: string, id: string];

/**
 * Catch-up from a stored cursor, the same code for a notification, a reconnect, a restart and
 * the periodic resync. Identity values and txids can commit out of order, so each round reads
 * only the rows of transactions committed in its snapshot: after the last row read (`read`),
 * and of the transactions that were still running when an earlier round read past them
 * (`running`), which are read once they have committed. A transaction left open (a stuck or
 * hostile session) thus costs one txid to remember, never a growing window read again each
 * round. The stored cursor is a txid below which every row was read: the lowest of those still
 * running and the last read; a restart reads again from it, which is harmless.
 */
export class Receiver {
  private cursor: bigint;
  private read: Position;
  private running = new Set<bigint>();
  private inFlight: Promise<void> | null = null;
  private again = false;

  constructor(
    private readonly query: Query,
    private readonly local: LocalFleetState,
    private readonly origin: string,
    private readonly deps: ApplyDeps,
    private readonly limits: KeyedBuckets,
    private readonly hooks: ReceiverHooks,
  ) {
    this.cursor = BigInt(local.value('receive_cursor') ?? '0');
    this.read = [this.cursor.toString(), '0'];
  }

  get storedCursor(): string { return this.cursor.toString(); }

  /** Run a round now, or once more after the one running: notifications never queue up more than one. */
  kick(): Promise<void> {
    if (this.inFlight) { this.again = true; return this.inFlight; }
    this.inFlight = (async () => {
      try {
        do { this.again = false; await this.round(); } while (this.again);
      } finally { this.inFlight = null; }
    })();
    return this.inFlight;
  }

  private async round(): Promise<void> {
    const params = (from: Position) => [from[0], from[1], this.origin, Math.ceil(this.deps.banMaxMs / 1000), PAGE];
    const first = (await this.query<Received & { snap: string }>(FIRST, params(this.read))).rows;
    const snap = first[0].snap;
    const running = runningIn(snap);
    // The transactions read past while they ran, and committed (or rolled back) since.
    const ended = [...this.running].filter((t) => !running.has(t));
    if (ended.length > 0) {
      await this.pages(null, (from) => this.query<Received>(FETCH_PENDING, [...params(from), snap, ended.map(String)]));
      for (const t of ended) this.running.delete(t);
    }
    // Read past a running transaction: remembered with the page, so a round that fails later loses none.
    await this.pages(first.filter((r) => r.id !== null), (from) => this.query<Received>(FETCH, [...params(from), snap]), (last) => {
      this.read = last;
      for (const t of running) if (t < BigInt(last[0])) this.running.add(t);
    });
    let safe = BigInt(this.read[0]);
    for (const t of this.running) if (t < safe) safe = t;
    // The cursor moves only past stored rows. Peers' rows are committed as they are applied
    // (stored first); while writes fail some may still be pending, and are read again next round.
    if (safe > this.cursor && this.deps.decisions.storage().failingSince === null) {
      this.cursor = safe;
      // A write that fails (a lock) is retried with the next round; the cursor in memory is right.
      try { this.local.set('receive_cursor', safe.toString()); } catch { /* next round */ }
    }
  }

  /** Pages in order from `rows` (null: fetch the first), each applied as the next one is read. */
  private async pages(rows: Received[] | null, fetch: (from: Position) => Promise<{ rows: Received[] }>, onPage: (last: Position) => void = () => {}): Promise<void> {
    let page = rows ?? (await fetch(['0', '0'])).rows;
    for (;;) {
      // The next page is asked for before this one is applied: the database reads it meanwhile.
      const last = page[page.length - 1];
      const next: Promise<{ rows: Received[] }> | null = page.length < PAGE ? null : fetch([last.txid, last.id]);
      next?.catch(() => {}); // awaited below; a failure while this page applies is not unhandled
      this.applyPage(page, Date.now());
      if (last) onPage([last.txid, last.id]);
      if (!next) return;
      page = (await next).rows;
    }
  }

  /**
   * A page of decisions, in order: each checked alone, the bans that pass made together (one
   * kernel batch). Bans gathered so far are made before any unban is looked at, so an unban
   * after a ban of the same address in the page still finds it; of one address's bans in a
   * page the longest is made.
   */
  private applyPage(rows: Received[], now: number): void {
    const batch = new Map<string, { d: Received[]; ban: PeerBan; capped: boolean }>();
    // Counted down as the page adds hosts; an unban in the page frees room only from the next page on.
    const room = peerRoom(this.deps.decisions.countByFamily(), this.deps.setSize());
    const flush = () => {
      if (batch.size === 0) return;
      const made = [...batch.values()];
      batch.clear();
      const applied = this.deps.decisions.banMany(made.map((m) => m.ban), now);
      // The lag is the batch's last decision's, measured once: a promise reaction per decision of a million-row catch-up is garbage.
      const lastD = made[made.length - 1].d[made[made.length - 1].d.length - 1];
      for (const m of made) for (const d of m.d) this.hooks.onResult(d, { ok: true, what: 'ban', address: m.ban.address, capped: m.capped, applied: d === lastD ? applied : undefined });
    };
    for (const d of rows) {
      const origin = typeof d.origin === 'string' ? d.origin : '';
      if (!this.limits.take(origin, d.createdAt)) { this.hooks.onResult(d, { ok: false, why: 'rate', detail: 'over fleet_receive_rate for its origin' }); continue; }
      if (d.action !== 'ban') flush();
      const c = checkDecision(d, this.deps, now);
      if (!('ban' in c)) { this.hooks.onResult(d, c); continue; }
      const same = batch.get(c.ban.address);
      if (!same && c.fresh && room[c.ban.family]-- <= 0) {
        this.hooks.onResult(d, { ok: false, why: 'full', address: c.ban.address, detail: `peers' bans fill ${peerLimit(this.deps.setSize())} of set_size ${this.deps.setSize()} in IPv${c.ban.family}: the rest is kept for this node's own bans` });
        continue;
      }
      if (!same) batch.set(c.ban.address, { d: [d], ban: c.ban, capped: c.capped });
      else { same.d.push(d); if (c.ban.until > same.ban.until) { same.ban = c.ban; same.capped = c.capped; } }
    }
    flush();
  }
}
