import type { Decisions } from '../../src/decisions';
import type { Applied, Received } from '../../src/fleet/apply';
import type { LocalFleetState } from '../../src/fleet/local';
import { KeyedBuckets } from '../../src/fleet/rate';
import { Receiver, type Query } from '../../src/fleet/receiver';
import type { Logger } from '../../src/log';
import type { Store } from '../../src/store';

/** A Receiver over this query (origin pbx1 unless told), its fleet state (the receive cursor) in memory. */
export function receiverOver(query: Query, o: { decisions: Decisions; store: Store; log: Logger; setSize: () => number; origin?: string; rate?: number }) {
  const state = new Map<string, string>();
  const local = { value: (k: string) => state.get(k), set: (k: string, v: string) => void state.set(k, v) } as unknown as LocalFleetState;
  const results: Applied[] = [];
  const rate = o.rate ?? 1_000_000;
  const receiver = new Receiver(query, local, o.origin ?? 'pbx1', { decisions: o.decisions, store: o.store, isAllowed: () => false, banMaxMs: 86_400_000, setSize: o.setSize, log: o.log },
    new KeyedBuckets(rate, rate), { onResult: (_d, r) => results.push(r) });
  return { state, receiver, results };
}

/**
 * A Receiver fed rows as PostgreSQL returns them, with no database: a round's first statement
 * answers with a snapshot in which nothing runs on every row (or one row of nulls but the
 * snapshot), later pages are empty.
 */
export function fakeReceiver(o: { decisions: Decisions; store: Store; log: Logger; setSize: () => number }) {
  let rows: Received[] = [];
  const snap = '1:1:';
  const query = (async (text: string) => {
    if (!text.includes('pg_current_snapshot()')) return { rows: [] };
    const out = rows.length ? rows.map((r) => ({ ...r, snap })) : [{ snap, id: null }];
    rows = [];
    return { rows: out };
  }) as unknown as Query;
  const { state, receiver, results } = receiverOver(query, o);
  /** One round over these rows; what became of each. */
  const receive = async (next: Received[]): Promise<Applied[]> => {
    rows = next;
    await receiver.kick();
    return results.splice(0);
  };
  return { state, receive };
}
