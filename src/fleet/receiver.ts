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

/**
 * Peers' decisions after (txid, id), oldest transaction first. Decisions older than
 * fleet_ban_max are left out: none of them can still be in force here. So is a txid no
 * transaction has had yet (at or above the snapshot's xmax): only a forged one, written where a
 * node may still name the column (a fleet made before drizzle-pg/0002), and it would otherwise
 * be read again by every round of every peer.
 */
// A network (a mask shorter than a host's) keeps its mask in the text, so the address check refuses it.
const FETCH = `SELECT id::text AS id, txid::text AS txid, origin, action,
    CASE WHEN masklen(address) = CASE family(address) WHEN 4 THEN 32 ELSE 128 END THEN host(address) ELSE address::text END AS address,
    date_part('epoch', until) * 1000 AS until, reason_kind AS "reasonKind", reason_service AS "reasonService",
    reason_account AS "reasonAccount", failures, operator, date_part('epoch', created_at) * 1000 AS "createdAt"
  FROM fleet_decisions
  WHERE (txid, id) > ($1::xid8, $2::bigint) AND txid < pg_snapshot_xmax(pg_current_snapshot())
    AND origin <> $3 AND created_at > now() - make_interval(secs => $4)
  ORDER BY fleet_decisions.txid, fleet_decisions.id LIMIT $5`;
// Qualified: a bare "id" or "txid" in ORDER BY would be the text columns of the select list, in text order.
// date_part gives float8 at once; extract goes through numeric, far slower (docs/notes/measurements.md, Fleet catch-up).

/**
 * A round's first page with the oldest running transaction (pg_snapshot_xmin) of the same
 * snapshot, in one round trip: a notification's ban reaches the kernel one hop sooner. Every
 * transaction below that xmin committed before the snapshot the page is read in, so its rows
 * are in this page or the next ones. No row yet: one row of nulls but xmin.
 */
const FIRST = `SELECT x.xmin, d.* FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin) x
  LEFT JOIN LATERAL (${FETCH.replace('SELECT id::text AS id,', 'SELECT fleet_decisions.txid AS ord_txid, fleet_decisions.id AS ord_id, id::text AS id,')}) d ON true
  ORDER BY d.ord_txid, d.ord_id`;

export interface ReceiverHooks {
  onResult(d: Received, res: Applied): void;
}

/**
 * Catch-up from a stored cursor, the same code for a notification, a reconnect, a restart and
 * the periodic resync. Identity values can commit out of order, so the stored cursor is a
 * transaction id: it only moves up to the oldest transaction still running when the round began
 * (pg_snapshot_xmin), below which every row is committed and was read. Rows at or above it are
 * read again next round; the ids of those applied are remembered so they apply once (a round
 * that fails half-way applies its older rows again, which is harmless).
 */
export class Receiver {
  private cursor: bigint;
  private readonly seen = new Map<string, bigint>();
  private running: Promise<void> | null = null;
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
  }

  get storedCursor(): string { return this.cursor.toString(); }

  /** Run a round now, or once more after the one running: notifications never queue up more than one. */
  kick(): Promise<void> {
    if (this.running) { this.again = true; return this.running; }
    this.running = (async () => {
      try {
        do { this.again = false; await this.round(); } while (this.again);
      } finally { this.running = null; }
    })();
    return this.running;
  }

  private async round(): Promise<void> {
    const params = (from: [string, string]) => [from[0], from[1], this.origin, Math.ceil(this.deps.banMaxMs / 1000), PAGE];
    const first = (await this.query<Received & { xmin: string }>(FIRST, params([this.cursor.toString(), '0']))).rows;
    const xmin = BigInt(first[0].xmin);
    let rows: Received[] = first.filter((r) => r.id !== null);
    for (;;) {
      // The next page is asked for before this one is applied: the database reads it meanwhile.
      const last = rows[rows.length - 1];
      const next = rows.length < PAGE ? null : this.query<Received>(FETCH, params([last.txid, last.id]));
      next?.catch(() => {}); // awaited below; a failure while this page applies is not unhandled
      this.applyPage(rows, Date.now(), xmin);
      if (!next) break;
      rows = (await next).rows;
    }
    // The cursor moves only past stored rows. Peers' rows are committed as they are applied
    // (stored first); while writes fail some may still be pending, and are read again next round.
    if (xmin > this.cursor && this.deps.decisions.storage().failingSince === null) {
      this.cursor = xmin;
      // A write that fails (a lock) is retried with the next round; the cursor in memory is right.
      try { this.local.set('receive_cursor', xmin.toString()); } catch { /* next round */ }
      for (const [id, txid] of this.seen) if (txid < xmin) this.seen.delete(id);
    }
  }

  /**
   * A page of decisions, in order: each checked alone, the bans that pass made together (one
   * kernel batch). Bans gathered so far are made before any unban is looked at, so an unban
   * after a ban of the same address in the page still finds it; of one address's bans in a
   * page the longest is made.
   */
  private applyPage(rows: Received[], now: number, xmin: bigint): void {
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
      if (this.seen.has(d.id)) continue;
      // Only rows the next round reads again (at or above xmin) need remembering: a joining
      // node's catch-up of a million rows would otherwise keep a million ids.
      const txid = BigInt(d.txid);
      if (txid >= xmin) this.seen.set(d.id, txid);
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
