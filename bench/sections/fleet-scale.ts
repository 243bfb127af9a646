/**
 * 7. Fleet, at issue 15's scale: a node holding 1,000,000 active bans. Its restore from its own
 * database (spawn to the kernel holding all; RSS), a restart on the kernel it filled, and a
 * node joining a fleet table of 1,000,000 bans ("fleet connected" to its kernel holding all;
 * CPU, RSS). The packet path at 1M bans is section 4's. Full runs and --only=fleet only.
 */
import { median, spread, type Row } from '../lib/report';
import { banDatabase, catchUpRun, restoreRun, type RestoreRun } from '../lib/scale';
import { removeTempDir } from '../lib/sys';
import type { Ctx } from './common';

const SECTION = '7 Fleet';
const N = 1_000_000;
const RESTORE_RUNS = 2;

export async function fleetScaleRows(ctx: Ctx): Promise<Row[]> {
  const rows: Row[] = [];
  const add = (measure: string, variant: string, xs: number[], unit: string, how: string, target?: { text: string; met: (v: number) => boolean }) => {
    const value = median(xs);
    rows.push({ section: SECTION, measure, variant, value, unit, spread: spread(xs), runs: xs.length, how, ...(target ? { target: target.text, met: target.met(value) } : {}) });
  };
  const db = banDatabase(N);
  ctx.log(`  fleet scale: database of ${N} bans written in ${Math.round(db.writtenMs)} ms`);
  const runs: RestoreRun[] = [];
  try {
    for (let k = 0; k < RESTORE_RUNS; k++) {
      const r = await restoreRun(db.file, ctx);
      ctx.log(`  fleet scale: restore ${k + 1}: ${r.bans} bans, spawn → kernel ${Math.round(r.toKernelMs)} ms, RSS ${r.rssSettled.toFixed(1)} MB (peak ${r.peak.toFixed(1)}); restart on the full kernel: started in ${r.restart.startMs} ms, peak ${r.restart.peak.toFixed(1)} MB, errors: ${r.restart.errors.join('; ') || 'none'}`);
      if (r.bans !== N) throw new Error(`fleet scale: ${r.bans} bans restored of ${N}`);
      runs.push(r);
    }
  } finally {
    removeTempDir(db.dir);
  }
  const how = '131,072 IPv4 and 868,928 IPv6 active bans in its own database, an empty kernel (after a reboot)';
  add('1,000,000 bans: daemon start → kernel holds all', 'ipset', runs.map((r) => r.toKernelMs), 'ms', how, { text: '≤ 3 s', met: (v) => v <= 3000 });
  add('RSS with 1,000,000 active bans, 5 s after the start', 'ipset', runs.map((r) => r.rssSettled), 'MB', how, { text: '≤ 250 MB', met: (v) => v <= 250 });
  add('peak RSS of that start (VmHWM)', 'ipset', runs.map((r) => r.peak), 'MB', how, { text: '≤ 250 MB', met: (v) => v <= 250 });
  add('restart on the kernel holding the 1,000,000: spawn → "ampere started"', 'ipset', runs.map((r) => r.restart.startMs), 'ms', 'the start lists the sets to adopt bans the database lacks');
  add('peak RSS of that restart (VmHWM)', 'ipset', runs.map((r) => r.restart.peak), 'MB', 'the start lists the sets to adopt bans the database lacks', { text: '≤ 250 MB', met: (v) => v <= 250 });

  const c = await catchUpRun(N, ctx);
  ctx.log(`  fleet scale: catch-up of ${N}: ${Math.round(c.tookMs)} ms, CPU ${c.cpuMs} ms, RSS ${c.rss.toFixed(1)} MB, peak ${c.peak.toFixed(1)} MB; every 5 s: ${c.rssAt.join(', ')}`);
  const joinHow = `a node joining a fleet table of 1,000,000 bans from one peer (IPv4); daemon CPU ${(c.cpuMs / 1000).toFixed(1)} s`;
  add('1,000,000 bans from the fleet: "fleet connected" → kernel holds all', 'ipset, PostgreSQL', [c.tookMs], 'ms', joinHow, { text: '≤ 3 s', met: (v) => v <= 3000 });
  add('peak RSS of that catch-up (VmHWM)', 'ipset, PostgreSQL', [c.peak], 'MB', joinHow, { text: '≤ 250 MB', met: (v) => v <= 250 });
  return rows;
}
