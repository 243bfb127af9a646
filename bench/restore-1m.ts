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
import { mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from './lib/build';
import { bulk4, bulk6, V4_BULK, writeBanDb, type BanSpec } from './lib/data';
import { installCleanup, removeTempDir, sleep, tempDir } from './lib/sys';
import { logProfiles, profArgs, startRunning, type Ctx } from './sections/common';
import { daemonEnv, startDaemon } from './lib/procs';
import { restoreSteps } from './sections/restore';

const arg = (name: string, dflt: string) => process.argv.slice(2).find((x) => x.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt;

/** VmRSS and VmHWM of a process, in MB. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

async function main(): Promise<void> {
  installCleanup();
  const n = Number(arg('bans', '1000000'));
  const runs = Number(arg('runs', '1'));
  const profileDir = arg('profile', '') ? resolve(arg('profile', '')) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const ctx: Ctx = { quick: false, log: (s) => console.log(s), profileDir };
  await build((s) => console.log(s));
  const dbDir = tempDir('restore-1m');
  try {
    const v4 = Math.min(n, V4_BULK);
    const bans: BanSpec[] = [...Array.from({ length: v4 }, (_, i) => ({ address: bulk4(i), family: 4 as const })), ...Array.from({ length: n - v4 }, (_, i) => ({ address: bulk6(i), family: 6 as const }))];
    const t0 = performance.now();
    writeBanDb(join(dbDir, 'ampere.db'), bans);
    console.log(`database of ${n} bans written in ${Math.round(performance.now() - t0)} ms`);
    for (let k = 0; k < runs; k++) {
      const dir = tempDir('restore-1m-run');
      const { copyFileSync } = await import('node:fs');
      copyFileSync(join(dbDir, 'ampere.db'), join(dir, 'ampere.db'));
      try {
        const r = await startRunning({ backend: 'ipset', dir, env: { AMPERE_BACKUP_DIR: '' }, nodeArgs: profArgs(ctx, 'restore-1m') });
        try {
          const restored = r.daemon.lines.find((l) => l.msg === 'bans restored');
          const toKernel = Number((restored!.receivedAt as bigint) - r.daemon.startedAt) / 1e6;
          const started = memory(r.daemon.pid);
          await sleep(5000);
          const settled = memory(r.daemon.pid);
          console.log(`run ${k + 1}: ${restored!.bans} bans restored (inSync ${restored!.inSync}); spawn → kernel holds all ${Math.round(toKernel)} ms; restore step ${r.startedLine.restoreMs} ms; start ${r.startedLine.startMs} ms; RSS at "started" ${started.rss.toFixed(1)} MB, 5 s later ${settled.rss.toFixed(1)} MB, peak ${settled.peak.toFixed(1)} MB`);
          // A restart (the container's, not the machine's): the kernel still holds every ban, the
          // start lists it (bans the database lacks are adopted), then loads and swaps again.
          await r.daemon.stop();
          const again = startDaemon(r.lab.pbx, daemonEnv(dir, { AMPERE_BACKEND: 'ipset', AMPERE_BACKUP_DIR: '' }), profArgs(ctx, 'restore-1m-restart'));
          try {
            const line = await again.next((l) => l.msg === 'ampere started', 300_000);
            const m = memory(again.pid);
            const errors = again.lines.filter((l) => Number(l.level) >= 50).map((l) => l.msg);
            console.log(`run ${k + 1}, restarted on the full kernel: start ${line.startMs} ms (restore step ${line.restoreMs} ms); RSS at "started" ${m.rss.toFixed(1)} MB, peak ${m.peak.toFixed(1)} MB; errors logged: ${errors.length ? errors.join('; ') : 'none'}`);
          } finally {
            await again.stop();
          }
        } finally {
          await r.close();
        }
        logProfiles(ctx, 'restore-1m');
      } finally {
        removeTempDir(dir);
      }
    }
    // Where the time goes, step by step in this process (as section 3 does for 100k).
    const steps = await restoreSteps(join(dbDir, 'ampere.db'), n);
    for (const [name, ms] of Object.entries(steps)) console.log(`step alone, ${n} bans: ${name}: ${Math.round(ms)} ms`);
  } finally {
    removeTempDir(dbDir);
  }
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
