import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IntervalHistogram } from 'node:perf_hooks';
import type { AmiConnection } from '../ami';
import type { SecurityHearing } from '../ami/heard';
import type { BackupScheduler } from '../backup';
import type { Config } from '../config';
import type { Decisions, StorageState } from '../decisions';
import { storageProblems } from '../decisions/pending';
import type { FirewallQueue } from '../firewall';
import { execStats } from '../firewall/exec';
import { setFullStats } from '../firewall/set-full';
import type { Reconciler, ReconcilerState } from '../firewall/reconciler';
import type { Logger } from '../log';
import type { MetricsSources } from '../metrics';
import type { EventWindow } from '../metrics/window';
import type { PenaltyTable } from '../scoring';
import type { Store } from '../store';
import type { NotifyState } from '../notify';

/** The daemon's own tallies since start. byKind has a null prototype: an event kind is only a key. */
export interface DaemonStats {
  startedAt: number;
  events: number;
  malformed: number;
  byKind: Record<string, number>;
  bans: number;
  unbans: number;
}

export function newStats(now: number): DaemonStats {
  return { startedAt: now, events: 0, malformed: 0, byKind: Object.create(null) as Record<string, number>, bans: 0, unbans: 0 };
}

/**
 * The one picture of a running daemon: `GET /status` answers it, `ampere status` prints it, and
 * the status file holds it (with `updatedAt`) for `ampere health` without the socket. Times are epoch ms.
 */
export interface DaemonStatus {
  pid: number;
  version: string;
  startedAt: number;
  uptimeMs: number;
  db: string;
  socket: string | null;
  metrics: string | null;
  /**
   * malformed: AMI messages skipped as unreadable; merged: blocks put back into a split event;
   * distrusted: forged successes dropped; deaf: the health problem when no security event is heard.
   */
  ami: { state: string; connected: boolean; since: number; host: string; port: number; reconnects: number; malformed: number; merged: number; distrusted: number; securityEventSince: number | null; deaf: string | null };
  events: { total: number; malformed: number; byKind: Record<string, number>; lastMinute: { total: number; byKind: Record<string, number> } };
  trackedHosts: number;
  /** The WAL checkpointer thread (null: SQLite checkpoints inside commits). */
  checkpointer: { running: boolean; failed: boolean; checkpoints: number; walFrames: number } | null;
  /** Bytes: the process's resident set, and V8's heap (used / reserved). */
  memory: { rss: number; heapUsed: number; heapTotal: number };
  bans: { active: { v4: number; v6: number; total: number }; made: number; lifted: number };
  /** The ban policy in force (a reload changes it): bantimeMs 0 bans forever; allowEntries counts every source. */
  policy: BanPolicy;
  firewall: { backend: string; chain: string; target: string; setSize: number; leftOutFull: number; inSync: boolean; lastSyncAt: number | null; lastError: string | null; batches: number; verify: ReconcilerState };
  backup: BackupScheduler['state'];
  /** Ban rows not stored yet (retried), and whether database writes fail. */
  storage: StorageState;
  /** The event loop's delay over the last minute (perf_hooks): how long an event can wait. */
  eventLoop: { delayP99Ms: number; delayMaxMs: number };
  /** The webhook (its URL without secrets) and its counts since start; null when notify_url is empty. */
  notify?: ({ url: string } & NotifyState) | null;
  /** Fleet mode (null: fleet_url empty). */
  fleet: import('../fleet').FleetStatus | null;
}

export interface BanPolicy { loyalty: number; findtimeMs: number; bantimeMs: number; bantimeFactor: number; bantimeMaxMs: number; allowEntries: number }

/** What the status file adds: when it was written (a stale file means a dead daemon). */
export type StatusFile = DaemonStatus & { updatedAt: number };

export const VERSION = (() => {
  try { return String(JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')).version); } catch { return 'unknown'; }
})();

/** The running parts a status is read from. */
export interface StatusParts {
  /** The running configuration: a reload writes the keys it applies into it. */
  cfg: Pick<Config, 'db' | 'host' | 'port' | 'user' | 'chain' | 'target' | 'set_size' | 'metrics' | 'loyalty' | 'findtime' | 'bantime' | 'bantime_factor' | 'bantime_max'>;
  allow: { entries(): unknown[] };
  stats: DaemonStats;
  ami: Pick<AmiConnection, 'state' | 'since' | 'reconnects' | 'counts'>;
  hearing: SecurityHearing;
  window: EventWindow;
  penalties: Pick<PenaltyTable, 'size'>;
  store: Pick<Store, 'checkpointer'>;
  decisions: Pick<Decisions, 'countByFamily' | 'storage'>;
  firewall: Pick<FirewallQueue, 'healthy' | 'lastSyncAt' | 'lastError' | 'batches'>;
  backendName: string;
  verifier: Pick<Reconciler, 'state' | 'drifting'>;
  backups: Pick<BackupScheduler, 'state'>;
  loopDelay: IntervalHistogram;
  /** Null until the control socket (or the metrics endpoint) listens. */
  socket(): string | null;
  metricsListen(): string | null;
  notifier?: { shownUrl: string; state: NotifyState } | null;
  /** Fleet mode's status, once started (absent or null: no fleet). */
  fleet?(): import('../fleet').FleetStatus | null;
}

/** The firewall is in sync when no batch failed since the last load and the last check found no drift. */
export const inSync = (p: Pick<StatusParts, 'firewall' | 'verifier'>) => p.firewall.healthy && !p.verifier.drifting;

const deafness = (p: StatusParts, now: number) => p.hearing.problem(now, p.cfg.user, p.ami.state === 'connected');

export function snapshot(p: StatusParts, now: number): DaemonStatus {
  const { cfg, stats, ami, firewall } = p;
  const active = p.decisions.countByFamily();
  const cp = p.store.checkpointer?.stats();
  const { rss, heapUsed, heapTotal } = process.memoryUsage();
  return {
    pid: process.pid, version: VERSION, startedAt: stats.startedAt, uptimeMs: now - stats.startedAt,
    db: cfg.db, socket: p.socket(), metrics: p.metricsListen(),
    ami: {
      state: ami.state, connected: ami.state === 'connected', since: ami.since, host: cfg.host, port: cfg.port, reconnects: ami.reconnects,
      malformed: ami.counts.malformed, merged: ami.counts.merged, distrusted: ami.counts.distrusted, securityEventSince: p.hearing.firstHeardAt, deaf: deafness(p, now),
    },
    events: { total: stats.events, malformed: stats.malformed, byKind: { ...stats.byKind }, lastMinute: p.window.lastMinute(now) },
    trackedHosts: p.penalties.size,
    memory: { rss, heapUsed, heapTotal },
    checkpointer: cp ? { running: cp.running, failed: cp.failed, checkpoints: cp.ticks, walFrames: cp.lastLogFrames } : null,
    bans: { active: { ...active, total: active.v4 + active.v6 }, made: stats.bans, lifted: stats.unbans },
    policy: {
      loyalty: cfg.loyalty, findtimeMs: cfg.findtime, bantimeMs: cfg.bantime, bantimeFactor: cfg.bantime_factor, bantimeMaxMs: cfg.bantime_max,
      allowEntries: p.allow.entries().length,
    },
    firewall: { backend: p.backendName, chain: cfg.chain, target: cfg.target, setSize: cfg.set_size, leftOutFull: setFullStats.leftOut, inSync: inSync(p), lastSyncAt: firewall.lastSyncAt, lastError: firewall.lastError, batches: firewall.batches, verify: { ...p.verifier.state } },
    backup: { ...p.backups.state },
    storage: p.decisions.storage(),
    eventLoop: { delayP99Ms: lateMs(p.loopDelay.percentile(99)), delayMaxMs: lateMs(p.loopDelay.max) },
    fleet: p.fleet?.() ?? null,
    notify: p.notifier ? { url: p.notifier.shownUrl, ...p.notifier.state } : null,
  };
}

/** Healthy = connected to AMI, hearing security events, the firewall in sync, the database writable. */
export function health(p: StatusParts, now: number): { healthy: boolean; problems: string[] } {
  const { ami, firewall } = p;
  const problems: string[] = [];
  if (ami.state !== 'connected') problems.push(`not connected to AMI (${ami.state} since ${new Date(ami.since).toISOString()})`);
  if (!firewall.healthy) problems.push(`firewall not in sync${firewall.lastError ? `: ${firewall.lastError}` : ''}`);
  else if (p.verifier.drifting) problems.push('firewall not in sync: the kernel differs from the database (drift found, repair under way)');
  const deaf = deafness(p, now);
  if (deaf) problems.push(deaf);
  problems.push(...storageProblems(p.decisions.storage(), now));
  return { healthy: problems.length === 0, problems };
}

/** Replaces the status file in one rename, so a reader never sees half of it; a failure is logged, never thrown. */
export function writeStatusFile(path: string, p: StatusParts, log: Pick<Logger, 'warn'>): void {
  const now = Date.now();
  const body: StatusFile = { ...snapshot(p, now), updatedAt: now };
  try { writeFileSync(`${path}.tmp`, JSON.stringify(body)); renameSync(`${path}.tmp`, path); } catch (err) { log.warn({ err: String(err) }, 'status file not written'); }
}

/** What the Prometheus gauges read when scraped: the same parts the status is read from. */
export function metricsSources(p: StatusParts): MetricsSources {
  const { ami, decisions } = p;
  return {
    activeBans: () => decisions.countByFamily(), trackedHosts: () => p.penalties.size, firewallInSync: () => inSync(p),
    amiConnected: () => ami.state === 'connected', amiReconnects: () => ami.reconnects, amiMalformed: () => ami.counts.malformed, amiMerged: () => ami.counts.merged, amiDistrusted: () => ami.counts.distrusted,
    pendingBanWrites: () => decisions.storage().pending, storeWriteFailures: () => decisions.storage().failures,
    notify: () => p.notifier?.state ?? null, firewallProcesses: () => execStats.runs, firewallSetFull: () => setFullStats.leftOut,
  };
}

/** Health's verdict the moment drift is found, before the repair: it failed while the kernel was known wrong. */
export function logDrift(found: unknown, p: StatusParts, log: Pick<Logger, 'info'>): void {
  const h = health(p, Date.now());
  log.info({ drift: found, inSync: inSync(p), healthy: h.healthy, problems: h.problems }, 'firewall drift found; repairing');
}

/** The event loop is sampled every LOOP_SAMPLE_MS; a sample's time beyond that is the delay. */
export const LOOP_SAMPLE_MS = 10;

/** A histogram value (ns between two samples) as the delay beyond the sampling period, in ms. */
export function lateMs(ns: number): number {
  return Math.max(0, Math.round((ns / 1e6 - LOOP_SAMPLE_MS) * 100) / 100);
}
