import { USAGE_OF } from './usage';
import { readFileSync } from 'node:fs';
import { listBackups } from '../backup';
import { statusPath } from '../control/paths';
import type { Config } from '../config';
import { formatDuration } from '../config/duration';
import type { DaemonStatus } from '../daemon';
import { ago, formatSpan, formatTable, formatTime, iso, printJson } from './table';
import { askOrOffline, config, EXIT, note, openOffline, parse, refusal } from './common';

const USAGE = USAGE_OF['status'];

/** `ampere status`: the running daemon at a glance. Without a daemon: what the database says, exit 1. */
export async function statusCommand(args: string[]): Promise<number> {
  const { values } = parse('status', args, { json: { type: 'boolean' } }, { min: 0, max: 0, usage: USAGE });
  const cfg = config();
  const res = await askOrOffline<DaemonStatus>(cfg, 'GET', '/status');
  if (res && res.status !== 200) throw refusal(res);
  if (!res) return printOffline(cfg, values.json === true);
  const s = res.body;
  if (values.json) {
    printJson({
      running: true, ...s, startedAt: iso(s.startedAt),
      ami: { ...s.ami, since: iso(s.ami.since) },
      firewall: { ...s.firewall, lastSyncAt: iso(s.firewall.lastSyncAt), verify: s.firewall.verify && { ...s.firewall.verify, lastDrift: s.firewall.verify.lastDrift && { ...s.firewall.verify.lastDrift, at: iso(s.firewall.verify.lastDrift.at) } } },
      backup: { ...s.backup, last: s.backup.last ? { ...s.backup.last, at: iso(s.backup.last.at) } : null, nextAt: iso(s.backup.nextAt), lastError: s.backup.lastError ? { ...s.backup.lastError, at: iso(s.backup.lastError.at) } : null },
    });
    return EXIT.ok;
  }
  const now = Date.now();
  const kinds = [...new Set([...Object.keys(s.events.byKind), ...Object.keys(s.events.lastMinute.byKind)])].sort();
  process.stdout.write(kv([
    ['daemon', `running, pid ${s.pid}, version ${s.version}, up ${formatSpan(s.uptimeMs)} (since ${formatTime(s.startedAt)})`],
    ['ami', `${s.ami.state} since ${formatTime(s.ami.since)} (${ago(s.ami.since, now)}), ${s.ami.host}:${s.ami.port}, ${s.ami.reconnects} reconnects, ${s.ami.malformed ?? 0} unreadable messages skipped, ${s.ami.merged ?? 0} split-event blocks merged, ${s.ami.distrusted ?? 0} forged successes dropped`],
    ['tracked hosts', String(s.trackedHosts)],
    ['memory', s.memory ? `${mb(s.memory.rss)} MB resident, heap ${mb(s.memory.heapUsed)} of ${mb(s.memory.heapTotal)} MB` : '-'],
    ...(s.policy ? [['ban policy', policyLine(s.policy)] as [string, string]] : []),
    ['active bans', `${s.bans.active.total} (IPv4 ${s.bans.active.v4}, IPv6 ${s.bans.active.v6}); since start ${s.bans.made} made, ${s.bans.lifted} lifted`],
    ['firewall', `${s.firewall.backend}, chain ${s.firewall.chain}, target ${s.firewall.target}, ${s.firewall.inSync ? 'in sync' : 'NOT IN SYNC'}`],
    ...(s.firewall.leftOutFull ? [['full sets', `a set reached set_size ${s.firewall.setSize}: ${s.firewall.leftOutFull} bans left out of the kernel since start (each load counts again); raise set_size`] as [string, string]] : []),
    ['last sync', s.firewall.lastSyncAt ? `${formatTime(s.firewall.lastSyncAt)} (${ago(s.firewall.lastSyncAt, now)})` : 'never'],
    ...(s.firewall.lastError ? [['last error', s.firewall.lastError] as [string, string]] : []),
    ...(s.firewall.verify ? verifyRows(s.firewall.verify, now) : []),
    ['last backup', s.backup.last ? `${formatTime(s.backup.last.at)} (${ago(s.backup.last.at, now)}) ${s.backup.last.path}` : 'none'],
    ['backups', s.backup.dir ? `every ${formatSpan(s.backup.intervalMs)} into ${s.backup.dir}, keep ${s.backup.keep}${s.backup.nextAt ? `, next ${formatTime(s.backup.nextAt)}` : ''}` : 'off (AMPERE_BACKUP_DIR)'],
    ...(s.backup.lastError ? [['backup error', `${formatTime(s.backup.lastError.at)} ${s.backup.lastError.message}`] as [string, string]] : []),
    ['metrics', s.metrics ? `http://${s.metrics}/metrics` : 'off (AMPERE_METRICS)'],
    ['notifications', s.notify ? `${s.notify.url}: ${s.notify.delivered} delivered, ${s.notify.failed} given up, ${s.notify.dropped} dropped, ${s.notify.queued} queued` : 'off (AMPERE_NOTIFY_URL)'],
    ['database', s.db],
    ['ban rows', !s.storage ? '-' : `${s.storage.pending} pending${s.storage.oldestPendingSince !== null ? ` (oldest since ${formatTime(s.storage.oldestPendingSince)})` : ''}; writes ${s.storage.failingSince !== null ? `FAILING since ${formatTime(s.storage.failingSince)}: ${s.storage.lastError}` : 'ok'}, ${s.storage.failures} failed since start`],
    ['event loop', s.eventLoop ? `delay p99 ${s.eventLoop.delayP99Ms} ms, max ${s.eventLoop.delayMaxMs} ms (last minute)` : '-'],
    ['wal checkpoints', !s.checkpointer ? 'inside commits (no checkpointer thread)' : s.checkpointer.failed ? 'checkpointer FAILED: SQLite checkpoints inside commits again' : `worker thread ${s.checkpointer.running ? 'running' : 'stopped'}, ${s.checkpointer.checkpoints} passes, log at ${s.checkpointer.walFrames} frames`],
    ['events', `${s.events.total} total, ${s.events.lastMinute.total} in the last minute, ${s.events.malformed} malformed`],
    ...(s.fleet ? fleetRows(s.fleet, now) : []),
  ]));
  if (kinds.length) {
    process.stdout.write('\n' + formatTable(kinds, [
      { header: 'EVENT', get: (k) => k },
      { header: 'LAST MINUTE', get: (k) => s.events.lastMinute.byKind[k] ?? 0, right: true },
      { header: 'TOTAL', get: (k) => s.events.byKind[k] ?? 0, right: true },
    ]));
  }
  return EXIT.ok;
}

/** "ban after 3 failures within 10m; bans 1h, x4 for each repeat, at most 30d; 5 allow entries". */
export function policyLine(p: DaemonStatus['policy']): string {
  const length = p.bantimeMs === 0 ? 'bans never expire'
    : `bans ${formatSpan(p.bantimeMs)}${p.bantimeFactor > 1 ? `, x${p.bantimeFactor} for each repeat, at most ${formatSpan(p.bantimeMaxMs)}` : ''}`;
  return `ban after ${p.loyalty} failure${p.loyalty === 1 ? '' : 's'} within ${formatSpan(p.findtimeMs)}; ${length}; ${p.allowEntries} allow entr${p.allowEntries === 1 ? 'y' : 'ies'}`;
}

/** The kernel checks: how often, how many repairs, the last drift found. */
function verifyRows(v: DaemonStatus['firewall']['verify'], now: number): [string, string][] {
  if (!v.running) return [['firewall check', v.intervalMs <= 0 ? 'off (AMPERE_VERIFY_INTERVAL=0)' : 'off (nothing to check with this backend)']];
  const d = v.lastDrift;
  return [
    ['firewall check', `drift repaired within ${formatDuration(v.intervalMs)}; ${v.checks} checks, ${v.repairs} repairs`],
    ['last drift', d ? `${d.what} at ${formatTime(d.at)} (${ago(d.at, now)}), ${d.repairMs === null ? 'NOT repaired' : `repaired in ${d.repairMs} ms`}` : 'none'],
  ];
}

/** Fleet mode: connection, cursor, outbox, traffic, peers. */
function fleetRows(f: NonNullable<DaemonStatus['fleet']>, now: number): [string, string][] {
  const refused = Object.entries(f.refused).map(([why, n]) => `${n} ${why}`).join(', ') || 'none';
  const peers = Object.entries(f.peers).map(([origin, at]) => `${origin} (${ago(at, now)})`).join(', ') || 'none yet';
  return [
    ['fleet', `${f.connected ? 'connected' : `NOT CONNECTED${f.lastError ? ` (${f.lastError})` : ''}`}${f.since ? ` since ${formatTime(f.since)}` : ''}, ${f.url}, as ${f.origin}${f.role && f.role !== f.origin ? ` (ROLE ${f.role})` : ''}`],
    ['fleet outbox', `${f.outbox.backlog} waiting, ${f.published} published since start${f.publishedEarly ? ` (${f.publishedEarly} early)` : ''}${f.lastOut ? `; last out ${f.lastOut.action} ${f.lastOut.address} ${ago(f.lastOut.at, now)}` : ''}`],
    ['fleet in', `${f.received} applied, refused: ${refused}${f.lastIn ? `; last ${f.lastIn.action} ${f.lastIn.address} from ${f.lastIn.origin} ${ago(f.lastIn.at, now)}` : ''}${f.lagMs !== null ? `, lag ${f.lagMs} ms` : ''}; cursor xid ${f.cursor}`],
    ['fleet peers', peers],
  ];
}

/** Aligned "key: value" lines. */
function kv(rows: [string, string][]): string {
  const w = Math.max(...rows.map(([k]) => k.length)) + 1;
  return rows.map(([k, v]) => `${`${k}:`.padEnd(w)} ${v}`).join('\n') + '\n';
}

function offlineStatus(cfg: Config) {
  const { db, backup_dir: backupDir } = cfg;
  let lastStatusAt: number | null = null;
  try { lastStatusAt = JSON.parse(readFileSync(statusPath(db), 'utf8')).updatedAt ?? null; } catch { /* never ran */ }
  let activeBans: { v4: number; v6: number } | null = null;
  try {
    const store = openOffline(cfg);
    try {
      let v6 = 0;
      const all = store.bans.activeBans(Date.now());
      for (const b of all) if (b.family === 6) v6++;
      activeBans = { v4: all.length - v6, v6 };
    } finally { store.close(); }
  } catch { /* no database */ }
  const newest = backupDir ? listBackups(backupDir)[0] : undefined;
  return { lastStatusAt, activeBans, lastBackup: newest ? { at: newest.at, path: newest.path } : null };
}

const mb = (bytes: number) => (bytes / 1048576).toFixed(1);

/** No daemon answers: what the status file and the database still say. */
function printOffline(cfg: Config, json: boolean): number {
  const offline = offlineStatus(cfg);
  if (json) printJson({ running: false, lastStatusAt: iso(offline.lastStatusAt), activeBans: offline.activeBans, lastBackup: offline.lastBackup ? { at: iso(offline.lastBackup.at), path: offline.lastBackup.path } : null });
  else {
    note('ampere: the daemon is not running');
    process.stdout.write(kv([
      ['daemon', 'not running'],
      ['last seen', offline.lastStatusAt ? `${formatTime(offline.lastStatusAt)} (${ago(offline.lastStatusAt)})` : 'never'],
      ['active bans', offline.activeBans === null ? '-' : `${offline.activeBans.v4 + offline.activeBans.v6} (IPv4 ${offline.activeBans.v4}, IPv6 ${offline.activeBans.v6})`],
      ['last backup', offline.lastBackup ? `${formatTime(offline.lastBackup.at)} ${offline.lastBackup.path}` : 'none'],
    ]));
  }
  return EXIT.fail;
}
