import { mkdirSync, readdirSync, renameSync, rmSync, statSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import type { Logger } from '../log';

/** ampere-20250101T120000Z.db (UTC, sortable); -2, -3 ... when two fall in the same second. */
const NAME = /^ampere-(\d{8}T\d{6}Z)(?:-(\d+))?\.db$/;

export function backupName(at: number, n = 1): string {
  const stamp = new Date(at).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `ampere-${stamp}${n > 1 ? `-${n}` : ''}.db`;
}

/** Backups in a directory, newest first (by the time in their name). */
export function listBackups(dir: string): { name: string; path: string; at: number }[] {
  let names: string[];
  try { names = readdirSync(dir); } catch { return []; }
  const out: { name: string; path: string; at: number; n: number }[] = [];
  for (const name of names) {
    const m = NAME.exec(name);
    if (!m) continue;
    const s = m[1];
    const at = Date.UTC(+s.slice(0, 4), +s.slice(4, 6) - 1, +s.slice(6, 8), +s.slice(9, 11), +s.slice(11, 13), +s.slice(13, 15));
    out.push({ name, path: join(dir, name), at, n: Number(m[2] ?? 1) });
  }
  return out.sort((a, b) => b.at - a.at || b.n - a.n).map(({ name, path, at }) => ({ name, path, at }));
}

export interface BackupResult {
  path: string;
  bytes: number;
  activeBans: number;
  bans: number;
  hosts: number;
  at: number;
  ms: number;
}

/**
 * Checks the copy off the main thread (a big database would otherwise stall the event loop):
 * makes it one self-contained file (journal_mode DELETE, so no -wal beside it), runs
 * quick_check and counts what it holds.
 */
const VERIFY = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
try {
  const db = new Database(workerData.path, { fileMustExist: true });
  try {
    db.pragma('journal_mode = DELETE');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new Error('quick_check of the copy: ' + check);
    const n = (sql) => db.prepare(sql).get().n;
    parentPort.postMessage({ ok: true,
      activeBans: n('SELECT count(*) AS n FROM bans WHERE lifted_at IS NULL AND (until IS NULL OR until > ' + Number(workerData.now) + ')'),
      bans: n('SELECT count(*) AS n FROM bans'), hosts: n('SELECT count(*) AS n FROM hosts') });
  } finally { db.close(); }
} catch (err) { parentPort.postMessage({ ok: false, error: String(err && err.message || err) }); }
`;

function verifyCopy(path: string, now: number): Promise<{ activeBans: number; bans: number; hosts: number }> {
  return new Promise((resolvePromise, reject) => {
    const w = new Worker(VERIFY, { eval: true, workerData: { path, now, module: require.resolve('better-sqlite3') } });
    w.once('message', (m: { ok: boolean; error?: string; activeBans: number; bans: number; hosts: number }) => {
      if (m.ok) resolvePromise({ activeBans: m.activeBans, bans: m.bans, hosts: m.hosts }); else reject(new Error(m.error));
    });
    w.once('error', reject);
    w.once('exit', (code) => { if (code !== 0) reject(new Error(`backup check exited with ${code}`)); });
  });
}

/**
 * An online, consistent copy of the live database through SQLite's backup API, on the daemon's
 * own connection (so its writes during the copy go into the copy too, and the copy never
 * restarts under a flood). Written as .partial, checked, then renamed: a file with the final
 * name is always a complete, checked backup.
 */
export async function backupDatabase(db: Database.Database, dir: string, now = Date.now()): Promise<BackupResult> {
  const t0 = performance.now();
  const target = resolve(dir);
  mkdirSync(target, { recursive: true, mode: 0o700 });
  let n = 1;
  let path = join(target, backupName(now, n));
  while (existsSync(path) || existsSync(`${path}.partial`)) path = join(target, backupName(now, ++n));
  const partial = `${path}.partial`;
  try {
    await db.backup(partial);
    const counts = await verifyCopy(partial, now);
    renameSync(partial, path);
    return { path, bytes: statSync(path).size, ...counts, at: now, ms: Math.round(performance.now() - t0) };
  } catch (err) {
    for (const f of [partial, `${partial}-wal`, `${partial}-shm`, `${partial}-journal`]) rmSync(f, { force: true });
    throw err;
  }
}

/** Keep the newest `keep` backups of the directory; returns the files removed. */
export function pruneBackups(dir: string, keep: number): string[] {
  const old = listBackups(dir).slice(keep);
  for (const b of old) rmSync(b.path, { force: true });
  return old.map((b) => b.path);
}

export interface BackupState {
  dir: string | null;
  intervalMs: number;
  keep: number;
  last: { at: number; path: string; bytes?: number; ms?: number } | null;
  lastError: { at: number; message: string } | null;
  nextAt: number | null;
  running: boolean;
}

/** Timers cannot wait longer than this (about 24.8 days); longer waits are chained. */
const MAX_TIMER = 2 ** 31 - 1;

export interface BackupSchedulerOptions {
  /** The daemon's connection: backups are taken through it (SQLite's online backup). */
  db: Database.Database;
  /** Where backups go; null: none scheduled (the operator's `ampere backup` still works). */
  dir: string | null;
  intervalMs: number;
  /** Backups kept; older ones are removed. */
  keep: number;
  log: Logger;
}

/**
 * Scheduled backups into `dir` every `intervalMs`, keeping the newest `keep`. The schedule
 * continues from the newest backup already there, so a restart neither skips nor repeats one.
 * Also runs the operator's `ampere backup` (one backup at a time).
 */
export class BackupScheduler {
  readonly state: BackupState;
  private timer: NodeJS.Timeout | null = null;
  private current: Promise<BackupResult> | null = null;
  private stopped = false;
  /** Moves with each reconfigure: a backup that started before one does not schedule the next. */
  private generation = 0;

  private readonly db: Database.Database;
  private readonly log: Logger;

  constructor({ db, dir, intervalMs, keep, log }: BackupSchedulerOptions) {
    this.db = db;
    this.log = log;
    this.state = { dir: dir ? resolve(dir) : null, intervalMs, keep, last: null, lastError: null, nextAt: null, running: false };
    if (this.state.dir) {
      const newest = listBackups(this.state.dir)[0];
      if (newest) this.state.last = { at: newest.at, path: newest.path };
    }
  }

  start(now = Date.now()): void {
    if (!this.state.dir) return;
    // Soon after start when the newest backup is due (or there is none), else when it falls due.
    const due = this.state.last ? this.state.last.at + this.state.intervalMs : now;
    this.schedule(Math.max(due, now + 5_000));
  }

  private schedule(at: number): void {
    if (this.stopped) return;
    this.state.nextAt = at;
    const wait = Math.max(0, at - Date.now());
    this.timer = setTimeout(() => {
      if (Date.now() < at) return this.schedule(at); // a chained long wait
      void this.scheduled();
    }, Math.min(wait, MAX_TIMER));
    this.timer.unref();
  }

  /**
   * A reload: the directory, interval and count apply from now, the next backup counted from
   * the newest one in the (new) directory. A backup under way finishes where it started.
   */
  reconfigure({ dir, intervalMs, keep }: Pick<BackupSchedulerOptions, 'dir' | 'intervalMs' | 'keep'>, now = Date.now()): void {
    if (this.stopped) return;
    this.generation++;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    Object.assign(this.state, { dir: dir ? resolve(dir) : null, intervalMs, keep, nextAt: null, last: null });
    const newest = this.state.dir ? listBackups(this.state.dir)[0] : undefined;
    if (newest) this.state.last = { at: newest.at, path: newest.path };
    this.start(now);
  }

  private async scheduled(): Promise<void> {
    const dir = this.state.dir!;
    const generation = this.generation;
    try {
      const r = await this.backupNow(dir);
      const removed = pruneBackups(dir, this.state.keep);
      this.log.info({ path: r.path, bytes: r.bytes, activeBans: r.activeBans, ms: r.ms, removed: removed.length }, 'scheduled backup written');
    } catch (err) {
      this.log.error({ err: (err as Error).message, dir }, 'scheduled backup failed');
    }
    // A reload meanwhile has made its own schedule.
    if (generation === this.generation) this.schedule(Date.now() + this.state.intervalMs);
  }

  /** One backup now (into dir, default the configured one); waits for one already running. */
  async backupNow(dir?: string): Promise<BackupResult> {
    const target = dir ?? this.state.dir;
    if (!target) throw new Error('no backup directory: pass one, or set AMPERE_BACKUP_DIR');
    while (this.current) await this.current.catch(() => {});
    this.state.running = true;
    this.current = backupDatabase(this.db, target);
    try {
      const r = await this.current;
      this.state.last = { at: r.at, path: r.path, bytes: r.bytes, ms: r.ms };
      return r;
    } catch (err) {
      this.state.lastError = { at: Date.now(), message: (err as Error).message };
      throw err;
    } finally {
      this.current = null;
      this.state.running = false;
    }
  }

  /** Stop the schedule; waits for a backup in progress (the database closes after). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.state.nextAt = null;
    if (this.current) await this.current.catch(() => {});
  }
}
