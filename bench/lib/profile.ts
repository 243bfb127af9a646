/**
 * Reads a V8 .cpuprofile (node --cpu-prof) and says where the time went: self time per
 * function, and inclusive time per module (src/..., node_modules/<pkg>, node internals).
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  gcMs: number;
  /** Self time, top functions: "name (file:line)" -> ms. */
  selfTop: [string, number][];
  /** Inclusive time per module: a sample counts once for each module on its stack. */
  byModule: [string, number][];
}

function moduleOf(url: string): string {
  if (!url) return '(native)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1];
  const src = /\/(src|dist)\/(.+)$/.exec(url);
  if (src) return `src/${src[2].replace(/\.js$/, '.ts')}`;
  if (url.startsWith('node:')) return url;
  return url.split('/').slice(-2).join('/');
}

export function summarizeProfile(path: string, top = 15): ProfileSummary {
  const p = JSON.parse(readFileSync(path, 'utf8')) as Profile;
  const byId = new Map<number, Node>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + dt);
  }
  let idle = 0;
  let gc = 0;
  let total = 0;
  const fnSelf = new Map<string, number>();
  const modIncl = new Map<string, number>();
  for (const [id, ms] of self) {
    total += ms;
    const n = byId.get(id)!;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(idle)') { idle += ms; continue; }
    if (name === '(garbage collector)') gc += ms;
    const key = `${name} (${moduleOf(n.callFrame.url)}:${n.callFrame.lineNumber + 1})`;
    fnSelf.set(key, (fnSelf.get(key) ?? 0) + ms);
    const mods = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      if (cf.url) mods.add(moduleOf(cf.url));
      else if (cf.functionName === '(garbage collector)' || cf.functionName === '(program)') mods.add(cf.functionName);
    }
    for (const m of mods) modIncl.set(m, (modIncl.get(m) ?? 0) + ms);
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top);
  return { totalMs: total, idleMs: idle, gcMs: gc, selfTop: sorted(fnSelf), byModule: sorted(modIncl) };
}

export function formatSummary(s: ProfileSummary): string {
  const busy = s.totalMs - s.idleMs;
  const pct = (ms: number) => `${((100 * ms) / busy).toFixed(1)}%`;
  return [
    `busy ${busy.toFixed(0)} ms of ${s.totalMs.toFixed(0)} ms sampled (GC ${pct(s.gcMs)} of busy)`,
    'self time, top functions:',
    ...s.selfTop.map(([k, ms]) => `  ${pct(ms).padStart(6)}  ${ms.toFixed(0).padStart(6)} ms  ${k}`),
    'inclusive time by module:',
    ...s.byModule.map(([k, ms]) => `  ${pct(ms).padStart(6)}  ${ms.toFixed(0).padStart(6)} ms  ${k}`),
  ].join('\n');
}

if (require.main === module) {
  for (const f of process.argv.slice(2)) console.log(`${f}\n${formatSummary(summarizeProfile(f, 25))}\n`);
}
