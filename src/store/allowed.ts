import type { Prepared } from './bans';
import { OPERATOR_LOCK_WAIT_MS, untilUnlocked } from './open';

/** The runtime allow list (`ampere allow add`): networks as canonical text (see src/allow). */
export class AllowedTable {
  constructor(private readonly sql: Prepared) {}

  /** An operator's change waits for another writer's lock rather than failing (untilUnlocked). */
  writing<T>(fn: () => T): Promise<T> {
    return untilUnlocked(fn, OPERATOR_LOCK_WAIT_MS);
  }

  allowList(): { cidr: string; addedAt: number; note: string }[] {
    return this.sql(`SELECT cidr, added_at AS addedAt, note FROM allowed`).all() as { cidr: string; addedAt: number; note: string }[];
  }

  addAllowed(cidr: string, now: number, note = ''): void {
    this.sql(`INSERT INTO allowed (cidr, added_at, note) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`).run(cidr, now, note);
  }

  removeAllowed(cidr: string): boolean {
    return this.sql(`DELETE FROM allowed WHERE cidr = ?`).run(cidr).changes > 0;
  }
}
