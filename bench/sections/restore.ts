/**
 * 3. Restore: the database holds N active bans (every 10th IPv6); the daemon starts in a fresh
 * namespace (an empty kernel, as after a reboot). Measured: from spawning `node cli.js run`
 * to its "bans restored" line, which it writes once the kernel holds every ban (in sync), and
 * to "ampere started"; the count in the kernel is checked afterwards. Also the daemon's own
 * restoreMs (database reads, kernel load, its in-memory set; without Node's start).
 *
 * The original's way: one `iptables -w -A <chain> -s <ip> -j REJECT` process per host, one
 * after another (IPv4 only, as it was), run by a shell loop inside a namespace, each call
 * timed. A call's cost grows with the chain, so the extrapolation fits a + b·(rules already
 * there) to the calls and sums it: total(N) = a·N + b·N²/2.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createBackend, FirewallQueue, renderedBans } from '../../src/firewall';
import type { IpsetBackend } from '../../src/firewall/ipset';
import { createLogger } from '../../src/log';
import { AllowList } from '../../src/allow';
import { isCanonicalIp } from '../../src/net/ip';
import { openDatabase } from '../../src/store/open';
import { Store } from '../../src/store';
import { banList, writeBanDb } from '../lib/data';
import { median, spread, type Row } from '../lib/report';
import { Netns, tempDir, removeTempDir } from '../lib/sys';
import { startRunning, type Backend, type Ctx } from './common';

async function kernelCount(ns: Netns, backend: Backend): Promise<number> {
  if (backend === 'ipset') {
    let n = 0;
    for (const set of ['ampere-v4', 'ampere-v6']) {
      const out = await ns.must('ipset', ['list', '-t', set]);
      n += Number(/Number of entries: (\d+)/.exec(out)?.[1] ?? 0);
    }
    return n;
  }
  let n = 0;
  for (const tool of ['iptables-save', 'ip6tables-save']) {
    const out = await ns.must(tool, ['-t', 'filter']);
    for (const line of out.split('\n')) if (line.startsWith('-A ampere -s ')) n++;
  }
  return n;
}

interface Sample { backend: Backend; n: number; toKernel: number; toStarted: number; restoreMs: number; startMs: number }

async function restoreOnce(backend: Backend, n: number, dbFile: string): Promise<Sample> {
  const dir = tempDir('restore');
  try {
    copyFileSync(dbFile, join(dir, 'ampere.db'));
    const r = await startRunning({ backend, dir });
    try {
      const toStarted = Number(r.startedLine.at - r.daemon.startedAt) / 1e6;
      const restored = r.daemon.lines.find((l) => l.msg === 'bans restored');
      if (!restored || restored.bans !== n || restored.inSync !== true) throw new Error(`restore ${backend} ${n}: ${JSON.stringify(restored)}`);
      const toKernel = Number((restored.receivedAt as bigint) - r.daemon.startedAt) / 1e6;
      const count = await kernelCount(r.lab.pbx, backend);
      if (count !== n) throw new Error(`restore ${backend} ${n}: the kernel holds ${count} bans`);
      if (r.startedLine.bansRestored !== n) throw new Error(`restore ${backend} ${n}: daemon says ${r.startedLine.bansRestored}`);
      return { backend, n, toKernel, toStarted, restoreMs: Number(r.startedLine.restoreMs), startMs: Number(r.startedLine.startMs) };
    } finally {
      await r.close();
    }
  } finally {
    removeTempDir(dir);
  }
}

/** The original: one iptables process per host, sequentially; returns per-call durations (ms). */
async function originalWay(n: number): Promise<number[]> {
  const ns = await Netns.create();
  try {
    await ns.must('iptables', ['-w', '-N', 'ampere']);
    await ns.must('iptables', ['-w', '-A', 'INPUT', '-p', 'udp', '--dport', '5060', '-j', 'ampere']);
    const ips = banList(n, 0).map((b) => b.address).join('\n') + '\n';
    const script = 'echo $EPOCHREALTIME; while read ip; do iptables -w -A ampere -s "$ip" -j REJECT --reject-with icmp-port-unreachable || exit 1; echo $EPOCHREALTIME; done';
    const out = await ns.must('bash', ['-c', script], ips);
    const t = out.trim().split('\n').map(Number);
    const rules = (await ns.must('iptables', ['-w', '-S', 'ampere'])).split('\n').filter((l) => l.startsWith('-A ampere -s')).length;
    if (rules !== n) throw new Error(`original way: ${rules} rules for ${n} hosts`);
    return t.slice(1).map((x, i) => (x - t[i]) * 1000);
  } finally {
    await ns.destroy();
  }
}

/**
 * Where a restore's time goes, the steps of Decisions.restore() for the ipset backend timed
 * alone in this process: opening the database (migrations); the allowed-address check (only
 * stored addresses under the allow list's text prefixes); the store rendering every ban as a
 * load line; the kernel load of those lines through the queue and the ipset backend (commands
 * via `ip netns exec`, ~10 ms more per command than the daemon pays); the start's way with the
 * native loader, slices rendered while the last loads; the in-memory set made after it; and
 * `ipset restore` of the same lines alone (one and two processes).
 */
export async function restoreSteps(dbFile: string, n: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const t = () => performance.now();
  let t0 = t();
  openDatabase(dbFile).$client.close();
  out['open database (migrations)'] = t() - t0;
  const store = new Store(dbFile, 20);
  const ns = await Netns.create();
  try {
    const log = createLogger('silent');
    const fw = await createBackend('ipset', { chain: 'ampere', target: 'DROP', iptables: 'nft', netns: ns.name }, log);
    await fw.init();
    const q = new FirewallQueue(fw, log, { conntrack: null });
    const allow = AllowList.of(['127.0.0.1']);
    const now = Date.now();
    t0 = t();
    const allowed = store.bans.activeAddressesStartingWith(now, allow.textPrefixes()).filter((a) => allow.allows(a, a.includes(':') ? 6 : 4));
    out['allowed addresses (Store.activeAddressesStartingWith + AllowList.allows)'] = t() - t0;
    t0 = t();
    const lines = store.bans.renderActiveBans(now, (fw as IpsetBackend).lineFormat);
    out['load lines rendered (Store.renderActiveBans)'] = t() - t0;
    if (allowed.length !== 0 || lines.count !== n) throw new Error(`restore steps: ${lines.count} of ${n}, ${allowed.length} allowed`);
    t0 = t();
    await q.setAll(renderedBans(lines));
    out['kernel load (FirewallQueue.setAll, rendered lines, ipset backend)'] = t() - t0;
    if (!q.healthy) throw new Error(`restore steps: load failed: ${q.lastError}`);
    // The start's way with the native loader: the store renders a slice while the loader loads the last.
    const ipset = fw as IpsetBackend;
    t0 = t();
    await q.setAll({ [Symbol.iterator]: () => [][Symbol.iterator](), renderSliced: (format) => store.bans.renderActiveBanSlices(now, format) });
    out['render and kernel load at once (FirewallQueue.setAll, store slices, native loader)'] = t() - t0;
    if (!q.healthy || (await ipset.list()).length !== n) throw new Error(`restore steps: sliced load failed: ${q.lastError}`);
    t0 = t();
    const banned = new Map<string, number | null>();
    for (const b of store.bans.streamActiveKernelBans(now)) if (isCanonicalIp(b.address, b.family)) banned.set(b.address, b.until);
    out['after the load: the in-memory set (Store.streamActiveKernelBans, checked)'] = t() - t0;
    if (banned.size !== n) throw new Error(`restore steps: ${banned.size} of ${n} in memory`);
    const text = [4, 6].map((f) => [`create x${f} hash:ip family ${f === 4 ? 'inet' : 'inet6'} hashsize 1024 maxelem 1048576 timeout 0`,
      lines[f as 4 | 6].replaceAll(`ampere-t${f} `, `x${f} `)].join('\n')).join('\n');
    const file = join(dbFile + '.ipset');
    writeFileSync(file, text + '\n');
    t0 = t();
    await ns.must('ipset', ['restore', '-exist', '-file', file]);
    out['of which: ipset restore of the same lines alone, one process'] = t() - t0;
    for (const f of [4, 6]) await ns.must('ipset', ['destroy', `x${f}`]);
    // The floor of a full load on this machine: the same lines split over two processes, as the daemon's two loaders.
    const [head, rest] = [text.split('\n').filter((l) => l.startsWith('create ')), text.split('\n').filter((l) => l.startsWith('add '))];
    const halves = [0, 1].map((k) => { const f = `${file}.${k}`; writeFileSync(f, [...head, ...rest.filter((_, i) => i % 2 === k)].join('\n') + '\n'); return f; });
    t0 = t();
    await Promise.all(halves.map((f) => ns.must('ipset', ['restore', '-exist', '-file', f])));
    out['of which: ipset restore of the same lines alone, two processes at once'] = t() - t0;
  } finally {
    store.close();
    await ns.destroy();
  }
  return out;
}

/** Least squares of per-call time against rules already in the chain; total for N calls. */
function extrapolate(calls: number[], N: number): { a: number; b: number; total: number } {
  const n = calls.length;
  const mx = (n - 1) / 2;
  const my = calls.reduce((s, y) => s + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  calls.forEach((y, x) => { sxy += (x - mx) * (y - my); sxx += (x - mx) ** 2; });
  const b = Math.max(0, sxy / sxx);
  const a = my - b * mx;
  return { a, b, total: a * N + (b * N * N) / 2 };
}

export async function restoreSection(ctx: Ctx): Promise<Row[]> {
  const sizes: { n: number; runs: Record<Backend, number> }[] = ctx.quick
    ? [{ n: 1000, runs: { ipset: 1, rules: 1 } }, { n: 10_000, runs: { ipset: 1, rules: 0 } }]
    : [{ n: 1000, runs: { ipset: 3, rules: 3 } }, { n: 10_000, runs: { ipset: 3, rules: 3 } }, { n: 100_000, runs: { ipset: 3, rules: 3 } }];
  const dbDir = tempDir('restore-db');
  const rows: Row[] = [];
  const ipset1k: number[] = [];
  try {
    for (const { n, runs } of sizes) {
      const db = join(dbDir, `bans-${n}.db`);
      mkdirSync(dbDir, { recursive: true });
      writeBanDb(db, banList(n));
      const samples: Sample[] = [];
      const most = Math.max(runs.ipset, runs.rules);
      for (let k = 0; k < most; k++) {
        for (const b of (k % 2 ? ['rules', 'ipset'] : ['ipset', 'rules']) as Backend[]) {
          if (k < runs[b]) samples.push(await restoreOnce(b, n, db));
        }
      }
      for (const b of ['ipset', 'rules'] as Backend[]) {
        const mine = samples.filter((s) => s.backend === b);
        if (!mine.length) continue;
        const to = mine.map((s) => s.toKernel);
        const ready = mine.map((s) => s.toStarted);
        const rm = mine.map((s) => s.restoreMs);
        if (b === 'ipset' && n === 1000) ipset1k.push(...to);
        ctx.log(`  restore ${b} ${n}: start→kernel full ${to.map((x) => x.toFixed(0)).join(', ')} ms; →started ${ready.map((x) => x.toFixed(0)).join(', ')} ms; restoreMs ${rm.join(', ')}`);
        const target = b === 'ipset' && n === 100_000 ? { target: '≤ 1 s', met: median(to) <= 1000 } : {};
        rows.push({ section: '3 Restore', measure: `${n.toLocaleString('en-US')} bans: daemon start → kernel holds all`, variant: b, value: median(to), unit: 'ms', spread: spread(to), runs: mine.length, digits: 0, how: 'process spawn to the daemon\'s "bans restored" line (written once the load is in the kernel, in sync), count checked in the kernel', ...target });
        rows.push({ section: '3 Restore', measure: `${n.toLocaleString('en-US')} bans: daemon start → started (AMI connecting, control socket open)`, variant: b, value: median(ready), unit: 'ms', spread: spread(ready), runs: mine.length, digits: 0, how: 'process spawn to "ampere started"' });
        rows.push({ section: '3 Restore', measure: `${n.toLocaleString('en-US')} bans: restore step alone (DB reads, kernel load, in-memory set)`, variant: b, value: median(rm), unit: 'ms', spread: spread(rm), runs: mine.length, digits: 0, how: "daemon's restoreMs" });
        if (n === sizes[sizes.length - 1].n) {
          const boot = mine.map((s) => s.toStarted - s.startMs);
          rows.push({ section: '3 Restore', measure: `${n.toLocaleString('en-US')} bans: of the start, Node's own start and loading the modules`, variant: b, value: median(boot), unit: 'ms', spread: spread(boot), runs: mine.length, digits: 0, how: 'spawn → startDaemon (start − its startMs)' });
        }
      }
    }
    // Where the biggest restore's time goes.
    const big = sizes[sizes.length - 1].n;
    const stepRuns: Record<string, number>[] = [];
    for (let k = 0; k < (ctx.quick ? 1 : 3); k++) stepRuns.push(await restoreSteps(join(dbDir, `bans-${big}.db`), big));
    for (const name of Object.keys(stepRuns[0])) {
      const xs = stepRuns.map((r) => r[name]);
      ctx.log(`  restore step, ${big}: ${name}: ${xs.map((x) => x.toFixed(0)).join(', ')} ms`);
      rows.push({ section: '3 Restore', measure: `${big.toLocaleString('en-US')} bans, step alone: ${name}`, variant: 'ipset', value: median(xs), unit: 'ms', spread: spread(xs), runs: xs.length, digits: 0, how: 'in-process' });
    }
    // The original's way.
    const hosts = ctx.quick ? 150 : 1000;
    const origRuns = ctx.quick ? 1 : 2;
    const totals: number[] = [];
    const fits: { a: number; b: number }[] = [];
    for (let k = 0; k < origRuns; k++) {
      const calls = await originalWay(hosts);
      totals.push(calls.reduce((s, x) => s + x, 0));
      fits.push(extrapolate(calls, hosts));
      ctx.log(`  original way, ${hosts} hosts: ${totals[k].toFixed(0)} ms (first 50 calls median ${median(calls.slice(0, 50)).toFixed(1)} ms, last 50 ${median(calls.slice(-50)).toFixed(1)} ms)`);
    }
    const a = median(fits.map((f) => f.a));
    const b = median(fits.map((f) => f.b));
    const total = (N: number) => a * N + (b * N * N) / 2;
    rows.push({ section: '3 Restore', measure: `${hosts.toLocaleString('en-US')} bans, the original's way (one iptables process per host)`, variant: 'iptables -A × N', value: median(totals), unit: 'ms', spread: spread(totals), runs: totals.length, digits: 0, how: `per call ${a.toFixed(1)} ms + ${(b * 1000).toFixed(2)} µs per rule already in the chain` });
    if (hosts !== 1000) rows.push({ section: '3 Restore', measure: "1,000 bans, the original's way, extrapolated", variant: 'iptables -A × N', value: total(1000), unit: 'ms', runs: 1, digits: 0 });
    for (const N of [10_000, 100_000]) {
      rows.push({ section: '3 Restore', measure: `${N.toLocaleString('en-US')} bans, the original's way, extrapolated`, variant: 'iptables -A × N', value: total(N) / 1000, unit: 's', runs: 1, digits: 0, how: `linear in N alone: ${((a * N) / 1000).toFixed(0)} s` });
    }
    if (ipset1k.length) {
      rows.push({ section: '3 Restore', measure: "1,000 bans: original's way / ipset backend (start → kernel full)", variant: 'ratio', value: total(1000) / median(ipset1k), unit: '×', runs: 1, digits: 1, how: 'same benchmark run' });
    }
  } finally {
    removeTempDir(dbDir);
  }
  return rows;
}
