/**
 * Throughput of the AMI stream readers on a real capture (shared/fixtures/ami/flood.ami, 6,003
 * events), in 64 KB chunks as a socket delivers them: Ampere's AmiReader (what the daemon runs)
 * and, for comparison, ami-io's splitMessages/parser (what it ran before). Also the reader plus
 * toSecurityEvent(). Run: npx tsx bench/ami-reader.ts [path] [repetitions]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import amiio from 'ami-io/lib/index.js';
import { AmiReader } from '../src/ami/reader';
import { toSecurityEvent } from '../src/events';

const file = process.argv[2] ?? join(__dirname, '..', 'test', 'fixtures', 'ami', 'flood.ami');
const reps = Number(process.argv[3] ?? 30);
const raw = readFileSync(file, 'utf8');
const body = raw.slice(raw.indexOf('\r\n') + 2); // ami-io reads the banner itself
const chunks: string[] = [];
for (let i = 0; i < body.length; i += 65536) chunks.push(body.slice(i, i + 65536));

function measure(name: string, make: (count: () => void) => (chunk: string) => void): void {
  let n = 0;
  const push = make(() => { n++; });
  for (let r = 0; r < 3; r++) for (const c of chunks) push(c); // warm-up
  const best: number[] = [];
  for (let round = 0; round < 5; round++) {
    n = 0;
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) for (const c of chunks) push(c);
    best.push((n / (performance.now() - t0)) * 1000);
  }
  best.sort((a, b) => b - a);
  console.log(`${name.padEnd(34)} ${Math.round(best[0]).toLocaleString('en')} events/s (best of 5; median ${Math.round(best[2]).toLocaleString('en')})`);
}

const noop = () => {};
const quiet = { trace: noop, debug: noop, info: noop, warn: noop, error: noop, fatal: noop };
measure('ami-io splitMessages (before)', (count) => {
  const c = amiio.createClient({ host: '127.0.0.1', port: 1, login: 'x', password: 'x', logger: quiet });
  c.on('event', count);
  return (chunk) => c.splitMessages(chunk);
});
measure('AmiReader', (count) => {
  const r = new AmiReader({ event: count, response: noop, malformed: noop, incomplete: noop });
  return (chunk) => r.push(chunk);
});
measure('AmiReader + toSecurityEvent', (count) => {
  const r = new AmiReader({ event: (f) => { if (toSecurityEvent(f).ok) count(); }, response: noop, malformed: noop, incomplete: noop });
  return (chunk) => r.push(chunk);
});
