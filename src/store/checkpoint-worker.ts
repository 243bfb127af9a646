import { statSync } from 'node:fs';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { DONE, LOCK, LOG, PRIMED, SEQ, STOP, TICKS, TRUNCATED, WANT, type CheckpointWorkerData } from './checkpoint-slots';

/**
 * The checkpoint worker (see Checkpointer): its own connection to the same file, PASSIVE
 * checkpoints on a timer or when woken. It blocks in Atomics.wait between ticks (no timers), so
 * the daemon's thread can wake it, and stop it synchronously (Store.close() is synchronous).
 */
function run(data: CheckpointWorkerData): void {
  const ctl = new Int32Array(data.ctl);
  const o = data.opts;
  const msg = (err: unknown) => String((err as Error | undefined)?.message ?? err);
  const conn: { db: Database.Database | null } = { db: null };
  try {
    // Opening and preparing read the database: under LOCK too, or a forced RESTART on the
    // daemon's thread that runs meanwhile finds a reader and is busy for nothing.
    const tick = withLock(ctl, () => ticker((conn.db = open(data)), ctl, data));
    let seq = Atomics.load(ctl, SEQ);
    let failures = 0;
    while (Atomics.load(ctl, STOP) === 0) {
      // The daemon's thread checkpointing, or about to (a forced RESTART): skip this tick.
      if (Atomics.load(ctl, WANT) === 0 && Atomics.compareExchange(ctl, LOCK, 0, 1) === 0) {
        try {
          tick();
          failures = 0;
        } catch (err) {
          if (++failures >= 3) throw err;
          parentPort!.postMessage({ type: 'error', fatal: false, message: msg(err) });
        } finally {
          Atomics.store(ctl, LOCK, 0);
          Atomics.notify(ctl, LOCK);
        }
      }
      Atomics.wait(ctl, SEQ, seq, o.intervalMs);
      seq = Atomics.load(ctl, SEQ);
    }
  } catch (err) {
    parentPort!.postMessage({ type: 'error', fatal: true, message: msg(err) });
  } finally {
    try { conn.db?.close(); } catch { /* closed */ }
    Atomics.store(ctl, DONE, 1);
    Atomics.notify(ctl, DONE);
  }
}

/** Runs fn holding LOCK as the worker (1), waiting (blocking this thread only) while the daemon's thread holds it. */
function withLock<T>(ctl: Int32Array, fn: () => T): T {
  for (;;) {
    const holder = Atomics.compareExchange(ctl, LOCK, 0, 1);
    if (holder === 0) break;
    Atomics.wait(ctl, LOCK, holder, 50);
  }
  try {
    return fn();
  } finally {
    Atomics.store(ctl, LOCK, 0);
    Atomics.notify(ctl, LOCK);
  }
}

function open(data: CheckpointWorkerData): Database.Database {
  const db = new Database(data.path, { fileMustExist: true });
  // Never wait: the daemon's commits come first; a busy checkpoint is tried again next tick.
  db.pragma('busy_timeout = 0');
  db.pragma('synchronous = NORMAL');
  db.pragma(`cache_size = ${data.cacheSize}`);
  const mode = db.pragma('journal_mode', { simple: true });
  if (mode !== 'wal') throw new Error(`database is not in WAL mode (${String(mode)})`);
  return db;
}

/** One tick: copy what other connections committed since the last one. */
function ticker(db: Database.Database, ctl: Int32Array, data: CheckpointWorkerData): () => void {
  const o = data.opts;
  const ckpt = (m: string) => (db.pragma(`wal_checkpoint(${m})`) as { busy: number; log: number; checkpointed: number }[])[0];
  const walBytes = () => { try { return statSync(`${data.path}-wal`).size; } catch { return 0; } };
  const wanted = () => Atomics.load(ctl, WANT) !== 0;
  const dataVersion = db.prepare('PRAGMA data_version').pluck();
  const userVersion = db.prepare('PRAGMA user_version').pluck();
  // The first commit into an empty or just restarted log writes the log's header and fsyncs it
  // (even with synchronous=NORMAL); the worker makes that commit, one that changes nothing, so
  // the daemon's next one (a ban) does not pay for it.
  const prime = () => {
    if (!o.prime || wanted()) return;
    try { db.pragma(`user_version = ${Number(userVersion.get())}`); Atomics.add(ctl, PRIMED, 1); }
    catch (err) { if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw err; } // the daemon was writing: its commit starts the log over
  };
  let seen: unknown = -1;
  let idleDone = false;
  return () => {
    // data_version changes when another connection commits. Nothing new: nothing to copy (but,
    // once, give the space of a big -wal file back).
    const version = dataVersion.get();
    if (version === seen) {
      if (!idleDone && walBytes() > o.truncateAboveBytes) {
        if (ckpt('TRUNCATE').busy !== 0) return; // the daemon was writing, or a reader: next tick
        Atomics.add(ctl, TRUNCATED, 1);
        prime();
      }
      idleDone = true;
      return;
    }
    seen = version;
    idleDone = false;
    // A pass copies the log as it found it; commits during the pass are not in it. More passes
    // until one finds nothing new: the next commit then starts the log over instead of growing
    // it. A reader on an older snapshot keeps frames from being copied: next tick.
    let r = ckpt('PASSIVE');
    let settled = false;
    for (let pass = 1; pass < o.maxPasses && r.busy === 0 && r.checkpointed === r.log && !wanted(); pass++) {
      const prev = r.log;
      r = ckpt('PASSIVE');
      if (r.log === prev) { settled = r.checkpointed === r.log; break; }
    }
    if (settled) prime();
    Atomics.store(ctl, LOG, r.log);
    Atomics.add(ctl, TICKS, 1);
  };
}

if (!isMainThread && parentPort) run(workerData as CheckpointWorkerData);
