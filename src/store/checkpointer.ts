import { closeSync, openSync, readSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { DONE, FORCED, LOCK, LOG, PRIMED, SEQ, SLOTS, STOP, TICKS, TRUNCATED, WANT, type CheckpointWorkerData } from './checkpoint-slots';
import { CACHE_SIZE, isMemory } from './open';

/**
 * The daemon's WAL checkpointer: a worker thread with its own connection checkpoints, so
 * no commit on the daemon's thread (a ban) pays a checkpoint's fsync. See Checkpointer.
 */
export interface CheckpointerOptions {
  /** A checkpoint at least this often (ms); with no commit since the last one, a tick costs one PRAGMA. */
  intervalMs?: number;
  /** Wake the worker early after this many commits of the hot paths (0: the interval only). */
  wakeEveryCommits?: number;
  /** Nothing committed since the last tick and the -wal file bigger than this: TRUNCATE it. */
  truncateAboveBytes?: number;
  /**
   * The bound of the -wal file, in frames (pages). A log that never starts over (commits
   * without a pause as long as a checkpoint pass, or a reader holding it) and grows past
   * this: the daemon's thread runs a RESTART between two events (see Checkpointer.restart).
   */
  forceAboveFrames?: number;
  /** PASSIVE passes per tick at most, while commits keep coming in during them. */
  maxPasses?: number;
  /** Start the log over with the worker's own empty commit (the header's fsync off the daemon's thread). */
  prime?: boolean;
  /** How long close() waits for the worker to let go of the database. */
  stopTimeoutMs?: number;
  /** A failure (reported, never thrown); after a fatal one the connection checkpoints automatically again. */
  onError?: (err: Error, fatal: boolean) => void;
}

export interface CheckpointerStats {
  /** Ticks that ran a checkpoint (ticks with nothing committed since the last are not counted). */
  ticks: number;
  /** RESTARTs run on the daemon's thread because the log grew past forceAboveFrames. */
  forced: number;
  /** Of those, the ones a reader kept from finishing (busy). */
  forcedBusy: number;
  /** Forced RESTARTs not run: the worker's checkpoint pass did not end within RESTART_WAIT_MS (a very slow disk). */
  forceLockTimeouts: number;
  /** Idle TRUNCATEs that gave the -wal file's space back. */
  truncated: number;
  /** Logs started over by the worker's own (empty) commit instead of the daemon's next one. */
  primed: number;
  /** Frames in the log at the worker's last tick (the `log` of wal_checkpoint). */
  lastLogFrames: number;
  running: boolean;
  failed: boolean;
}

/** The worker's module beside this one: checkpoint-worker.js in dist/, checkpoint-worker.ts from the sources. */
const WORKER_FILE = join(__dirname, `checkpoint-worker${extname(__filename)}`);

/** Starts the worker; from the sources (tests, under tsx) it registers tsx's CommonJS loader first, which a thread does not inherit. */
function startWorker(workerData: CheckpointWorkerData): Worker {
  if (!WORKER_FILE.endsWith('.ts')) return new Worker(WORKER_FILE, { workerData, execArgv: [] });
  return new Worker(`require('tsx/cjs'); require(${JSON.stringify(WORKER_FILE)});`, { eval: true, workerData, execArgv: [] });
}

const DEFAULTS: Required<Omit<CheckpointerOptions, 'onError'>> = {
  intervalMs: 1000,
  wakeEveryCommits: 200,
  truncateAboveBytes: 4 << 20,
  forceAboveFrames: 10_000,
  maxPasses: 5,
  prime: true,
  stopTimeoutMs: 5000,
};

/** Commits between two looks at the log's length on the daemon's thread (one 20-byte read). */
const LENGTH_CHECK_EVERY = 32;
/** How long a forced RESTART waits (without blocking: timers) for the worker's pass to end. */
const RESTART_WAIT_MS = 2000;
/** After a forced RESTART found a reader in the way, the next try waits this long. */
const BUSY_BACKOFF_MS = 1000;
/** The WAL-index (-shm) header's version field (https://sqlite.org/walformat.html, 2.1). */
const WALINDEX_VERSION = 3007000;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * WAL checkpoints off the daemon's thread. SQLite's automatic checkpoint runs inside whichever
 * commit takes the log past 1000 pages, with fsyncs, and on the daemon that commit is a ban on
 * its way to the kernel. Here the connection's automatic checkpoint is off and a worker thread
 * with its own connection copies the log into the database instead (PASSIVE: never blocks a
 * writer). The worker does not keep the process alive; stop() (Store.close()) ends it and runs
 * a last checkpoint. If the worker fails, the connection checkpoints automatically again and
 * onError hears of it. Other processes' connections (CLI commands) keep SQLite's automatic
 * checkpoint; what they write is copied by the worker's next tick as well.
 */
export class Checkpointer {
  private readonly ctl = new Int32Array(new SharedArrayBuffer(SLOTS * 4));
  private readonly worker: Worker;
  private readonly opts: Required<Omit<CheckpointerOptions, 'onError'>>;
  private readonly onError: (err: Error, fatal: boolean) => void;
  private readonly shmPath: string;
  private shmFd: number | null = null;
  private readonly shmHead = Buffer.alloc(20);
  private readonly busyTimeout: number;
  private commits = 0;
  private restartPending = false;
  private notBefore = 0;
  private busyReported = false;
  private forcedBusy = 0;
  private forceLockTimeouts = 0;
  private stopped = false;
  private failed = false;

  constructor(path: string, private readonly db: Database.Database, opts: CheckpointerOptions = {}) {
    const given = Object.entries(opts).filter(([k, v]) => v !== undefined && k in DEFAULTS);
    this.opts = { ...DEFAULTS, ...Object.fromEntries(given) } as typeof this.opts;
    this.onError = opts.onError ?? ((err: Error) => process.emitWarning(err.message, 'AmpereCheckpointWarning'));
    this.shmPath = `${resolve(path)}-shm`;
    this.busyTimeout = db.pragma('busy_timeout', { simple: true }) as number;
    const o = this.opts;
    const workerData: CheckpointWorkerData = {
      path: resolve(path), ctl: this.ctl.buffer as SharedArrayBuffer, cacheSize: CACHE_SIZE,
      opts: { intervalMs: o.intervalMs, truncateAboveBytes: o.truncateAboveBytes, maxPasses: o.maxPasses, prime: o.prime },
    };
    this.worker = startWorker(workerData);
    this.worker.on('message', (m: { type: string; fatal?: boolean; message?: string }) => {
      if (m.type === 'error') this.fail(new Error(`WAL checkpointer: ${m.message}`), m.fatal === true);
    });
    this.worker.on('error', (err) => this.fail(err, true));
    this.worker.on('exit', (code) => { if (!this.stopped && !this.failed) this.fail(new Error(`WAL checkpointer exited (code ${code})`), true); });
    // After the listeners: a 'message' listener refs the worker again.
    this.worker.unref();
    db.pragma('wal_autocheckpoint = 0');
  }

  private fail(err: Error, fatal: boolean): void {
    if (fatal && !this.failed) {
      this.failed = true;
      // Without the worker SQLite checkpoints in commits again: slower bans, a bounded log.
      if (this.db.open && !this.stopped) this.db.pragma('wal_autocheckpoint = 1000');
    }
    this.onError(err, fatal);
  }

  /**
   * After a commit of the hot paths (each ban, each event batch): every wakeEveryCommits the
   * worker checkpoints without waiting for its timer; every LENGTH_CHECK_EVERY a look at the
   * log's length, which past forceAboveFrames means the log is not starting over.
   */
  noteCommit(): void {
    if (this.failed || this.stopped) return;
    this.commits++;
    if (this.opts.wakeEveryCommits > 0 && this.commits % this.opts.wakeEveryCommits === 0) this.wake();
    if (this.commits % LENGTH_CHECK_EVERY !== 0 || this.restartPending) return;
    if (this.logFrames() > this.opts.forceAboveFrames && Date.now() >= this.notBefore) this.requestRestart();
  }

  /**
   * Frames in the log now. SQLite keeps the count (mxFrame) in the WAL-index header at the
   * start of the -shm file (https://sqlite.org/walformat.html, 2.1: version at 0, isInit at
   * 12, mxFrame at 16, native byte order); one pread of 20 bytes, no lock, no checkpoint. The
   * size of the -wal file would not do: it keeps its size when the log starts over. Falls back
   * to the worker's count at its last tick when the header does not look right.
   */
  logFrames(): number {
    try {
      this.shmFd ??= openSync(this.shmPath, 'r');
      if (readSync(this.shmFd, this.shmHead, 0, 20, 0) === 20) {
        const h = this.shmHead;
        const u32 = (o: number) => (LITTLE_ENDIAN ? h.readUInt32LE(o) : h.readUInt32BE(o));
        if (u32(0) === WALINDEX_VERSION && h[12] === 1) return u32(16);
      }
    } catch { /* no -shm (yet): the worker's count */ }
    return Atomics.load(this.ctl, LOG);
  }

  /**
   * The bound for a log that PASSIVE cannot keep short (commits without a pause, or a reader
   * holding it): a RESTART on the writer's own connection, between two events. SQLite lets one
   * connection checkpoint at a time, so first the worker is asked to step aside (WANT: it ends
   * its tick after the current pass and starts none); this thread never waits for it, it looks
   * again every few ms (timers) until the lock is free, for at most RESTART_WAIT_MS. Then the
   * RESTART copies the little left to copy and lets the next commit start the log over: about
   * one old automatic checkpoint on this thread, once per forceAboveFrames frames written
   * instead of once per 1000. It never waits for readers: one in another process makes it
   * busy (reported once), tried again after BUSY_BACKOFF_MS.
   */
  private requestRestart(): void {
    this.restartPending = true;
    Atomics.store(this.ctl, WANT, 1);
    const deadline = Date.now() + RESTART_WAIT_MS;
    const attempt = () => {
      if (this.stopped || this.failed || !this.db.open) return this.endRestart();
      if (Atomics.compareExchange(this.ctl, LOCK, 0, 2) === 0) return this.restart();
      if (Date.now() > deadline) {
        // The worker's pass does not end (a very slow disk): later.
        this.forceLockTimeouts++;
        this.notBefore = Date.now() + BUSY_BACKOFF_MS;
        return this.endRestart();
      }
      setTimeout(attempt, 2).unref();
    };
    // After the current event: its ban is in the kernel already, its commit done.
    setImmediate(attempt);
  }

  private endRestart(): void {
    Atomics.store(this.ctl, WANT, 0);
    this.restartPending = false;
    this.wake();
  }

  /** With LOCK held (2). */
  private restart(): void {
    let r = { busy: 1, log: -1 };
    try {
      this.db.pragma('busy_timeout = 0');
      r = (this.db.pragma('wal_checkpoint(RESTART)') as { busy: number; log: number }[])[0];
    } catch (err) {
      this.onError(new Error(`WAL checkpoint (forced): ${(err as Error).message}`), false);
    } finally {
      if (this.db.open) this.db.pragma(`busy_timeout = ${this.busyTimeout}`);
      Atomics.store(this.ctl, LOCK, 0);
      Atomics.notify(this.ctl, LOCK);
    }
    Atomics.add(this.ctl, FORCED, 1);
    if (r.busy) { this.forcedBusy++; this.notBefore = Date.now() + BUSY_BACKOFF_MS; }
    // Once per episode: it is tried again every BUSY_BACKOFF_MS while the reader stays.
    if (r.busy && !this.busyReported) this.onError(new Error(`WAL checkpoint (forced) busy: the log holds ${r.log} frames, a reader keeps it from starting over`), false);
    this.busyReported = r.busy !== 0;
    this.endRestart();
  }

  /** Checkpoint now (on the worker). */
  wake(): void {
    Atomics.add(this.ctl, SEQ, 1);
    Atomics.notify(this.ctl, SEQ);
  }

  stats(): CheckpointerStats {
    const c = this.ctl;
    return {
      ticks: Atomics.load(c, TICKS), forced: Atomics.load(c, FORCED), forcedBusy: this.forcedBusy, forceLockTimeouts: this.forceLockTimeouts, truncated: Atomics.load(c, TRUNCATED), primed: Atomics.load(c, PRIMED),
      lastLogFrames: Atomics.load(c, LOG), running: !this.stopped && !this.failed && Atomics.load(c, DONE) === 0, failed: this.failed,
    };
  }

  /**
   * Stop the worker and wait (synchronously, bounded) until it has closed its connection; then
   * a last TRUNCATE checkpoint on the caller's connection, so a cleanly stopped daemon leaves
   * an empty -wal even when another process still has the database open.
   */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    Atomics.store(this.ctl, STOP, 1);
    this.wake();
    if (!this.failed) Atomics.wait(this.ctl, DONE, 0, this.opts.stopTimeoutMs);
    void this.worker.terminate().catch(() => {});
    if (this.shmFd !== null) { try { closeSync(this.shmFd); } catch { /* closed */ } this.shmFd = null; }
    if (!this.db.open) return;
    try {
      this.db.pragma('busy_timeout = 1000');
      const r = (this.db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number; log: number }[])[0];
      if (r.busy) this.onError(new Error(`WAL checkpoint at close busy: ${r.log} frames left in the log (a reader in another process)`), false);
    } catch (err) {
      this.onError(new Error(`WAL checkpoint at close: ${(err as Error).message}`), false);
    }
  }
}

/** The daemon's checkpointer, or null for databases without a file. */
export function startCheckpointer(path: string, db: Database.Database, opts: CheckpointerOptions = {}): Checkpointer | null {
  return isMemory(path) ? null : new Checkpointer(path, db, opts);
}
