import type { Decisions } from '../../src/decisions';
import type { Applied, Received } from '../../src/fleet/apply';
import type { LocalFleetState } from '../../src/fleet/local';
import { KeyedBuckets } from '../../src/fleet/rate';
import { Receiver, type Query } from '../../src/fleet/receiver';
import type { Logger } from '../../src/log';
import type { Store } from '../../src/store';

/**
 * A Receiver (origin pbx1) fed rows as PostgreSQL returns them, with no database: a round's
 * first statement answers with the given xmin on every row (or one row of nulls but xmin),
 * later pages are empty. `state` is the node's fleet state (the receive cursor).
 */
export function fakeReceiver(o: { decisions: Decisions; store: Store; log: Logger; setSize: () => number }) {
  let rows: Received[] = [];
  let xmin = '1';
  const query = (async (text: string) => {
    if (!text.includes('pg_snapshot_xmin')) return { rows: [] };
    const out = rows.length ? rows.map((r) => ({ ...r, xmin })) : [{ xmin, id: null }];
    rows = [];
    return { rows: out };
  }) as unknown as Query;
  const state = new Map<string, string>();
  const local = { value: (k: string) => state.get(k), set: (k: string, v: string) => void state.set(k, v) } as unknown as LocalFleetState;
  const results: Applied[] = [];
  const receiver = new Receiver(query, local, 'pbx1', { decisions: o.decisions, store: o.store, isAllowed: () => false, banMaxMs: 86_400_000, setSize: o.setSize, log: o.log },
    new KeyedBuckets(1_000_000, 1_000_000), { onResult: (_d, r) => results.push(r) });
  /** One round over these rows; what became of each. */
  const receive = async (next: Received[], atXmin = '1'): Promise<Applied[]> => {
    rows = next;
    xmin = atXmin;
    await receiver.kick();
    return results.splice(0);
  };
  return { state, receive };
}
