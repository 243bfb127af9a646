/**
 * The most heap a full penalty table can take: every host at its worst, one failure short of
 * a ban (loyalty - 1 failure times) and one challenge short (challengeFactor x loyalty - 1
 * challenge times), under the longest key (a full-length IPv6 address). Measured on Node 20,
 * 200,000 such hosts: 274 B a host at loyalty 1, 417 at 3, 752 at 10; so a host costs ~300
 * bytes plus 8 per time kept, rounded up here. test/scoring-heap.test.ts measures a real table
 * against it. A host that authenticated may keep up to successFactor x loyalty - 1 failure
 * times instead: not counted here, since each such host needs a valid credential.
 */
export function tableHeapBytes(maxHosts: number, loyalty: number, challengeFactor = 5): number {
  const times = loyalty - 1 + (challengeFactor * loyalty - 1);
  return maxHosts * (HOST_BASE_BYTES + 8 * times);
}

const HOST_BASE_BYTES = 320;

/**
 * Heap the daemon needs besides the table, out of V8's heap limit: the young generation, which
 * the limit includes (48 MB with Node 20's defaults: --max-old-space-size=256 reports 304 MB),
 * the daemon's modules and buffers (~20 MB), a history batch, a kernel batch in flight, and
 * room for V8 to work in before a collection.
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
 * grows the heap by 1.3x between full collections instead of 4x: measured after 1,000,000
 * spoofed sources, RSS 207 MB with Node's default limit against ~146 MB with 128 or 192.
 */
export const LAUNCH_HEAP_LIMIT_MB = 256;
