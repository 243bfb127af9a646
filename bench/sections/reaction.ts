/**
 * 1. Reaction: from the moment the Asterisk stand-in writes the deciding event on the AMI
 * socket to the first probe datagram from that source that the kernel drops.
 *
 * The real daemon (`node cli.js run`) runs in the pbx namespace with its AMI server there.
 * netprobe sends UDP datagrams from the (spoofed) source every 50 µs from the attacker
 * namespace and receives them in pbx; the ban is effective at the first datagram that no
 * longer arrives when none after it arrives either (100 in a row and 5 ms). So the figure is
 * an upper bound, at most one probe interval (0.05 ms) above the true value.
 * Per ban: loyalty-1 failures first, then the probe starts, then the deciding failure; then a
 * pause of 15-30 ms, so each ban is measured alone (clustered bans: section 2).
 */
import { Prober } from '../lib/procs';
import { median, percentile, spread, type Row } from '../lib/report';
import { readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { sleep, spoofed, tempDir } from '../lib/sys';
import { logProfiles, profArgs, startRunning, type Backend, type Ctx } from './common';

const LOYALTY = 3;

/** A daemon configuration measured: the backend, and whether conntrack cleanup runs. */
interface Variant { name: string; backend: Backend; conntrack: boolean; share: number }
const VARIANTS: Variant[] = [
  { name: 'ipset', backend: 'ipset', conntrack: true, share: 1 },
  { name: 'rules', backend: 'rules', conntrack: true, share: 1 },
  // Diagnosis: the same daemon with conntrack not on its PATH (it then skips the cleanup).
  { name: 'ipset, conntrack cleanup off', backend: 'ipset', conntrack: false, share: 0.35 },
];

interface RunResult { variant: string; reaction: number[]; decided: number[]; failed: number }

/** A PATH with the firewall tools but without conntrack. */
function pathWithoutConntrack(): string {
  const dir = tempDir('noconntrack');
  for (const f of readdirSync('/usr/sbin')) {
    if (/^(ipset|iptables|ip6tables|xtables)/.test(f)) symlinkSync(`/usr/sbin/${f}`, join(dir, f));
  }
  return `${dir}:/usr/local/bin:/usr/bin:/bin`;
}

async function oneRun(ctx: Ctx, v: Variant, bans: number, base: number, noConntrackPath: string, label = ''): Promise<RunResult> {
  const tag = `reaction-${v.backend}${v.conntrack ? '' : '-noconntrack'}`;
  const env: Record<string, string> = { AMPERE_LOYALTY: String(LOYALTY), ...(v.conntrack ? {} : { PATH: noConntrackPath }) };
  const r = await startRunning({ backend: v.backend, env, nodeArgs: profArgs(ctx, tag) });
  const prober = Prober.start(r.lab.pbx, r.lab.atk, r.lab.pbx4, r.lab.pbx6, 5070, 50);
  const reaction: number[] = [];
  const decided: number[] = [];
  let failed = 0;
  const banSeen = new Map<string, bigint>();
  const off = r.daemon.on((l) => { if (l.msg === 'ban') banSeen.set(l.address, process.hrtime.bigint()); });
  try {
    for (let i = 0; i < bans; i++) {
      const src = spoofed(base + i);
      await r.agent.call('fail', { addrs: [src], n: LOYALTY - 1 });
      await prober.begin(src);
      const { t } = await r.agent.call('fail', { addrs: [src], n: 1 });
      const t0 = BigInt(t);
      const res = await prober.end(src);
      if (!res) { failed++; continue; }
      reaction.push(Number(res.firstLost - t0) / 1e6);
      const seen = banSeen.get(src);
      if (seen) decided.push(Number(seen - t0) / 1e6);
      banSeen.delete(src);
      // Isolated bans: let the previous one's follow-up work (conntrack, history flush) pass,
      // at a random phase to the daemon's timers. Clustered bans are measured in section 2.
      await sleep(15 + Math.random() * 15);
    }
  } finally {
    off();
    await prober.stop();
    await r.close();
    logProfiles(ctx, tag);
  }
  ctx.log(`  ${label}reaction ${v.name}: ${bans} bans, p50 ${percentile(reaction, 50).toFixed(2)} ms, p99 ${percentile(reaction, 99).toFixed(2)} ms, max ${Math.max(...reaction).toFixed(2)} ms${failed ? `, ${failed} never effective` : ''}`);
  return { variant: v.name, reaction, decided, failed };
}

export async function reactionSection(ctx: Ctx): Promise<Row[]> {
  const runs = ctx.quick ? 1 : 3;
  const perRun = ctx.quick ? 20 : 340;
  const results: RunResult[] = [];
  const noConntrackPath = pathWithoutConntrack();
  let base = 0;
  // A warm-up run, not recorded, as benchmarks usually have: the section opens the whole
  // benchmark, right after the build, and in two full runs that day its first ipset run was
  // the slowest (p50 / p99 1.02 / 6.74 ms against 0.71-0.78 / 4.62-4.75 ms later in the same
  // run). Every measured run still starts its own daemon, so a daemon's first ban stays in.
  if (!ctx.quick) {
    const w = await oneRun(ctx, VARIANTS[0], 40, base, noConntrackPath, 'warm-up, not recorded: ');
    base += w.reaction.length + w.failed;
  }
  for (let run = 0; run < runs; run++) {
    // Rotate the order so no variant always runs on a warmer (or busier) machine.
    for (let k = 0; k < VARIANTS.length; k++) {
      const v = VARIANTS[(k + run) % VARIANTS.length];
      const n = Math.ceil(perRun * v.share);
      results.push(await oneRun(ctx, v, n, base, noConntrackPath));
      base += n;
    }
  }
  const rows: Row[] = [];
  const sec = '1 Reaction';
  for (const v of VARIANTS) {
    const mine = results.filter((x) => x.variant === v.name);
    const all = mine.flatMap((x) => x.reaction);
    const failed = mine.reduce((n, x) => n + x.failed, 0);
    const p50 = percentile(all, 50);
    const p99 = percentile(all, 99);
    const how = `daemon process; ${all.length.toLocaleString('en-US')} bans${failed ? ` (+${failed} never effective)` : ''}, pooled; spread: per run`;
    const target = v.name === 'ipset' ? { target: '≤ 5 ms', met: p99 <= 5 && failed === 0 } : {};
    rows.push({ section: sec, measure: 'deciding event written → first packet dropped, p50', variant: v.name, value: p50, unit: 'ms', spread: spread(mine.map((x) => percentile(x.reaction, 50))), runs: mine.length, how });
    rows.push({ section: sec, measure: 'deciding event written → first packet dropped, p99', variant: v.name, value: p99, unit: 'ms', spread: spread(mine.map((x) => percentile(x.reaction, 99))), runs: mine.length, how, ...target });
  }
  // Ratios within each run: rules and "conntrack off" against the default.
  const byRun = (name: string) => results.filter((x) => x.variant === name);
  const ip = byRun('ipset');
  const ratio = (name: string) => byRun(name).map((x, i) => percentile(x.reaction, 50) / percentile(ip[i].reaction, 50));
  const rr = ratio('rules');
  rows.push({ section: sec, measure: 'p50 ratio rules / ipset', variant: 'same run', value: median(rr), unit: '×', spread: spread(rr), runs: rr.length });
  return rows;
}
