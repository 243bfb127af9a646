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
 * pause of 20-40 ms, so each ban is measured alone (clustered bans: section 2).
 */
import { Prober } from '../lib/procs';
import { median, percentile, spread, type Row } from '../lib/report';
import { sleep, spoofed } from '../lib/sys';
import { startRunning, type Backend, type Ctx } from './common';

const LOYALTY = 3;

interface RunResult { backend: Backend; reaction: number[]; decided: number[]; failed: number }

async function oneRun(ctx: Ctx, backend: Backend, bans: number, base: number): Promise<RunResult> {
  const r = await startRunning({ backend, env: { AMPERE_LOYALTY: String(LOYALTY) } });
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
      await sleep(20 + Math.random() * 20);
    }
  } finally {
    off();
    await prober.stop();
    await r.close();
  }
  ctx.log(`  reaction ${backend}: ${bans} bans, p50 ${percentile(reaction, 50).toFixed(2)} ms, p99 ${percentile(reaction, 99).toFixed(2)} ms, max ${Math.max(...reaction).toFixed(2)} ms${failed ? `, ${failed} never effective` : ''}`);
  return { backend, reaction, decided, failed };
}

export async function reactionSection(ctx: Ctx): Promise<Row[]> {
  const runs = ctx.quick ? 1 : 3;
  const perRun = ctx.quick ? 40 : 400;
  const backends: Backend[] = ['ipset', 'rules'];
  const results: RunResult[] = [];
  let base = 0;
  for (let run = 0; run < runs; run++) {
    // Alternate the order so neither backend always runs on a warmer (or busier) machine.
    for (const b of run % 2 ? [...backends].reverse() : backends) {
      results.push(await oneRun(ctx, b, perRun, base));
      base += perRun;
    }
  }
  const rows: Row[] = [];
  const per: Record<string, { p50: number; p99: number }> = {};
  for (const b of backends) {
    const mine = results.filter((x) => x.backend === b);
    const all = mine.flatMap((x) => x.reaction);
    const p50s = mine.map((x) => percentile(x.reaction, 50));
    const p99s = mine.map((x) => percentile(x.reaction, 99));
    const failed = mine.reduce((n, x) => n + x.failed, 0);
    per[b] = { p50: percentile(all, 50), p99: percentile(all, 99) };
    const how = `daemon process, ${all.length} bans${failed ? ` (+${failed} never effective)` : ''}, pooled; spread = per-run`;
    rows.push({ section: '1 Reaction', measure: 'event written → first packet dropped, p50', variant: b, value: per[b].p50, unit: 'ms', spread: spread(p50s), runs: mine.length, how });
    rows.push({
      section: '1 Reaction', measure: 'event written → first packet dropped, p99', variant: b, value: per[b].p99, unit: 'ms', spread: spread(p99s), runs: mine.length, how,
      ...(b === 'ipset' ? { target: '≤ 5 ms', met: per[b].p99 <= 5 && failed === 0 } : {}),
    });
    const dec = mine.flatMap((x) => x.decided);
    rows.push({ section: '1 Reaction', measure: 'event written → daemon logged "ban", p50', variant: b, value: percentile(dec, 50), unit: 'ms', spread: spread(mine.map((x) => percentile(x.decided, 50))), runs: mine.length, how: 'seen on the daemon\'s stdout: decision without the kernel' });
  }
  // Ratio in the same runs: rules over ipset, per run pair.
  const ratios: number[] = [];
  for (let k = 0; k + 1 < results.length; k += 2) {
    const ip = results.slice(k, k + 2).find((x) => x.backend === 'ipset')!;
    const ru = results.slice(k, k + 2).find((x) => x.backend === 'rules')!;
    ratios.push(percentile(ru.reaction, 50) / percentile(ip.reaction, 50));
  }
  rows.push({ section: '1 Reaction', measure: 'p50 ratio rules / ipset', variant: 'same run', value: median(ratios), unit: '×', spread: spread(ratios), runs: ratios.length });
  return rows;
}
