/** Slots of the Int32Array the daemon's thread and the checkpoint worker share (checkpointer.ts, checkpoint-worker.ts). */
export const SEQ = 0; // bumped to wake the worker
export const STOP = 1; // 1: finish and close
export const DONE = 2; // 1: the worker closed its connection (or never opened one)
export const TICKS = 3;
export const FORCED = 4;
export const TRUNCATED = 5;
export const LOG = 6;
export const PRIMED = 7;
export const LOCK = 8; // who checkpoints: 0 nobody, 1 the worker, 2 the daemon's thread (SQLite allows one at a time)
export const WANT = 9; // 1: the daemon's thread waits for LOCK; the worker ends its tick early
export const SLOTS = 10;

/** What the worker is started with. */
export interface CheckpointWorkerData {
  path: string;
  ctl: SharedArrayBuffer;
  cacheSize: number;
  opts: { intervalMs: number; truncateAboveBytes: number; maxPasses: number; prime: boolean };
}
