/**
 * Reads a V8 .heapsnapshot (node --heapsnapshot-signal) and sums the objects' own sizes by
 * constructor (or type for strings, arrays, code): what fills the heap.
 */
import { readFileSync } from 'node:fs';

export function summarizeHeap(path: string, top = 20): { totalMB: number; rows: [string, number, number][] } {
  const snap = JSON.parse(readFileSync(path, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const F = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const by = new Map<string, { size: number; count: number }>();
  let total = 0;
  for (let i = 0; i < snap.nodes.length; i += F) {
    const type = types[snap.nodes[i + iType]];
    const size = snap.nodes[i + iSize];
    total += size;
    const key = type === 'object' || type === 'closure' ? `${type} ${snap.strings[snap.nodes[i + iName]]}` : type === 'native' ? `native ${snap.strings[snap.nodes[i + iName]].slice(0, 40)}` : `(${type})`;
    const e = by.get(key) ?? { size: 0, count: 0 };
    e.size += size;
    e.count++;
    by.set(key, e);
  }
  const rows = [...by].sort((a, b) => b[1].size - a[1].size).slice(0, top).map(([k, v]) => [k, v.size / 1048576, v.count] as [string, number, number]);
  return { totalMB: total / 1048576, rows };
}

export function formatHeap(s: { totalMB: number; rows: [string, number, number][] }): string {
  return [`heap objects: ${s.totalMB.toFixed(1)} MB`, ...s.rows.map(([k, mb, n]) => `  ${mb.toFixed(1).padStart(7)} MB  ${String(n).padStart(9)} × ${k}`)].join('\n');
}

if (require.main === module) {
  for (const f of process.argv.slice(2)) console.log(`${f}\n${formatHeap(summarizeHeap(f, 30))}\n`);
}
