/**
 * Reconciler cost: the real daemon, idle, with 100,000 bans (every 10th IPv6) in the kernel of
 * a fresh namespace. Its CPU (own threads, the processes it started and reaped: iptables -S,
 * and the live ipset shell) over a window, with `verify_interval` at its default (2s) and off
 * (0), alternating; the difference is what the checks cost. Not part of `npm run bench`:
 *
 *   node --import tsx bench/reconciler-cost.ts [--seconds=60] [--runs=2] [--bans=100000] [--backend=ipset] [--iptables=auto|nft|legacy]
 *
 * Needs root (namespaces, iptables, ipset).
 */
import { controlRequest } from '../src/control/client';
import { build } from './lib/build';
import { banList, writeBanDb } from './lib/data';
import { installCleanup, removeTempDir, sleep, tempDir } from './lib/sys';
import { startRunning, type Backend } from './sections/common';
import { cpuOf } from './lib/procs';

function arg(name: string, dflt: string): string {
  const a = process.argv.slice(2).find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : dflt;
}

interface Run { interval: string; cpuPct: number; selfPct: number; childPct: number; checks: number; drifts: number; repairMs?: number; flushToRepairedMs?: number; jumpBackMs?: number }

async function measure(backend: Backend, db: string, interval: string, seconds: number, iptables: string, log: (s: string) => void): Promise<Run> {
  const dir = tempDir('verify-cost');
  try {
    const { copyFileSync } = await import('node:fs');
    copyFileSync(db, `${dir}/ampere.db`);
    const r = await startRunning({ backend, dir, env: { AMPERE_VERIFY_INTERVAL: interval, AMPERE_BACKUP_DIR: '', AMPERE_IPTABLES: iptables } });
    try {
      // The start's own work (the load, the checkpointer thread, the first collections) settles first.
      await sleep(10_000);
      const status = () => controlRequest<any>(`${dir}/ampere.sock`, 'GET', '/status').then((x) => x.body);
      const s0 = await status();
      const c0 = cpuOf(r.daemon.pid);
      const t0 = performance.now();
      await sleep(seconds * 1000);
      const c1 = cpuOf(r.daemon.pid);
      const wall = (performance.now() - t0) / 1000;
      const s1 = await status();
      if (s1.bans.active.total !== s0.bans.active.total) throw new Error('bans changed during the window');
      const self = (c1.self - c0.self) / wall;
      const child = (c1.children - c0.children) / wall;
      const run = {
        interval, cpuPct: (self + child) * 100, selfPct: self * 100, childPct: child * 100,
        checks: s1.firewall.verify.checks - s0.firewall.verify.checks, drifts: r.daemon.lines.filter((l) => String(l.msg).startsWith('firewall drift')).length,
      };
      log(`verify_interval=${interval}: ${run.cpuPct.toFixed(2)} % of a core (daemon ${run.selfPct.toFixed(2)} %, children ${run.childPct.toFixed(2)} %), ${run.checks} checks, ${run.drifts} drift lines, ${s1.bans.active.total} bans`);
      if (interval !== '0') Object.assign(run, await flushAndRepair(r, iptables === 'legacy' ? 'iptables-legacy' : 'iptables', log));
      return run;
    } finally {
      await r.close();
    }
  } finally {
    removeTempDir(dir);
  }
}

/** The IPv4 set flushed under the daemon: how long until it is whole again, and the daemon's repair time. */
async function flushAndRepair(r: Awaited<ReturnType<typeof startRunning>>, ipt: string, log: (s: string) => void): Promise<{ repairMs: number; flushToRepairedMs: number; jumpBackMs: number }> {
  const line = r.daemon.next((l) => String(l.msg).startsWith('firewall drift:'), 30_000);
  const t0 = performance.now();
  await r.lab.pbx.must('ipset', ['flush', 'ampere-v4']);
  const l = await line;
  const flushToRepairedMs = performance.now() - t0;
  log(`ipset flush ampere-v4 -> ${l.msg} (${Math.round(flushToRepairedMs)} ms after the flush)`);
  // A firewalld-style reload: the jump deleted; polled until it is back.
  await sleep(3000);
  const next = r.daemon.next((x) => String(x.msg).startsWith('firewall drift: jump'), 30_000);
  const t1 = performance.now();
  await r.lab.pbx.must(ipt, ['-w', '-D', 'INPUT', '-j', 'ampere']);
  while ((await r.lab.pbx.exec(ipt, ['-w', '-C', 'INPUT', '-j', 'ampere'])).code !== 0) await sleep(5);
  const jumpBackMs = performance.now() - t1;
  log(`iptables -D INPUT -j ampere -> jump back after ${Math.round(jumpBackMs)} ms; ${(await next).msg}`);
  return { repairMs: Number(l.repairMs), flushToRepairedMs, jumpBackMs };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root');
  installCleanup();
  const log = (s: string) => process.stderr.write(`${new Date().toISOString()} ${s}\n`);
  const seconds = Number(arg('seconds', '60'));
  const runs = Number(arg('runs', '2'));
  const n = Number(arg('bans', '100000'));
  const backend = arg('backend', 'ipset') as Backend;
  const iptables = arg('iptables', 'auto');
  await build(log);
  const dir = tempDir('verify-cost-db');
  try {
    const db = `${dir}/bans.db`;
    writeBanDb(db, banList(n));
    const results: Run[] = [];
    for (let i = 0; i < runs; i++) for (const interval of ['0', '2s']) results.push(await measure(backend, db, interval, seconds, iptables, log));
    const mean = (iv: string) => { const x = results.filter((r) => r.interval === iv); return x.reduce((a, r) => a + r.cpuPct, 0) / x.length; };
    const off = mean('0');
    const on = mean('2s');
    process.stdout.write(JSON.stringify({ backend, iptables, bans: n, seconds, runs, offPct: off, onPct: on, costPct: on - off, results }, null, 2) + '\n');
  } finally {
    removeTempDir(dir);
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
