import { lookup } from 'node:dns/promises';
import { readFileSync, writeFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { AmiConnection, type AmiMessage } from './ami';
import { SecurityHearing } from './ami/heard';
import { BackupScheduler } from './backup';
import { describeConfig, type LoadedConfig } from './config';
import { controlSocketPath, restoredMarkerPath, statusPath } from './control/paths';
import { controlRoutes } from './control/routes';
import { claimSocket, ControlServer } from './control/server';
import type { AllowView } from './control/views';
import { Decisions, type StorageState } from './decisions';
import { storageProblems } from './decisions/pending';
import { toSecurityEvent, type SecurityEvent } from './events';
import { takeDaemonLocks } from './lock';
import { chooseIpv6, createFirewall, FirewallQueue } from './firewall';
import { Reconciler, type ReconcilerState } from './firewall/reconciler';
import type { Logger } from './log';
import type { Metrics } from './metrics';
import { countingFailures } from './metrics/firewall';
import { EventWindow } from './metrics/window';
import { AllowList, parseCidr } from './net/cidr';
import { canonicalIp } from './net/ip';
import { PenaltyTable } from './scoring';
import { Pruner, Store } from './store';
import { DAEMON_BUSY_TIMEOUT_MS } from './store/open';

export interface DaemonStats {
  startedAt: number;
  events: number;
  malformed: number;
  byKind: Record<string, number>;
  bans: number;
  unbans: number;
}

export interface Daemon {
  readonly store: Store;
  readonly decisions: Decisions;
  readonly penalties: PenaltyTable;
  readonly allow: AllowList;
  readonly ami: AmiConnection;
  readonly firewall: FirewallQueue;
  readonly stats: DaemonStats;
  readonly backups: BackupScheduler;
  readonly pruner: Pruner;
  /** Null when AMPERE_METRICS is empty. */
  readonly metrics: Metrics | null;
  /** Set once the daemon runs: a control socket that cannot be opened stops the start. */
  readonly control: ControlServer | null;
  status(): DaemonStatus;
  health(): { healthy: boolean; problems: string[] };
  /** Feed one AMI message as if it came from the socket (the AMI connection does exactly this). */
  handle(msg: AmiMessage, receivedAt: number): void;
  stop(): Promise<void>;
}

/** Where the health file lives: beside the database, read by `ampere health`. */
export { statusPath, controlSocketPath };

/** What `ampere status` shows (GET /status). Times are epoch ms. */
export interface DaemonStatus {
  pid: number;
  version: string;
  startedAt: number;
  uptimeMs: number;
  db: string;
  socket: string | null;
  metrics: string | null;
  /** malformed: AMI messages skipped as unreadable; merged: blocks put back into a split event; distrusted: forged successes dropped. */
  ami: { state: string; connected: boolean; since: number; host: string; port: number; reconnects: number; malformed: number; merged: number; distrusted: number; securityEventSince: number | null };
  events: { total: number; malformed: number; byKind: Record<string, number>; lastMinute: { total: number; byKind: Record<string, number> } };
  trackedHosts: number;
  /** The WAL checkpointer thread (null: SQLite checkpoints inside commits). */
  checkpointer: { running: boolean; failed: boolean; checkpoints: number; walFrames: number } | null;
  /** Bytes: the process's resident set, and V8's heap (used / reserved). */
  memory: { rss: number; heapUsed: number; heapTotal: number };
  bans: { active: { v4: number; v6: number; total: number }; made: number; lifted: number };
  firewall: { backend: string; chain: string; target: string; inSync: boolean; lastSyncAt: number | null; lastError: string | null; batches: number; verify: ReconcilerState };
  backup: BackupScheduler['state'];
  /** Ban rows not stored yet (retried), and whether database writes fail. */
  storage: StorageState;
  /** The event loop's delay over the last minute (perf_hooks): how long an event can wait. */
  eventLoop: { delayP99Ms: number; delayMaxMs: number };
  /** Fleet mode (null: fleet_url empty). */
  fleet: import('./fleet').FleetStatus | null;
}

const VERSION = (() => {
  try { return String(JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')).version); } catch { return 'unknown'; }
})();

/**
 * Automatic bans are stored together once a burst has passed, not at the end of each loop
 * turn: with twelve attackers at scanner pace (an attempt each every 6.5 ms), committing
 * after the first ban held up the daemon while the others' events were still arriving;
 * traced, an attacker's next attempt then sometimes beat its ban. Attempts bench, twelve
 * attackers at scanner pace: all twelve held to loyalty in 14 of 15 runs with 20 ms, in 4
 * of 10 when committing at the end of each loop turn.
 */
const BAN_COMMIT_DELAY_MS = 20;

/** Never-banned hosts are forgotten after this long; the row cap and ban retention are config. */
const HOST_MAX_AGE_MS = 7 * 86_400_000;
/** How often the database is pruned (in small steps that yield): often enough that a flood of new hosts meets the cap soon. */
const PRUNE_INTERVAL_MS = 10_000;
const PRUNE_AFTER_EVENTS = 10_000;
/** Offending events kept in memory while the history cannot be written. */
const MAX_UNWRITTEN_EVENTS = 100_000;

/** The composition root: AMI -> events -> scoring -> decisions -> store + firewall; control, metrics, backups beside. */
export async function startDaemon(loaded: LoadedConfig, log: Logger): Promise<Daemon> {
  const cfg = loaded.config;
  const t0 = performance.now();
  for (const w of loaded.warnings) log.warn(w);

  // Before anything else, held for life: one daemon per database and per chain.
  const locks = await takeDaemonLocks(cfg.db, cfg.backend === 'dry-run' ? null : cfg.chain);
  const socketPath = controlSocketPath(cfg.db);
  try { await claimSocket(socketPath); } catch (err) { await locks.release(); throw err; }

  // A database file truncated to nothing opens as a new, empty one: said loudly, and the
  // kernel's bans are adopted below instead of being replaced by nothing.
  const emptyDb = (() => { try { return statSync(cfg.db).size === 0; } catch { return false; } })();
  const store = new Store(cfg.db, cfg.history);
  const allow = new AllowList(cfg.allow);
  const fixedAllow: AllowView[] = [
    ...allow.list().map((cidr) => ({ cidr, source: 'builtin' as const, addedAt: null, note: 'loopback' })).slice(0, 2),
    ...cfg.allow.map((c) => ({ cidr: c.text, source: 'config' as const, addedAt: null, note: '' })),
  ];
  // The Asterisk host is never banned; a name is resolved once, at start.
  const amiHosts = canonicalIp(cfg.host)
    ? [canonicalIp(cfg.host)!.address]
    : await lookup(cfg.host, { all: true }).then((r) => r.map((a) => canonicalIp(a.address)?.address).filter((a): a is string => !!a), (err) => {
      log.warn({ host: cfg.host, err: String(err) }, 'AMI host name did not resolve: not added to the allow list');
      return [] as string[];
    });
  for (const address of amiHosts) {
    allow.add(parseCidr(address)!);
    fixedAllow.push({ cidr: address, source: 'ami-host', addedAt: null, note: `the Asterisk host${address === cfg.host ? '' : ` (${cfg.host})`}` });
  }
  for (const row of store.allowList()) { const c = parseCidr(row.cidr); if (c) allow.add(c); }
  const isExempt = (address: string, family: 4 | 6) => allow.matches(address, family) !== undefined;

  let metrics: Metrics | null = null;
  const ipv6 = chooseIpv6(cfg.ipv6);
  if (!ipv6.on && cfg.backend !== 'dry-run') log.warn({ reason: ipv6.reason }, 'IPv6 is off: IPv4 only in the kernel, IPv6 bans are kept in the database only');
  // Kicked by a failed kernel command: repairs the kernel at once instead of at the next check.
  let reconciler: Reconciler | undefined;
  const rawBackend = await createFirewall(cfg.backend, { chain: cfg.chain, target: cfg.target, iptables: cfg.iptables, ipv6: ipv6.on }, log);
  const backend = countingFailures(rawBackend, (op) => { metrics?.firewallFailure(op); reconciler?.kick(); });
  await backend.init();
  const firewall = new FirewallQueue(backend, log);
  // Its one process start (~10-20 ms) happens now, not on the first ban.
  firewall.conntrack?.start();
  // Null prototype: an event kind such as `constructor` or `__proto__` is only a key here.
  // Fleet mode, started below when fleet_url is set: it hears of each local decision (never awaited).
  let fleet: import('./fleet').Fleet | null = null;
  const stats: DaemonStats = { startedAt: Date.now(), events: 0, malformed: 0, byKind: Object.create(null) as Record<string, number>, bans: 0, unbans: 0 };
  const decisions = new Decisions(store, firewall, { bantimeMs: cfg.bantime, factor: cfg.bantime_factor, maxMs: cfg.bantime_max }, log, (what, _address, detail) => {
    if (what === 'ban') { stats.bans++; metrics?.ban(detail); } else { stats.unbans++; metrics?.unban(detail); }
    if (fleet && detail !== 'fleet' && detail !== 'expired') fleet.noteLocal();
  }, BAN_COMMIT_DELAY_MS);
  // Before the kernel is loaded from the database: what the kernel holds that the database
  // lacks (a kill before a commit, a lost database) is stored first, so the load keeps it.
  // After a restore from a backup the kernel follows the restored database: nothing is adopted.
  const restoredFromBackup = takeMarker(restoredMarkerPath(cfg.db));
  if (restoredFromBackup) log.info({ db: cfg.db }, 'database restored from a backup: the kernel follows it, no kernel bans adopted');
  const inKernel = !restoredFromBackup && backend.listBans ? await backend.listBans().catch((err) => { log.error({ err: String(err) }, 'kernel bans not listed: none adopted'); return []; }) : [];
  const adopted = decisions.adopt(inKernel, Date.now(), allow);
  if (emptyDb) log.warn({ db: cfg.db, adopted, inKernel: inKernel.length }, `database ${cfg.db} was empty (0 bytes): started from an empty database, keeping the ${adopted} bans the kernel held`);
  const tRestore = performance.now();
  // Logged the moment the kernel holds every stored ban (unless the load failed: inSync false,
  // and the resync below retries it); the daemon's own set of them, AMI and the control
  // socket come next.
  const { restored, lifted } = await decisions.restore(Date.now(), allow, (bans) => {
    log.info({ bans, ms: Math.round(performance.now() - tRestore), inSync: firewall.healthy, sinceStartMs: Math.round(performance.now() - t0) }, 'bans restored');
  });
  const restoreMs = Math.round(performance.now() - tRestore);
  reconciler = new Reconciler({
    backend, queue: firewall, banned: () => decisions.countByFamily(), endedBy: (f, at) => decisions.countEndedBy(f, at),
    repair: () => decisions.resync(Date.now()), log, onRepair: (what) => metrics?.firewallRepair(what),
  }, cfg.verify_interval);
  const verifier = reconciler;
  const inSync = () => firewall.healthy && !verifier.drifting;
  const hearing = new SecurityHearing();
  // From now on SQLite never holds the event loop for another process's lock: writes that
  // meet one fail at once and are retried (bans, history, expiry).
  store.setBusyTimeout(DAEMON_BUSY_TIMEOUT_MS);
  // WAL checkpoints (an fsync each) run on a worker thread, never inside a ban's commit. Its
  // start (a second isolate, ~90 ms of CPU) waits until the bans are loaded: on two cores it
  // took a core from ipset's loaders.
  store.startCheckpointer({ onError: (err, fatal) => log.error({ err: err.message, fatal }, fatal ? 'WAL checkpointer stopped: SQLite checkpoints inside commits again' : 'WAL checkpoint failed') });

  const penalties = new PenaltyTable({ loyalty: cfg.loyalty, findtimeMs: cfg.findtime, maxHosts: cfg.max_hosts, isExempt });
  const window = new EventWindow();

  const pruner = new Pruner(store.sqlite, { hostMaxAgeMs: HOST_MAX_AGE_MS, maxHostRows: cfg.max_host_rows, banHistoryKeepMs: cfg.ban_history_keep }, { onCommit: () => store.checkpointer?.noteCommit() });
  const prune = () => pruner.run(Date.now()).catch((err) => { log.warn({ err: String(err) }, 'database prune failed'); });

  // Offending events go to the history in batches: one transaction per flush, off the ban path.
  let pending: { event: SecurityEvent; at: number }[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    try {
      store.recordEvents(batch);
      decisions.storeHealth.ok('history');
    } catch (err) {
      // Kept for the next flush, up to a bound: history is worth less than the memory.
      const kept = Math.min(batch.length, Math.max(0, MAX_UNWRITTEN_EVENTS - pending.length));
      pending = batch.slice(batch.length - kept).concat(pending);
      decisions.storeHealth.failed('history', 'event history kept for the next flush', err, { kept, lost: batch.length - kept });
      return;
    }
    // A flood of new hosts meets the row cap within PRUNE_AFTER_EVENTS, not a prune interval later.
    if ((sincePrune += batch.length) >= PRUNE_AFTER_EVENTS) { sincePrune = 0; void prune(); }
  };
  let sincePrune = 0;

  const handle = (msg: AmiMessage, receivedAt: number) => {
    const parsed = toSecurityEvent(msg);
    if (parsed.ok || !parsed.ignored) hearing.heard(receivedAt);
    if (!parsed.ok) {
      if (!parsed.ignored) { stats.malformed++; log.debug({ reason: parsed.reason }, 'malformed security event skipped'); }
      return;
    }
    const e = parsed.event;
    stats.events++;
    stats.byKind[e.kind] = (stats.byKind[e.kind] ?? 0) + 1;
    window.add(e.kind, receivedAt);
    metrics?.event(e.kind, e.service);
    if (decisions.isBanned(e.address)) return;
    const verdict = penalties.observe(e, receivedAt);
    if (verdict.action === 'exempt') return;
    // A host's history is written only once it matters: from its second failure within
    // findtime, or its ban; a spoofed source's lone failure never reaches the disk.
    if (e.severity === 'Error' && !(verdict.action === 'none' && verdict.first)) {
      pending.push({ event: e, at: receivedAt });
      if (pending.length >= 1000) flush();
    }
    if (verdict.action === 'ban') {
      // A host tracked before it was allowed at runtime (`ampere allow add`) is not banned.
      if (isExempt(e.address, e.family)) { penalties.forget(e.address); return; }
      // The arrival on the monotonic clock (receivedAt is wall time, taken when the bytes were parsed).
      const arrived = performance.now() - Math.max(0, Date.now() - receivedAt);
      let res;
      // Logged by Decisions; a database failure must not reach ami-io's parser (it would reconnect).
      try { res = decisions.banFromEvent(e, verdict.failures, Date.now()); } catch { return; }
      if (metrics) {
        const m = metrics;
        void res.applied.then(() => { if (firewall.healthy) m.observeReaction((performance.now() - arrived) / 1000); });
      }
    } else if (verdict.action === 'cleared' && verdict.failures > 0) {
      log.debug({ address: e.address, failures: verdict.failures }, 'penalty cleared by successful auth');
    }
  };

  const ami = new AmiConnection({ host: cfg.host, port: cfg.port, user: cfg.user, pass: cfg.pass, pingIntervalMs: cfg.ami_timeout, pingTimeoutMs: cfg.ami_timeout, connectTimeoutMs: cfg.ami_timeout }, log.child({ module: 'ami' }));
  ami.on('message', handle);
  let amiDown = false;
  ami.on('state', (state: string, detail?: string) => {
    if (state === 'connected') { amiDown = false; hearing.loggedIn(Date.now()); log.info({ ami: detail }, 'ami connected'); }
    else if (state === 'disconnected') {
      // One warning per outage; the retries behind it only at debug.
      if (!amiDown) log.warn({ reason: detail }, 'ami disconnected');
      else log.debug({ reason: detail, reconnects: ami.reconnects }, 'ami still unreachable');
      amiDown = true;
    }
    else if (state === 'login-rejected') log.error({ user: cfg.user, reason: detail }, 'ami login rejected');
    else log.debug({ state, detail }, 'ami state');
    writeStatus();
  });

  const backups = new BackupScheduler(store.sqlite, cfg.backup_dir || null, cfg.backup_interval, cfg.backup_keep, log.child({ module: 'backup' }));
  let control: ControlServer | null = null;
  let metricsServer: Server | null = null;

  const health = () => {
    const problems: string[] = [];
    if (ami.state !== 'connected') problems.push(`not connected to AMI (${ami.state} since ${new Date(ami.since).toISOString()})`);
    if (!firewall.healthy) problems.push(`firewall not in sync${firewall.lastError ? `: ${firewall.lastError}` : ''}`);
    else if (verifier.drifting) problems.push('firewall not in sync: the kernel differs from the database (drift found, repair under way)');
    const deaf = hearing.problem(Date.now(), cfg.user, ami.state === 'connected');
    if (deaf) problems.push(deaf);
    problems.push(...storageProblems(decisions.storage(), Date.now()));
    return { healthy: problems.length === 0, problems };
  };

  const status = (): DaemonStatus => {
    const now = Date.now();
    const active = decisions.countByFamily();
    return {
      pid: process.pid, version: VERSION, startedAt: stats.startedAt, uptimeMs: now - stats.startedAt,
      db: cfg.db, socket: control ? socketPath : null, metrics: metricsServer ? cfg.metrics : null,
      ami: { state: ami.state, connected: ami.state === 'connected', since: ami.since, host: cfg.host, port: cfg.port, reconnects: ami.reconnects, malformed: ami.counts.malformed, merged: ami.counts.merged, distrusted: ami.counts.distrusted, securityEventSince: hearing.firstHeardAt },
      events: { total: stats.events, malformed: stats.malformed, byKind: { ...stats.byKind }, lastMinute: window.lastMinute(now) },
      trackedHosts: penalties.size,
      memory: (({ rss, heapUsed, heapTotal }) => ({ rss, heapUsed, heapTotal }))(process.memoryUsage()),
      checkpointer: store.checkpointer ? (({ running, failed, ticks, lastLogFrames }) => ({ running, failed, checkpoints: ticks, walFrames: lastLogFrames }))(store.checkpointer.stats()) : null,
      bans: { active: { ...active, total: active.v4 + active.v6 }, made: stats.bans, lifted: stats.unbans },
      firewall: { backend: backend.name, chain: cfg.chain, target: cfg.target, inSync: inSync(), lastSyncAt: firewall.lastSyncAt, lastError: firewall.lastError, batches: firewall.batches, verify: { ...verifier.state } },
      backup: { ...backups.state },
      storage: decisions.storage(),
      eventLoop: { delayP99Ms: Math.round(loopDelay.percentile(99) / 1e4) / 100, delayMaxMs: Math.round(loopDelay.max / 1e4) / 100 },
      fleet: fleet?.status() ?? null,
    };
  };

  const statusFile = statusPath(cfg.db);
  const writeStatus = () => {
    const body = JSON.stringify({
      pid: process.pid, updatedAt: Date.now(), startedAt: stats.startedAt,
      amiConnected: ami.state === 'connected', amiState: ami.state, amiSince: ami.since,
      firewallInSync: inSync(), lastSyncAt: firewall.lastSyncAt, lastError: firewall.lastError,
      activeBans: decisions.countByFamily(), trackedHosts: penalties.size, events: stats.events,
      backend: cfg.backend, chain: cfg.chain, socket: control ? socketPath : null,
      lastBackup: backups.state.last,
      // What the status file alone cannot tell (`ampere health` without the socket).
      amiDeaf: hearing.problem(Date.now(), cfg.user, ami.state === 'connected'),
    });
    try { writeFileSync(`${statusFile}.tmp`, body); renameSync(`${statusFile}.tmp`, statusFile); } catch (err) { log.warn({ err: String(err) }, 'status file not written'); }
  };

  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const timers = [
    // The event loop's delay as status shows it: over the last minute or so.
    setInterval(() => loopDelay.reset(), 60_000),
    setInterval(flush, 200),
    setInterval(() => { decisions.expire(Date.now()).catch((err) => log.error({ err: String(err) }, 'expiry failed')); }, 1000),
    setInterval(() => penalties.prune(Date.now()), 30_000),
    setInterval(prune, PRUNE_INTERVAL_MS),
    setInterval(writeStatus, 5_000),
    // A failed kernel batch leaves the kernel unsure: rebuild it from the database, which is the
    // truth (the reconciler does it at once when it runs).
    setInterval(() => { if (!firewall.healthy && !verifier.state.running) decisions.resync(Date.now()).catch((err) => log.error({ err: String(err) }, 'resync failed')); }, 10_000),
  ];

  if (cfg.metrics) {
    // Loaded only when asked for: prom-client alone adds ~60 ms to every start.
    const { Metrics, serveMetrics } = require('./metrics') as typeof import('./metrics');
    metrics = new Metrics({
      activeBans: () => decisions.countByFamily(), trackedHosts: () => penalties.size,
      amiConnected: () => ami.state === 'connected', amiReconnects: () => ami.reconnects, amiMalformed: () => ami.counts.malformed, amiMerged: () => ami.counts.merged, amiDistrusted: () => ami.counts.distrusted, firewallInSync: inSync,
      pendingBanWrites: () => decisions.storage().pending, storeWriteFailures: () => decisions.storage().failures,
    });
    try {
      metricsServer = await serveMetrics(cfg.metrics, metrics, health, log);
      log.info({ listen: cfg.metrics }, 'metrics served on /metrics and /healthz');
    } catch (err) {
      log.error({ err: (err as Error).message }, 'metrics endpoint not started');
    }
  }

  if (cfg.fleet_url) {
    // Loaded only in fleet mode: without fleet_url no fleet code and no pg driver is loaded.
    const { startFleet } = require('./fleet') as typeof import('./fleet');
    const started = startFleet({ cfg, store, decisions, isExempt, log: log.child({ module: 'fleet' }) });
    if (metrics) started.registerMetrics(metrics.registry);
    fleet = started;
  }

  let stopping: Promise<void> | null = null;
  const stop = () => (stopping ??= (async () => {
    ami.stop();
    await fleet?.stop();
    for (const t of timers) clearInterval(t);
    await verifier.stop();
    await control?.close().catch(() => {});
    if (metricsServer) { const srv = metricsServer; await new Promise<void>((r) => { srv.close(() => r()); srv.closeAllConnections(); }); }
    await backups.stop();
    flush();
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

  const controlLog = log.child({ module: 'control' });
  try {
    control = await ControlServer.listen(socketPath, controlRoutes({ store, decisions, penalties, allow, firewall, backups, log: controlLog, fixedAllow, status, health }), controlLog);
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
    socket: control ? socketPath : null, metrics: metricsServer ? cfg.metrics : null, backupDir: backups.state.dir,
  }, 'ampere started');

  return {
    store, decisions, penalties, allow, ami, firewall, stats, backups, pruner,
    get metrics() { return metrics; },
    get control() { return control; },
    status, health, handle, stop,
  };
}

/** True when the file was there; it is removed, so it counts for one start only. */
function takeMarker(path: string): boolean {
  try { unlinkSync(path); return true; } catch { return false; }
}
