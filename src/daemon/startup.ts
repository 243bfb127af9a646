import { hostname } from 'node:os';
import { statSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AmiConnection } from '../ami';
import type { SecurityHearing } from '../ami/heard';
import { describeConfig, type Config, type LoadedConfig } from '../config';
import { restoredMarkerPath } from '../control/paths';
import type { AllowCheck } from '../allow';
import type { Decisions } from '../decisions';
import type { FirewallBackend, FirewallQueue } from '../firewall';
import type { Logger } from '../log';
import type { Metrics, MetricsSources } from '../metrics';
import type { IntervalHistogram } from 'node:perf_hooks';
import type { Core } from './core';
import { ControlServer, type ControlHandler } from '../control/server';

/** A database file truncated to nothing opens as a new, empty one: said loudly at start. */
export function isEmptyFile(path: string): boolean {
  try { return statSync(path).size === 0; } catch { return false; }
}

/** True when the file was there; it is removed, so it counts for one start only. */
export function takeMarker(path: string): boolean {
  try { unlinkSync(path); return true; } catch { return false; }
}

export interface LoadParts {
  db: string;
  emptyDb: boolean;
  backend: FirewallBackend;
  firewall: FirewallQueue;
  decisions: Decisions;
  allow: AllowCheck;
  log: Logger;
  /** performance.now() when the start began. */
  t0: number;
}

/**
 * Brings the kernel and the database to one set of bans at start. First what the kernel holds
 * that the database lacks (a kill before a commit, a lost database) is stored, so the load keeps
 * it; after a restore from a backup the kernel follows the restored database instead.
 */
export async function loadBans(p: LoadParts): Promise<{ restored: number; lifted: number; restoreMs: number }> {
  const { log, decisions } = p;
  const restoredFromBackup = takeMarker(restoredMarkerPath(p.db));
  if (restoredFromBackup) log.info({ db: p.db }, 'database restored from a backup: the kernel follows it, no kernel bans adopted');
  // The listing may be read as adopt iterates it: a failure anywhere adopts nothing (rows are made after).
  const fromKernel = async () => decisions.adopt(!restoredFromBackup && p.backend.listBans ? await p.backend.listBans() : [], Date.now(), p.allow);
  const { adopted, listed } = await fromKernel()
    .catch((err: unknown) => { log.error({ err: String(err) }, 'kernel bans not listed: none adopted'); return { adopted: 0, listed: 0 }; });
  if (p.emptyDb) log.warn({ db: p.db, adopted, inKernel: listed }, `database ${p.db} was empty (0 bytes): started from an empty database, keeping the ${adopted} bans the kernel held`);
  const tRestore = performance.now();
  // Logged the moment the kernel holds every stored ban (unless the load failed: inSync false,
  // and the resync job retries it); the daemon's own set of them, AMI and the control socket come next.
  const { restored, lifted } = await decisions.restore(Date.now(), p.allow, (bans) => {
    log.info({ bans, ms: Math.round(performance.now() - tRestore), inSync: p.firewall.healthy, sinceStartMs: Math.round(performance.now() - p.t0) }, 'bans restored');
  });
  return { restored, lifted, restoreMs: Math.round(performance.now() - tRestore) };
}

/** Logs the AMI connection's states (one warning per outage) and restarts the security-event wait at each login. */
export function followAmi(ami: AmiConnection, hearing: SecurityHearing, user: string, log: Logger, onState: () => void): void {
  let down = false;
  ami.on('state', (state: string, detail?: string) => {
    if (state === 'connected') { down = false; hearing.loggedIn(Date.now()); log.info({ ami: detail }, 'ami connected'); }
    else if (state === 'disconnected') {
      if (!down) log.warn({ reason: detail }, 'ami disconnected');
      else log.debug({ reason: detail, reconnects: ami.reconnects }, 'ami still unreachable');
      down = true;
    }
    else if (state === 'login-rejected') log.error({ user, reason: detail }, 'ami login rejected');
    else log.debug({ state, detail }, 'ami state');
    onState();
  });
}

/**
 * The Prometheus metrics, subscribed to bans, unbans, failed kernel commands and repairs; loaded only when asked for (prom-client is costly to load, so never on
 * a start without them). A listen that fails is logged; the daemon runs on without the endpoint.
 */
export async function startMetrics(
  loaded: LoadedConfig, sources: MetricsSources, health: () => { healthy: boolean; problems: string[] }, core: Core, log: Logger,
): Promise<{ metrics: Metrics | null; endpoint: MetricsEndpoint }> {
  const listen = loaded.config.metrics;
  if (!listen) return { metrics: null, endpoint: new MetricsEndpoint(null, null, health, log) };
  const { Metrics, serveMetrics } = require('../metrics') as typeof import('../metrics');
  const metrics = new Metrics(sources);
  // What happened before they were loaded is in the daemon's own stats only.
  core.decisions.onChange((what, _address, detail) => { if (what === 'ban') metrics.ban(detail); else metrics.unban(detail); });
  core.firewall.subscribe({ failed: (op) => metrics.firewallFailure(op) });
  core.repaired.push((what) => metrics.firewallRepair(what));
  try {
    const server = await serveMetrics(listen, metrics, health, log);
    log.info({ listen }, 'metrics served on /metrics and /healthz');
    return { metrics, endpoint: new MetricsEndpoint(server, metrics, health, log) };
  } catch (err) {
    log.error({ err: (err as Error).message }, 'metrics endpoint not started');
    return { metrics, endpoint: new MetricsEndpoint(null, metrics, health, log) };
  }
}

/** The metrics endpoint's server: opened at the start, moved by a reload, closed at the stop. */
export class MetricsEndpoint {
  constructor(
    public server: Server | null,
    private readonly metrics: Metrics | null,
    private readonly health: () => { healthy: boolean; problems: string[] },
    private readonly log: Logger,
  ) {}

  /**
   * A reload's new address: the old endpoint is closed first (the new address may share its
   * port), then the new one opened; if it cannot listen, the old address is opened again.
   * False when nothing moved (no endpoint, or the new address refused).
   */
  async move(from: string, to: string): Promise<boolean> {
    if (!this.metrics || !this.server) return false;
    const { serveMetrics } = require('../metrics') as typeof import('../metrics');
    await closeServer(this.server);
    try {
      this.server = await serveMetrics(to, this.metrics, this.health, this.log);
      this.log.info({ listen: to, was: from }, 'metrics endpoint moved');
      return true;
    } catch (err) {
      this.log.error({ listen: to, err: (err as Error).message }, 'metrics endpoint cannot listen there');
      this.server = await serveMetrics(from, this.metrics, this.health, this.log).catch(() => null);
      return false;
    }
  }
}

/** Closes an HTTP server and every connection it holds. */
export function closeServer(srv: Server | null): Promise<void> {
  if (!srv) return Promise.resolve();
  return new Promise<void>((r) => { srv.close(() => r()); srv.closeAllConnections(); });
}

export interface ShutdownParts {
  core: Core;
  log: Logger;
  stopAmi(): void;
  jobs: { stop(): void };
  control: { close(): Promise<void> } | null;
  metricsServer: Server | null;
  backups: { stop(): Promise<void> };
  pipeline: { flush(): void };
  pruner: { stop(): Promise<void> };
  loopDelay: IntervalHistogram;
  writeStatus(): void;
}

/** The daemon's stop, in order: inputs first, then what holds unwritten work, the kernel's bans left in place. */
export async function shutdown(p: ShutdownParts): Promise<void> {
  const { core, log } = p;
  p.stopAmi();
  p.jobs.stop();
  await core.verifier.stop();
  await p.control?.close().catch(() => {});
  await closeServer(p.metricsServer);
  await p.backups.stop();
  p.pipeline.flush();
  await p.pruner.stop();
  await core.firewall.idle();
  const unstored = core.decisions.close();
  if (unstored > 0) log.error({ unstored }, 'bans not stored at stop: the kernel keeps them, and the next start adopts them');
  p.loopDelay.disable();
  core.conntrack?.close();
  await core.backend.shutdown();
  p.writeStatus();
  core.store.close();
  await core.locks.release();
  log.info({ bansInKernel: core.decisions.activeCount }, 'ampere stopped; bans stay in the kernel');
}

/** The start's one line: the effective config, where it came from, and how long the start and the restore took. */
export function logStarted(loaded: LoadedConfig, core: Core, extra: { metrics: string | null; backupDir: string | null; startMs: number }, log: Logger): void {
  const cfg = loaded.config;
  log.info({
    config: describeConfig(cfg), configFile: loaded.file, sources: loaded.sources, backend: core.backend.name, chain: cfg.chain,
    bansRestored: core.restore.restored, bansLiftedAllowed: core.restore.lifted, restoreMs: core.restore.restoreMs, startMs: extra.startMs,
    socket: core.socketPath, metrics: extra.metrics, backupDir: extra.backupDir,
  }, 'ampere started');
}

/**
 * The country database for the ban log line, opened on the turn after the start (about 40 ms
 * under load, see docs/notes/measurements.md): never on the start's or a ban's path. A file that
 * fails now (it opened when the configuration was read) costs the country, not the daemon.
 */
/** The webhook notifier, loaded only when notify_url is set: a daemon without it loads no HTTPS client. */
export function notifierIfSet(cfg: Config, decisions: Decisions, log: Logger): import('../notify').Notifier | null {
  if (!cfg.notify_url) return null;
  const { notifyChanges } = require('../notify') as typeof import('../notify');
  return notifyChanges(cfg, decisions, hostname(), log.child({ module: 'notify' }));
}

export function loadCountriesSoon(geoipDb: string, decisions: Pick<Decisions, 'countryOf'>, log: Logger): void {
  setImmediate(() => {
    try {
      // Required here: maxmind is not loaded on the start's path.
      const { countryLookup } = require('../geoip') as typeof import('../geoip');
      decisions.countryOf = countryLookup(geoipDb);
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'country database not loaded: ban lines go without a country');
    }
  });
}

/** The control socket. Fatal when it cannot open: a daemon no command can reach (or a second one beside it) must not run. */
export async function openControl(socketPath: string, routes: ControlHandler, log: Logger, stop: () => Promise<void>): Promise<ControlServer> {
  try {
    return await ControlServer.listen(socketPath, routes, log);
  } catch (err) {
    await stop();
    throw new Error(`control socket ${socketPath} not opened: ${(err as Error).message}`);
  }
}
