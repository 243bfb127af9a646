/**
 * The most heap a full penalty table can take: every host at its worst, one failure short of
 * a ban (loyalty - 1 failure times) and one challenge short (challengeFactor x loyalty - 1
 * challenge times), under the longest key (a full-length IPv6 address): a base per host plus
 * 8 bytes per time kept, rounded up from what a real table takes (docs/notes/measurements.md,
 * Heap; test/scoring-heap.test.ts holds a real table to it). A host that authenticated may keep up to successFactor x loyalty - 1 failure
 * times instead: not counted here, since each such host needs a valid credential.
 */
export function tableHeapBytes(maxHosts: number, loyalty: number, challengeFactor = 5): number {
  const times = loyalty - 1 + (challengeFactor * loyalty - 1);
  return maxHosts * (HOST_BASE_BYTES + 8 * times);
}

const HOST_BASE_BYTES = 320;

/**
 * Heap the daemon needs besides the table, out of V8's heap limit: the young generation (which
 * the limit includes), the daemon's modules and buffers, a history batch, a kernel batch in
 * flight, and room for V8 to work in before a collection (docs/notes/measurements.md, Heap).
 */
export const HEAP_RESERVE_BYTES = 112 * 1024 * 1024;

/** The largest max_hosts whose worst-case table fits a heap limit, next to the reserve. */
export function maxHostsFor(heapLimitBytes: number, loyalty: number, challengeFactor = 5): number {
  return Math.max(0, Math.floor((heapLimitBytes - HEAP_RESERVE_BYTES) / tableHeapBytes(1, loyalty, challengeFactor)));
}

/**
 * The heap limit (--max-old-space-size) Ampere's launchers give the daemon: `npm start` and
 * docker/entrypoint.sh (which leaves it to NODE_OPTIONS when those set one). It holds the
 * default table (200,000 hosts) at its worst with room to spare, and at or below 256 MB V8
 * grows the heap less between full collections, which keeps RSS lower under a flood of
 * spoofed sources (docs/notes/measurements.md, Heap).
 */
export const LAUNCH_HEAP_LIMIT_MB = 256;

/**
 * The young generation's semi-space (--max-semi-space-size) the launchers give the daemon, so
 * the heap limit above means the same on every Node: 16 MB is Node 20's default; Node 24 (the
 * image's) would make it 64 MB at this limit, a 448 MB heap in all, and a 1M-ban catch-up then
 * held ~360 MB resident instead of ~200 (docs/notes/measurements.md, Heap).
 */
export const LAUNCH_SEMI_SPACE_MB = 16;
