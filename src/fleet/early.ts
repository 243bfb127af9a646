import type { OutboxRow } from './local';

/** A local ban as Decisions reported it, published before its row is committed. */
export interface EarlyBan {
  address: string; until: number | null; reasonKind: string; reasonService: string; reasonAccount: string; failures: number; source: string;
}

/** Bans remembered as published early at most: past that the oldest are forgotten and published again by the outbox. */
const REMEMBERED = 10_000;

const key = (address: string, until: number | null) => `${address} ${until ?? 'permanent'}`;

/**
 * The bans published early whose outbox rows have not been drained yet: a drained row that
 * matches one (same address and end) is skipped, once, so a ban is published exactly once.
 * Bounded: a ban forgotten here is published again, which peers apply harmlessly.
 */
export class EarlyRecord {
  private readonly sent = new Map<string, number>();
  private size = 0;

  add(bans: readonly Pick<EarlyBan, 'address' | 'until'>[]): void {
    for (const b of bans) {
      const k = key(b.address, b.until);
      this.sent.delete(k); // re-inserted last, so the oldest stay first
      this.sent.set(k, (this.sent.get(k) ?? 0) + 1);
      this.size++;
    }
    while (this.size > REMEMBERED) {
      const [oldest, n] = this.sent.entries().next().value!;
      this.sent.delete(oldest);
      this.size -= n;
    }
  }

  /** True (and forgotten) when this outbox row's ban went out early. */
  take(r: Pick<OutboxRow, 'action' | 'address' | 'until'>): boolean {
    if (r.action !== 'ban') return false;
    const k = key(r.address, r.until);
    const n = this.sent.get(k);
    if (n === undefined) return false;
    if (n > 1) this.sent.set(k, n - 1);
    else this.sent.delete(k);
    this.size--;
    return true;
  }

  /** Forget bans whose early insert failed. */
  remove(bans: readonly Pick<EarlyBan, 'address' | 'until'>[]): void {
    for (const b of bans) this.take({ action: 'ban', address: b.address, until: b.until });
  }

  /** Whether every one of these outbox rows is a ban that went out early (each remembered ban covers one row). */
  covers(rows: readonly Pick<OutboxRow, 'action' | 'address' | 'until'>[]): boolean {
    const need = new Map<string, number>();
    for (const r of rows) {
      if (r.action !== 'ban') return false;
      const k = key(r.address, r.until);
      const n = (need.get(k) ?? 0) + 1;
      if (n > (this.sent.get(k) ?? 0)) return false;
      need.set(k, n);
    }
    return true;
  }

  /** Whether a ban of this address went out early and its outbox row was not drained yet. */
  hasAddress(address: string): boolean {
    for (const k of this.sent.keys()) if (k.startsWith(`${address} `)) return true;
    return false;
  }

  /** Forget the early bans of an address (its row will never come: the ban was lifted before it was stored). */
  forget(address: string): void {
    for (const [k, n] of [...this.sent]) if (k.startsWith(`${address} `)) { this.sent.delete(k); this.size -= n; }
  }
}
