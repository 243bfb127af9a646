/**
 * A node holding 1,000,000 active bans (issue 15's scale): the real daemon started on a database
 * of that many (131,072 IPv4 from 198.18.0.0/15, the rest IPv6 in fd33::/64), ipset backend, in a
 * fresh namespace. Prints the time from spawn to the kernel holding all, the restore step alone,
 * the daemon's RSS once started (and its peak), then each step of the restore alone, down to
 * `ipset restore` of the same lines by itself (the floor). Not part of `npm run bench`:
 *
 *   node --import tsx bench/restore-1m.ts [--bans=1000000] [--runs=1] [--profile=DIR]
 *
 * --profile: the daemon runs with --cpu-prof into DIR, and where its time went is printed.
 *
 * Needs root (namespaces, ipset, iptables).
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { build } from './lib/build';
import { banDatabase, restoreRun } from './lib/scale';
import { installCleanup, removeTempDir, scriptArg } from './lib/sys';
import { restoreSteps } from './sections/restore';
import type { Ctx } from './sections/common';


async function main(): Promise<void> {
  installCleanup();
  const n = Number(scriptArg('bans', '1000000'));
  const runs = Number(scriptArg('runs', '1'));
  const profileDir = scriptArg('profile', '') ? resolve(scriptArg('profile', '')) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const ctx: Ctx = { quick: false, log: (s) => console.log(s), profileDir };
  await build((s) => console.log(s));
  const db = banDatabase(n);
  try {
    console.log(`database of ${n} bans written in ${Math.round(db.writtenMs)} ms`);
    for (let k = 0; k < runs; k++) {
      const r = await restoreRun(db.file, ctx);
      console.log(`run ${k + 1}: ${r.bans} bans restored (inSync ${r.inSync}); spawn → kernel holds all ${Math.round(r.toKernelMs)} ms; restore step ${r.restoreMs} ms; start ${r.startMs} ms; RSS at "started" ${r.rssStarted.toFixed(1)} MB, 5 s later ${r.rssSettled.toFixed(1)} MB, peak ${r.peak.toFixed(1)} MB`);
      const a = r.restart;
      console.log(`run ${k + 1}, restarted on the full kernel: start ${a.startMs} ms (restore step ${a.restoreMs} ms); RSS at "started" ${a.rss.toFixed(1)} MB, peak ${a.peak.toFixed(1)} MB; errors logged: ${a.errors.length ? a.errors.join('; ') : 'none'}`);
    }
    // Where the time goes, step by step in this process (as section 3 does for 100k).
    const steps = await restoreSteps(db.file, n);
    for (const [name, ms] of Object.entries(steps)) console.log(`step alone, ${n} bans: ${name}: ${Math.round(ms)} ms`);
  } finally {
    removeTempDir(db.dir);
  }
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
