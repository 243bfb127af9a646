/**
 * Run with `node --expose-gc --import tsx test/helpers/table-heap.ts <loyalty> <hosts>`: fills a
 * real PenaltyTable with hosts at their worst (one failure and one challenge short of a ban,
 * full-length IPv6 keys) and prints the heap it holds, in bytes per host, as JSON.
 */
import { PenaltyTable } from '../../src/scoring';
import type { SecurityEvent } from '../../src/events/types';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
const loyalty = Number(process.argv[2]);
const n = Number(process.argv[3]);
const event = (address: string, kind: string, severity: string) =>
  ({ kind, severity, address, family: 6, service: 'PJSIP', account: '100', transport: 'UDP', port: 5060 }) as unknown as SecurityEvent;
gc();
const before = process.memoryUsage().heapUsed;
const table = new PenaltyTable({ loyalty, findtimeMs: 600_000, maxHosts: n });
let now = 1.7e12;
for (let i = 0; i < n; i++) {
  // 39 characters, flat as the event parser makes them.
  const hex = (v: number) => (0x1000 + v).toString(16);
  const address = ['2001:db8:ffff:ffff:ffff', hex(i >> 16), hex((i >> 8) & 255), hex(i & 255)].join(':');
  for (let k = 0; k < loyalty - 1; k++) table.observe(event(address, 'InvalidPassword', 'Error'), now++);
  for (let k = 0; k < 5 * loyalty - 1; k++) table.observe(event(address, 'ChallengeSent', 'Informational'), now++);
}
gc();
console.log(JSON.stringify({ hosts: table.size, bytesPerHost: (process.memoryUsage().heapUsed - before) / n }));
