import type { Server } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { AmiConnection } from '../ami';
import { SecurityHearing } from '../ami/heard';
import { BackupScheduler } from '../backup';
import { describeConfig, type LoadedConfig } from '../config';
import { controlSocketPath, statusPath } from '../control/paths';
import { controlRoutes } from '../control/routes';
import { claimSocket, ControlServer } from '../control/server';
import { Decisions } from '../decisions';
import { takeDaemonLocks } from '../lock';
import { chooseIpv6, createFirewall, FirewallQueue } from '../firewall';
import { Reconciler } from '../firewall/reconciler';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { countingFailures } from '../metrics/firewall';
import { EventWindow } from '../metrics/window';
import { AllowList, amiHostAddresses, fixedEntries } from '../allow';
import { PenaltyTable } from '../scoring';
import { Pruner, Store } from '../store';
import { DAEMON_BUSY_TIMEOUT_MS } from '../store/open';
import { Jobs, PruneTrigger } from './jobs';
import { EventPipeline } from './pipeline';
import { closeServer, followAmi, isEmptyFile, loadBans, startMetrics } from './startup';
import { health, inSync, newStats, snapshot, writeStatusFile, type DaemonStats, type DaemonStatus, type StatusParts } from './status';

export type { DaemonStats, DaemonStatus } from './status';

export interface Daemon {
  readonly store: Store;
  readonly decisions: Decisions;
  readonly penalties: PenaltyTable;
  readonly allow: AllowList;
  readonly ami: AmiConnection;
  /** Where AMI messages go; feeding it is what the AMI connection does. */
  readonly pipeline: EventPipeline;
  readonly firewall: FirewallQueue;
  readonly stats: DaemonStats;
  readonly backups: BackupScheduler;
  readonly pruner: Pruner;
  /** Null when AMPERE_METRICS is empty. */
  readonly metrics: Metrics | null;
  readonly control: ControlServer;
  status(): DaemonStatus;
  health(): { healthy: boolean; problems: string[] };
  stop(): Promise<void>;
}

/**
 * Automatic bans are stored together once a burst has passed, not at the end of each loop turn:
 * committing after the first ban held the daemon up while the other attackers' events arrived
 * (see BENCHMARKS.md, Attempts).
 */
const BAN_COMMIT_DELAY_MS = 20;
/** Never-banned hosts are forgotten after this long; the row cap and ban retention are config. */
const HOST_MAX_AGE_MS = 7 * 86_400_000;

/** The composition root: AMI -> events -> scoring -> decisions -> store + firewall; control, metrics, backups beside. */
export async function startDaemon(loaded: LoadedConfig, log: Logger): Promise<Daemon> {
  const cfg = loaded.config;
  const t0 = performance.now();
  for (const w of loaded.warnings) log.warn(w);
  // Before anything else, held for life: one daemon per database and per chain.
  const locks = await takeDaemonLocks(cfg.db, cfg.backend === 'dry-run' ? null : cfg.chain);
  const socketPath = controlSocketPath(cfg.db);
  try { await claimSocket(socketPath); } catch (err) { await locks.release(); throw err; }

  const emptyDb = isEmptyFile(cfg.db);
  const store = new Store(cfg.db, cfg.history);
  const allow = new AllowList(fixedEntries(cfg, await amiHostAddresses(cfg.host, log)), store);
  const ipv6 = chooseIpv6(cfg.ipv6);
  if (!ipv6.on && cfg.backend !== 'dry-run') log.warn({ reason: ipv6.reason }, 'IPv6 is off: IPv4 only in the kernel, IPv6 bans are kept in the database only');
  // Subscribers to failed kernel commands and to repairs of drift: the reconciler, then metrics.
  const failed: ((op: string) => void)[] = [];
  const repaired: ((what: string) => void)[] = [];
  const rawBackend = await createFirewall(cfg.backend, { chain: cfg.chain, target: cfg.target, iptables: cfg.iptables, ipv6: ipv6.on }, log);
  const backend = countingFailures(rawBackend, (op) => { for (const f of failed) f(op); });
  await backend.init();
  const firewall = new FirewallQueue(backend, log);
  firewall.conntrack?.start(); // its process starts now, not on the first ban
  const stats = newStats(Date.now());
  const decisions = new Decisions({ store, kernel: firewall, bantime: { bantimeMs: cfg.bantime, factor: cfg.bantime_factor, maxMs: cfg.bantime_max }, log, commitDelayMs: BAN_COMMIT_DELAY_MS });
  decisions.onChange((what) => { if (what === 'ban') stats.bans++; else stats.unbans++; });
  const { restored, lifted, restoreMs } = await loadBans({ db: cfg.db, emptyDb, backend, firewall, decisions, allow, log, t0 });

  // A failed kernel command kicks the reconciler: it repairs the kernel at once, not at the next check.
  const verifier = new Reconciler({ backend, queue: firewall, banned: () => decisions.countByFamily(), endedBy: (f, at) => decisions.countEndedBy(f, at), repair: () => decisions.resync(Date.now()), log, onRepair: (what) => { for (const f of repaired) f(what); },
    // Health's verdict the moment drift is found, before the repair: it failed while the kernel was known wrong.
    onDrift: (found) => { const h = health(parts, Date.now()); log.info({ drift: found, inSync: inSync(parts), healthy: h.healthy, problems: h.problems }, 'firewall drift found; repairing'); } }, cfg.verify_interval);
  failed.push(() => verifier.kick());
  // From now on SQLite never holds the event loop for another process's lock: writes that meet one fail at once and are retried.
  store.setBusyTimeout(DAEMON_BUSY_TIMEOUT_MS);
  // WAL checkpoints run on a worker thread; its start waits until the bans are loaded (it would take a core from the load).
  store.startCheckpointer({ onError: (err, fatal) => log.error({ err: err.message, fatal }, fatal ? 'WAL checkpointer stopped: SQLite checkpoints inside commits again' : 'WAL checkpoint failed') });
  const penalties = new PenaltyTable({ loyalty: cfg.loyalty, findtimeMs: cfg.findtime, maxHosts: cfg.max_hosts, isAllowed: (a, f) => allow.allows(a, f) });
  const pruner = new Pruner(store.sqlite, { hostMaxAgeMs: HOST_MAX_AGE_MS, maxHostRows: cfg.max_host_rows, banHistoryKeepMs: cfg.ban_history_keep }, { onCommit: () => store.checkpointer?.noteCommit() });
  const ami = new AmiConnection({ host: cfg.host, port: cfg.port, user: cfg.user, pass: cfg.pass, pingIntervalMs: cfg.ami_timeout, pingTimeoutMs: cfg.ami_timeout, connectTimeoutMs: cfg.ami_timeout }, log.child({ module: 'ami' }));
  const backups = new BackupScheduler(store.sqlite, cfg.backup_dir || null, cfg.backup_interval, cfg.backup_keep, log.child({ module: 'backup' }));
  const hearing = new SecurityHearing();
  const window = new EventWindow();
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  let control: ControlServer | null = null;
  let metricsServer: Server | null = null;
  const parts: StatusParts = {
    cfg, stats, ami, hearing, window, penalties, store, decisions, firewall, backendName: backend.name, verifier, backups, loopDelay,
    socket: () => (control ? socketPath : null), metricsListen: () => (metricsServer ? cfg.metrics : null),
  };
  const writeStatus = () => writeStatusFile(statusPath(cfg.db), parts, log);

  const served = await startMetrics(loaded, {
    activeBans: () => decisions.countByFamily(), trackedHosts: () => penalties.size, firewallInSync: () => inSync(parts),
    amiConnected: () => ami.state === 'connected', amiReconnects: () => ami.reconnects, amiMalformed: () => ami.counts.malformed, amiMerged: () => ami.counts.merged, amiDistrusted: () => ami.counts.distrusted,
    pendingBanWrites: () => decisions.storage().pending, storeWriteFailures: () => decisions.storage().failures,
  }, () => health(parts, Date.now()), log);
  const { metrics } = served;
  metricsServer = served.server;
  if (metrics) {
    decisions.onChange((what, _address, detail) => { if (what === 'ban') metrics.ban(detail); else metrics.unban(detail); });
    failed.push((op) => metrics.firewallFailure(op));
    repaired.push((what) => metrics.firewallRepair(what));
  }

  const prune = new PruneTrigger((now) => pruner.run(now), log);
  const pipeline = new EventPipeline({
    stats, hearing, window, penalties, decisions, firewall, history: store, telemetry: metrics, log, onHistoryWritten: (n) => prune.written(n),
  });
  const jobs = new Jobs({
    log, writeStatus, resetLoopDelay: () => loopDelay.reset(), flushHistory: () => pipeline.flush(),
    expireBans: (now) => decisions.expire(now), prunePenalties: (now) => penalties.prune(now), pruneDatabase: () => prune.now(),
    needsResync: () => !firewall.healthy && !verifier.state.running, resync: (now) => decisions.resync(now),
  });
  ami.on('message', (msg, at) => pipeline.handle(msg, at));
  followAmi(ami, hearing, cfg.user, log, writeStatus);

  let stopping: Promise<void> | null = null;
  const stop = () => (stopping ??= (async () => {
    ami.stop();
    jobs.stop();
    await verifier.stop();
    await control?.close().catch(() => {});
    await closeServer(metricsServer);
    await backups.stop();
    pipeline.flush();
    await pruner.stop();
    await firewall.idle();
    const unstored = decisions.close();
    if (unstored > 0) log.error({ unstored }, 'bans not stored at stop: the kernel keeps them, and the next start adopts them');
    loopDelay.disable();
    firewall.conntrack?.close();
    await backend.shutdown();
    writeStatus();
    store.close();
    await locks.release();
    log.info({ bansInKernel: decisions.activeCount }, 'ampere stopped; bans stay in the kernel');
  })());

  const status = () => snapshot(parts, Date.now());
  const controlLog = log.child({ module: 'control' });
  try {
    control = await ControlServer.listen(socketPath, controlRoutes({ store, decisions, penalties, allow, firewall, backups, log: controlLog, status, health: () => health(parts, Date.now()) }), controlLog);
  } catch (err) {
    // Fatal: a daemon no command can reach (or a second one beside it) must not run.
    await stop();
    throw new Error(`control socket ${socketPath} not opened: ${(err as Error).message}`);
  }
  ami.start();
  backups.start();
  verifier.start();
  writeStatus();
  log.info({
    config: describeConfig(cfg), configFile: loaded.file, sources: loaded.sources, backend: backend.name, chain: cfg.chain,
    bansRestored: restored, bansLiftedAllowed: lifted, restoreMs, startMs: Math.round(performance.now() - t0),
    socket: socketPath, metrics: metricsServer ? cfg.metrics : null, backupDir: backups.state.dir,
  }, 'ampere started');
  return { store, decisions, penalties, allow, ami, pipeline, firewall, stats, backups, pruner, metrics, control, status, health: () => health(parts, Date.now()), stop };
}
