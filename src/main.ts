import { writeFileSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { AmiConnection, type AmiMessage } from './ami';
import { describeConfig, type LoadedConfig } from './config';
import { Decisions } from './decisions';
import { toSecurityEvent, type SecurityEvent } from './events';
import { createFirewall, FirewallQueue } from './firewall';
import type { Logger } from './log';
import { AllowList, parseCidr } from './net/cidr';
import { canonicalIp } from './net/ip';
import { PenaltyTable } from './scoring';
import { Store } from './store';

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
  /** Feed one AMI message as if it came from the socket (the AMI connection does exactly this). */
  handle(msg: AmiMessage, receivedAt: number): void;
  stop(): Promise<void>;
}

/** Where the health file lives: beside the database, read by `ampere health`. */
export const statusPath = (db: string) => join(dirname(db), 'ampere.status.json');

/** The composition root: AMI -> events -> scoring -> decisions -> store + firewall. */
export async function startDaemon(loaded: LoadedConfig, log: Logger): Promise<Daemon> {
  const cfg = loaded.config;
  const t0 = performance.now();
  for (const w of loaded.warnings) log.warn(w);

  const store = new Store(cfg.db, cfg.history);
  const allow = new AllowList(cfg.allow);
  const amiHost = canonicalIp(cfg.host);
  if (amiHost) allow.add(parseCidr(amiHost.address)!);
  for (const row of store.allowList()) { const c = parseCidr(row.cidr); if (c) allow.add(c); }
  const isExempt = (address: string, family: 4 | 6) => allow.matches(address, family) !== undefined;

  const backend = await createFirewall(cfg.backend, { chain: cfg.chain, target: cfg.target, iptables: cfg.iptables }, log);
  await backend.init();
  const firewall = new FirewallQueue(backend, log);
  const stats: DaemonStats = { startedAt: Date.now(), events: 0, malformed: 0, byKind: {}, bans: 0, unbans: 0 };
  const decisions = new Decisions(store, firewall, { bantimeMs: cfg.bantime, factor: cfg.bantime_factor, maxMs: cfg.bantime_max }, log, (what) => {
    if (what === 'ban') stats.bans++; else stats.unbans++;
  });
  const tRestore = performance.now();
  const { restored, lifted } = await decisions.restore(Date.now(), isExempt);
  const restoreMs = Math.round(performance.now() - tRestore);

  const penalties = new PenaltyTable({ loyalty: cfg.loyalty, findtimeMs: cfg.findtime, maxHosts: cfg.max_hosts, isExempt });

  // Offending events go to the history in batches: one transaction per flush, off the ban path.
  let pending: { event: SecurityEvent; at: number }[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    try { store.recordEvents(batch); } catch (err) { log.error({ err: String(err), lost: batch.length }, 'event history write failed'); }
  };

  const handle = (msg: AmiMessage, receivedAt: number) => {
    const parsed = toSecurityEvent(msg);
    if (!parsed.ok) {
      if (!parsed.ignored) { stats.malformed++; log.debug({ reason: parsed.reason }, 'malformed security event skipped'); }
      return;
    }
    const e = parsed.event;
    stats.events++;
    stats.byKind[e.kind] = (stats.byKind[e.kind] ?? 0) + 1;
    if (decisions.isBanned(e.address)) return;
    const verdict = penalties.observe(e, receivedAt);
    if (verdict.action === 'exempt') return;
    if (e.severity === 'Error') {
      pending.push({ event: e, at: receivedAt });
      if (pending.length >= 1000) flush();
    }
    if (verdict.action === 'ban') {
      decisions.banFromEvent(e, verdict.failures, Date.now());
    } else if (verdict.action === 'cleared' && verdict.failures > 0) {
      log.debug({ address: e.address, failures: verdict.failures }, 'penalty cleared by successful auth');
    }
  };

  const ami = new AmiConnection({ host: cfg.host, port: cfg.port, user: cfg.user, pass: cfg.pass, pingIntervalMs: cfg.ami_timeout, pingTimeoutMs: cfg.ami_timeout, connectTimeoutMs: cfg.ami_timeout }, log.child({ module: 'ami' }));
  ami.on('message', handle);
  let amiDown = false;
  ami.on('state', (state: string, detail?: string) => {
    if (state === 'connected') { amiDown = false; log.info({ ami: detail }, 'ami connected'); }
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

  const statusFile = statusPath(cfg.db);
  const writeStatus = () => {
    const body = JSON.stringify({
      pid: process.pid, updatedAt: Date.now(), startedAt: stats.startedAt,
      amiConnected: ami.state === 'connected', amiState: ami.state, amiSince: ami.since,
      firewallInSync: firewall.healthy, lastSyncAt: firewall.lastSyncAt, lastError: firewall.lastError,
      activeBans: decisions.countByFamily(), trackedHosts: penalties.size, events: stats.events,
      backend: cfg.backend, chain: cfg.chain,
    });
    try { writeFileSync(`${statusFile}.tmp`, body); renameSync(`${statusFile}.tmp`, statusFile); } catch (err) { log.warn({ err: String(err) }, 'status file not written'); }
  };

  const timers = [
    setInterval(flush, 200),
    setInterval(() => { decisions.expire(Date.now()).catch((err) => log.error({ err: String(err) }, 'expiry failed')); }, 1000),
    setInterval(() => penalties.prune(Date.now()), 30_000),
    setInterval(() => { try { store.pruneHosts(Date.now() - 7 * 86_400_000); } catch (err) { log.warn({ err: String(err) }, 'host prune failed'); } }, 3_600_000),
    setInterval(writeStatus, 5_000),
    // A failed kernel batch leaves the kernel unsure: rebuild it from the database, which is the truth.
    setInterval(() => { if (!firewall.healthy) decisions.resync(Date.now()).catch((err) => log.error({ err: String(err) }, 'resync failed')); }, 10_000),
  ];

  ami.start();
  writeStatus();
  log.info({
    config: describeConfig(cfg), configFile: loaded.file, sources: loaded.sources, backend: backend.name, chain: cfg.chain,
    bansRestored: restored, bansLiftedAllowed: lifted, restoreMs, startMs: Math.round(performance.now() - t0),
  }, 'ampere started');

  let stopping: Promise<void> | null = null;
  const stop = () => (stopping ??= (async () => {
    ami.stop();
    for (const t of timers) clearInterval(t);
    flush();
    await firewall.idle();
    await backend.shutdown();
    writeStatus();
    store.close();
    log.info({ bansInKernel: decisions.activeCount }, 'ampere stopped; bans stay in the kernel');
  })());

  return { store, decisions, penalties, allow, ami, firewall, stats, handle, stop };
}
