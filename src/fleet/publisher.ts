import { canonicalIp } from '../net/ip';
import type { LocalFleetState, OutboxRow } from './local';
import type { TokenBucket } from './rate';
import type { Query } from './receiver';

/** Rows sent in one insert at most. */
const BATCH = 500;

const INSERT = `INSERT INTO fleet_decisions (origin, seq, action, address, until, reason_kind, reason_service, reason_account, failures, source)
  SELECT $1, s, a, ad::inet, CASE WHEN u IS NULL THEN NULL ELSE to_timestamp(u / 1000.0) END, rk, rs, ra, f, src
  FROM unnest($2::bigint[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[], $8::text[], $9::int[], $10::text[]) AS t(s, a, ad, u, rk, rs, ra, f, src)`;

/** Texts bounded as the table's check constraint wants them: one row too long would stop the outbox. */
const clip = (s: string, max: number) => s.slice(0, max);

/**
 * Drains the outbox into the fleet table in order, at most fleet_publish_rate decisions a
 * second (the rest waits in the outbox, nothing is dropped). The cursor moves only after the
 * insert committed; a crash in between publishes a batch twice, which peers apply harmlessly.
 */
export class Publisher {
  private running: Promise<number> | null = null;
  published = 0;
  lastOut: { at: number; address: string; action: string } | null = null;

  constructor(private readonly query: Query, private readonly local: LocalFleetState, private readonly origin: string, private readonly bucket: TokenBucket) {}

  /** Publish what the outbox holds (one drain at a time); returns rows sent, or -1 when the rate limit stopped it. */
  drain(): Promise<number> {
    return (this.running ??= this.run().finally(() => { this.running = null; }));
  }

  private async run(): Promise<number> {
    let sent = 0;
    for (;;) {
      const room = this.bucket.available(Date.now());
      if (room < 1) return this.local.backlog() > 0 ? -1 : sent;
      const rows = this.local.pending(Math.min(BATCH, room));
      if (rows.length === 0) return sent;
      const good = rows.filter((r) => canonicalIp(r.address)?.address === r.address && (r.action === 'ban' || r.action === 'unban'));
      if (good.length > 0) await this.query(INSERT, this.params(good));
      this.local.published(rows[rows.length - 1].id);
      for (let i = 0; i < good.length; i++) this.bucket.take(Date.now());
      sent += good.length;
      this.published += good.length;
      const last = good[good.length - 1];
      if (last) this.lastOut = { at: Date.now(), address: last.address, action: last.action };
    }
  }

  private params(rows: OutboxRow[]): unknown[] {
    return [
      this.origin, rows.map((r) => r.id), rows.map((r) => r.action), rows.map((r) => r.address), rows.map((r) => r.until),
      rows.map((r) => clip(r.reasonKind, 200)), rows.map((r) => clip(r.reasonService, 64)), rows.map((r) => clip(r.reasonAccount, 200)),
      rows.map((r) => r.failures), rows.map((r) => clip(r.source, 16)),
    ];
  }
}
