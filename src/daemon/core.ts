import { AllowList, amiHostAddresses, fixedEntries } from '../allow';
import type { Config } from '../config';
import { controlSocketPath } from '../control/paths';
import { claimSocket } from '../control/server';
import { Decisions } from '../decisions';
import { chooseIpv6, createFirewall, FirewallQueue, type ConntrackFlusher, type FirewallBackend } from '../firewall';
import { Reconciler } from '../firewall/reconciler';
import type { Drift } from '../firewall/verify';
import { takeDaemonLocks } from '../lock';
import type { Logger } from '../log';
import { Store } from '../store';
import { DAEMON_BUSY_TIMEOUT_MS } from '../store/open';
import { isEmptyFile, loadBans } from './startup';
import { newStats, type DaemonStats } from './status';

/**
 * Automatic bans are stored together once a burst has passed, not at the end of each loop turn:
 * committing after the first ban held the daemon up while the other attackers' events arrived
 * (see BENCHMARKS.md, Attempts, and docs/notes/measurements.md, Attempts).
 */
const BAN_COMMIT_DELAY_MS = 20;

/** The daemon's state and the kernel, made to agree: what every other part is built around. */
export interface Core {
  locks: { release(): Promise<void> };
  socketPath: string;
  store: Store;
  allow: AllowList;
  backend: FirewallBackend;
  conntrack: ConntrackFlusher | null;
  firewall: FirewallQueue;
  decisions: Decisions;
  verifier: Reconciler;
  stats: DaemonStats;
  /** Subscribers to each repair of drift (metrics, when served), and to drift found, before its repair (the log). */
  repaired: ((what: string) => void)[];
  drifted: ((found: Drift[]) => void)[];
  restore: { restored: number; lifted: number; restoreMs: number };
}

/**
 * Takes the locks (one daemon per database and per chain, held for life), opens the database,
 * the allow list and the firewall, and loads the stored bans into the kernel.
 */
export async function openCore(cfg: Config, log: Logger, t0: number): Promise<Core> {
  const locks = await takeDaemonLocks(cfg.db, cfg.backend === 'dry-run' ? null : cfg.chain);
  const socketPath = controlSocketPath(cfg.db);
  try { await claimSocket(socketPath); } catch (err) { await locks.release(); throw err; }
  const emptyDb = isEmptyFile(cfg.db);
  const store = new Store(cfg.db, cfg.history);
  const allow = new AllowList(fixedEntries(cfg, await amiHostAddresses(cfg.host, log)), store.allowed);
  const ipv6 = chooseIpv6(cfg.ipv6);
  if (!ipv6.on && cfg.backend !== 'dry-run') log.warn({ reason: ipv6.reason }, 'IPv6 is off: IPv4 only in the kernel, IPv6 bans are kept in the database only');
  const { backend, conntrack } = await createFirewall(cfg.backend, { chain: cfg.chain, target: cfg.target, ports: cfg.ports, iptables: cfg.iptables, ipv6: ipv6.on, setSize: cfg.set_size }, log);
  await backend.init();
  const firewall = new FirewallQueue(backend, log, { conntrack });
  conntrack?.start(); // its process starts now, not on the first ban
  const stats = newStats(Date.now());
  const decisions = new Decisions({ store, kernel: firewall, bantime: { bantimeMs: cfg.bantime, factor: cfg.bantime_factor, maxMs: cfg.bantime_max }, log, commitDelayMs: BAN_COMMIT_DELAY_MS, storeRebansFirst: !backend.keepsBanTimes });
  decisions.onChange((what) => { if (what === 'ban') stats.bans++; else stats.unbans++; });
  const restore = await loadBans({ db: cfg.db, emptyDb, backend, firewall, decisions, allow, log, t0 });
  const repaired: ((what: string) => void)[] = [];
  const drifted: ((found: Drift[]) => void)[] = [];
  const verifier = new Reconciler({
    backend, queue: firewall, banned: () => decisions.countByFamily(), endedBy: (f, at) => decisions.countEndedBy(f, at),
    repair: () => decisions.resync(Date.now()), log, onRepair: (what) => { for (const f of repaired) f(what); }, onDrift: (found) => { for (const f of drifted) f(found); },
  }, cfg.verify_interval);
  // A failed kernel command kicks the reconciler: it repairs the kernel at once, not at the next check.
  firewall.subscribe({ failed: () => verifier.kick() });
  // From now on SQLite never holds the event loop for another process's lock: writes that meet one fail at once and are retried.
  store.setBusyTimeout(DAEMON_BUSY_TIMEOUT_MS);
  // While writes fail (a lock held elsewhere), each retry and history write fails at once
  // instead of waiting the busy timeout on the event loop; the short wait returns with success.
  decisions.storeHealth.onFailingChange((failing) => store.setBusyTimeout(failing ? 0 : DAEMON_BUSY_TIMEOUT_MS));
  // WAL checkpoints run on a worker thread; its start waits until the bans are loaded (it would take a core from the load).
  store.startCheckpointer({ onError: (err, fatal) => log.error({ err: err.message, fatal }, fatal ? 'WAL checkpointer stopped: SQLite checkpoints inside commits again' : 'WAL checkpoint failed') });
  return { locks, socketPath, store, allow, backend, conntrack, firewall, decisions, verifier, stats, repaired, drifted, restore };
}
