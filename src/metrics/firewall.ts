import type { FirewallBackend } from '../firewall';

/** The backend, unchanged, except that every failed call is counted (then rethrown to the queue). */
export function countingFailures(backend: FirewallBackend, onFailure: (op: string) => void): FirewallBackend {
  const wrap = <A extends unknown[]>(op: string, fn: (...a: A) => Promise<void>) => async (...a: A) => {
    try {
      await fn(...a);
    } catch (err) {
      onFailure(op);
      throw err;
    }
  };
  return {
    get name() { return backend.name; },
    get netns() { return backend.netns; },
    get families() { return backend.families; },
    init: wrap('init', () => backend.init()),
    setAll: wrap('setAll', (bans, now) => backend.setAll(bans, now)),
    // The full load as text the store rendered (ipset): its format, and the load itself.
    get lineFormat() { return backend.lineFormat; },
    setAllLines: backend.setAllLines ? wrap('setAll', (lines) => backend.setAllLines!(lines)) : undefined,
    add: wrap('add', (bans, now) => backend.add(bans, now)),
    remove: wrap('remove', (bans) => backend.remove(bans)),
    // The queue asks whether it may send batches while others are in flight (ipset shell).
    pipelines: backend.pipelines ? (count: number) => backend.pipelines!(count) : undefined,
    list: () => backend.list(),
    // The reconciler's look at the kernel (not a change: its failures are not counted here).
    inspect: backend.inspect ? () => backend.inspect!() : undefined,
    listBans: backend.listBans ? () => backend.listBans!() : undefined,
    shutdown: () => backend.shutdown(),
  };
}
