import { monitorEventLoopDelay } from 'node:perf_hooks';
import { AmiConnection } from '../ami';
import { SecurityHearing } from '../ami/heard';
import { BackupScheduler } from '../backup';
import type { LoadedConfig } from '../config';
import { statusPath } from '../control/paths';
import { controlRoutes } from '../control/routes';
import type { ControlServer } from '../control/server';
import type { AllowEffects, AllowList } from '../allow';
import type { Decisions } from '../decisions';
import type { FirewallQueue } from '../firewall';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { EventWindow } from '../metrics/window';
import { PenaltyTable } from '../scoring';
import { Pruner, Store } from '../store';
import { openCore } from './core';
import { Jobs, PruneTrigger } from './jobs';
import { startFleetIfSet } from './fleet';
import { EventPipeline } from './pipeline';
import { makeReload, rebuildFirewall, type ReloadResult } from './reload';
import { followAmi, loadCountriesSoon, notifierIfSet, logStarted, openControl, shutdown, startMetrics, type MetricsEndpoint } from './startup';
import { health, LOOP_SAMPLE_MS, logDrift, metricsSources, snapshot, writeStatusFile, type DaemonStats, type DaemonStatus, type StatusParts } from './status';

export type { DaemonStats, DaemonStatus } from './status';
export { ReloadRefused, type ReloadResult } from './reload';

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
  /** SIGHUP and `ampere reload`: re-reads the configuration, applies what it can live. */
  reload(): Promise<ReloadResult>;
  stop(): Promise<void>;
}

/** Never-banned hosts are forgotten after this long; the row cap and ban retention are config. */
const HOST_MAX_AGE_MS = 7 * 86_400_000;

/** The composition root: AMI -> events -> scoring -> decisions -> store + firewall; control, metrics, backups beside. */
export async function startDaemon(loaded: LoadedConfig, log: Logger): Promise<Daemon> {
  const cfg = loaded.config;
  const t0 = performance.now();
  for (const w of loaded.warnings) log.warn(w);
  const core = await openCore(cfg, log, t0);
  const { socketPath, store, allow, backend, firewall, decisions, verifier, stats } = core;
  const notifier = notifierIfSet(cfg, decisions, log);
  const penalties = new PenaltyTable({ loyalty: cfg.loyalty, findtimeMs: cfg.findtime, maxHosts: cfg.max_hosts, isAllowed: (a, f) => allow.allows(a, f) });
  const pruner = new Pruner(store.sqlite, { hostMaxAgeMs: HOST_MAX_AGE_MS, maxHostRows: cfg.max_host_rows, banHistoryKeepMs: cfg.ban_history_keep }, { onCommit: () => store.checkpointer?.noteCommit() });
  const ami = new AmiConnection({ host: cfg.host, port: cfg.port, user: cfg.user, pass: cfg.pass, pingIntervalMs: cfg.ami_timeout, pingTimeoutMs: cfg.ami_timeout, connectTimeoutMs: cfg.ami_timeout }, log.child({ module: 'ami' }));
  const backups = new BackupScheduler({ db: store.sqlite, dir: cfg.backup_dir || null, intervalMs: cfg.backup_interval, keep: cfg.backup_keep, log: log.child({ module: 'backup' }) });
  const hearing = new SecurityHearing();
  const window = new EventWindow();
  const loopDelay = monitorEventLoopDelay({ resolution: LOOP_SAMPLE_MS });
  loopDelay.enable();
  let control: ControlServer | null = null;
  let endpoint: MetricsEndpoint | null = null;
  const parts: StatusParts = {
    cfg, allow, stats, ami, hearing, window, penalties, store, decisions, firewall, backendName: backend.name, verifier, backups, loopDelay,
    socket: () => (control ? socketPath : null), metricsListen: () => (endpoint?.server ? cfg.metrics : null), notifier,
  };
  const writeStatus = () => writeStatusFile(statusPath(cfg.db), parts, log);
  core.drifted.push((found) => logDrift(found, parts, log));

  const served = await startMetrics(loaded, metricsSources(parts), () => health(parts, Date.now()), core, log);
  const { metrics } = served; endpoint = served.endpoint;
  const fleet = startFleetIfSet(cfg, { store, decisions, isAllowed: (a, f) => allow.allows(a, f), log }, metrics);
  parts.fleet = () => fleet?.status() ?? null;

  const prune = new PruneTrigger((now) => pruner.run(now), log);
  const pipeline = new EventPipeline({
    stats, hearing, window, penalties, decisions, firewall, history: store.history, telemetry: metrics, log, onHistoryWritten: (n) => prune.written(n),
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
    notifier?.stop();
    await fleet?.stop();
    await shutdown({ core, log, stopAmi: () => ami.stop(), jobs, control, metricsServer: endpoint?.server ?? null, backups, pipeline, pruner, loopDelay, writeStatus });
  })());

  const status = () => snapshot(parts, Date.now());
  const controlLog = log.child({ module: 'control' });
  const allowEffects: AllowEffects = { activeBans: (now) => store.bans.activeBans(now), unban: (a, now, why) => decisions.unban(a, now, why), forgetWhere: (t) => penalties.forgetWhere(t) };
  const reload = makeReload({ cfg, penalties, decisions, allow, allowEffects, log, backups, moveMetrics: (listen) => served.endpoint.move(cfg.metrics, listen),
    rebuild: rebuildFirewall(backend, decisions) });
  control = await openControl(socketPath, controlRoutes({ store, decisions, penalties, allow, allowEffects, firewall, backups, log: controlLog, status, health: () => health(parts, Date.now()), reload }), controlLog, stop);
  for (const part of [ami, backups, verifier]) part.start();
  writeStatus();
  logStarted(loaded, core, { metrics: parts.metricsListen(), backupDir: backups.state.dir, startMs: Math.round(performance.now() - t0) }, log);
  loadCountriesSoon(cfg.geoip_db, decisions, log);
  return { store, decisions, penalties, allow, ami, pipeline, firewall, stats, backups, pruner, metrics, control, status, health: () => health(parts, Date.now()), reload, stop };
}
