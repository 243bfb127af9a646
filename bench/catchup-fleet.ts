/**
 * A node joining a fleet whose table holds many active bans (issue 15's scale): a throwaway
 * PostgreSQL cluster gets N ban decisions from peer pbx1 (IPv4 from 100.64.0.0/10, a day long,
 * created 1 ms apart), then a real daemon (pbx2, ipset backend, its own namespace) starts and
 * catches up. Prints the time from "fleet connected" to its kernel set holding all N, the
 * daemon's CPU over that time, and its RSS (and peak). The daemon is the compiled one with the
 * launcher's node flags, as `ampere run` starts it. Not part of `npm run bench`:
 *
 *   node --import tsx bench/catchup-fleet.ts [--bans=100000] [--profile=DIR]
 *
 * --profile: the daemon runs with --cpu-prof into DIR, and where its time went is printed.
 *
 * Needs root (namespaces, ipset) and Debian's postgresql.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { FleetNode, initFleet } from '../test/helpers/fleet';
import { PgCluster } from '../test/helpers/pg';
import { cpuMs } from '../tools/lab/proc';
import { LAUNCH_NODE_FLAGS } from '../src/cli/launch';
import { build, DAEMON_CLI } from './lib/build';
import { logProfiles, profArgs, type Ctx } from './sections/common';

const arg = (name: string, dflt: string) => process.argv.slice(2).find((x) => x.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt;
const memory = (pid: number) => {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) / 1024;
  return { rss: mb('VmRSS'), peak: mb('VmHWM') };
};

async function main(): Promise<void> {
  const n = Number(arg('bans', '100000'));
  const profileDir = arg('profile', '') ? resolve(arg('profile', '')) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const ctx: Ctx = { quick: false, log: (s) => console.log(s), profileDir };
  await build((s) => console.log(s));
  const pg = await PgCluster.start();
  let node: FleetNode | undefined;
  try {
    await initFleet(pg, ['pbx1', 'pbx2']);
    const t0 = performance.now();
    await pg.psql(`INSERT INTO fleet_decisions (origin, seq, action, address, until, reason_kind, reason_service, created_at)
      SELECT 'pbx1', g, 'ban', '100.64.0.0'::inet + g, now() + interval '1 day', 'ChallengeResponseFailed', 'PJSIP', now() - (${n} - g) * interval '1 millisecond'
      FROM generate_series(1, ${n}) AS g`);
    console.log(`${n} decisions of pbx1 in the fleet table in ${Math.round(performance.now() - t0)} ms`);
    // Peers' bans fill at most 7/8 of set_size (src/fleet/apply.ts peerLimit): sized as an operator would for n.
    const setSize = Math.max(1_048_576, Math.ceil((n * 8) / 7) + 8);
    node = await FleetNode.create('pbx2', pg, { AMPERE_FLEET_RECEIVE_RATE: '1000000', AMPERE_LOG_LEVEL: 'info', AMPERE_BACKUP_DIR: '', AMPERE_SET_SIZE: String(setSize) });
    // The compiled daemon with the launcher's flags (heap limit), as `ampere run` starts it.
    const d = await node.start({}, false, { cli: DAEMON_CLI, nodeArgs: [...LAUNCH_NODE_FLAGS, ...profArgs(ctx, 'catchup')] });
    await d.waitFor((l) => l.msg === 'fleet connected', 60_000);
    const connected = performance.now();
    const cpu0 = cpuMs(d.pid);
    const count = async () => Number(/Number of entries: (\d+)/.exec(await node!.ns.must('ipset', ['list', '-t', 'ampere-v4']))?.[1] ?? 0);
    let held = 0;
    // RSS as the catch-up goes (the peak: when, at how many held), to tell a spike from growth.
    let top = { rss: 0, atMs: 0, held: 0 };
    const rssAt: string[] = [];
    while ((held = await count()) < n) {
      const rss = memory(d.pid).rss;
      const atMs = performance.now() - connected;
      if (rss > top.rss) top = { rss, atMs, held };
      if (rssAt.length < Math.floor(atMs / 5000)) rssAt.push(`${Math.round(atMs / 1000)}s ${held} ${rss.toFixed(0)}MB`);
      if (performance.now() - connected > 600_000) throw new Error(`after 600 s the kernel holds ${held} of ${n}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const took = performance.now() - connected;
    const cpu = cpuMs(d.pid) - cpu0;
    await new Promise((r) => setTimeout(r, 2000));
    const m = memory(d.pid);
    console.log(`catch-up of ${n}: "fleet connected" -> kernel holds all ${Math.round(took)} ms; daemon CPU ${cpu} ms; RSS 2 s later ${m.rss.toFixed(1)} MB, peak ${m.peak.toFixed(1)} MB`);
    console.log(`RSS during the catch-up: highest ${top.rss.toFixed(1)} MB at ${Math.round(top.atMs)} ms (kernel holding ${top.held}); every 5 s: ${rssAt.join(', ')}`);
    await node.daemon!.stop();
    logProfiles(ctx, 'catchup');
  } finally {
    await node?.destroy();
    await pg.stop();
  }
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
