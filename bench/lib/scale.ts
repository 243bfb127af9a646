/**
 * Issue 15's scale, a node holding 1,000,000 active bans, measured on the real daemon (ipset
 * backend, its own namespace): restore from its own database (and a restart on the full kernel),
 * and a catch-up from a fleet table. Used by section 7 and by bench/restore-1m.ts and
 * bench/catchup-fleet.ts, which print more.
 */
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FleetNode, initFleet } from '../../test/helpers/fleet';
import { PgCluster } from '../../test/helpers/pg';
import { cpuMs } from '../../tools/lab/proc';
import { LAUNCH_NODE_FLAGS } from '../../src/cli/launch';
import { DAEMON_CLI } from './build';
import { bulk4, bulk6, V4_BULK, writeBanDb, type BanSpec } from './data';
import { daemonEnv, startDaemon } from './procs';
import { removeTempDir, sleep, tempDir } from './sys';
import { logProfiles, profArgs, startRunning, type Ctx } from '../sections/common';

/** VmRSS and VmHWM (peak) of a process, in MB. */
export function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) / 1024;
  return { rss: mb('VmRSS'), peak: mb('VmHWM') };
}

/** A database of n active bans: 131,072 IPv4 from 198.18.0.0/15, the rest IPv6 in fd33::/64. */
export function banDatabase(n: number): { dir: string; file: string; writtenMs: number } {
  const dir = tempDir('scale-db');
  const v4 = Math.min(n, V4_BULK);
  const bans: BanSpec[] = [...Array.from({ length: v4 }, (_, i) => ({ address: bulk4(i), family: 4 as const })), ...Array.from({ length: n - v4 }, (_, i) => ({ address: bulk6(i), family: 6 as const }))];
  const t0 = performance.now();
  const file = join(dir, 'ampere.db');
  writeBanDb(file, bans);
  return { dir, file, writtenMs: performance.now() - t0 };
}

export interface RestoreRun {
  bans: number;
  inSync: boolean;
  /** Process spawn to the daemon's "bans restored" line (written once the kernel holds all). */
  toKernelMs: number;
  restoreMs: number;
  startMs: number;
  rssStarted: number;
  /** 5 s after "started". */
  rssSettled: number;
  peak: number;
  /** The same daemon restarted on the kernel it filled (it lists the sets to adopt what the database lacks). */
  restart: { startMs: number; restoreMs: number; rss: number; peak: number; errors: string[] };
}

/** One start of the daemon on a copy of the database, an empty kernel, then a restart on the full one. */
export async function restoreRun(dbFile: string, ctx: Ctx): Promise<RestoreRun> {
  const dir = tempDir('scale-restore');
  copyFileSync(dbFile, join(dir, 'ampere.db'));
  try {
    const r = await startRunning({ backend: 'ipset', dir, env: { AMPERE_BACKUP_DIR: '' }, nodeArgs: profArgs(ctx, 'restore-1m') });
    try {
      const restored = r.daemon.lines.find((l) => l.msg === 'bans restored')!;
      const toKernelMs = Number((restored.receivedAt as bigint) - r.daemon.startedAt) / 1e6;
      const started = memory(r.daemon.pid);
      await sleep(5000);
      const settled = memory(r.daemon.pid);
      await r.daemon.stop();
      const again = startDaemon(r.lab.pbx, daemonEnv(dir, { AMPERE_BACKEND: 'ipset', AMPERE_BACKUP_DIR: '' }), profArgs(ctx, 'restore-1m-restart'));
      try {
        const line = await again.next((l) => l.msg === 'ampere started', 300_000);
        const m = memory(again.pid);
        const errors = again.lines.filter((l) => Number(l.level) >= 50).map((l) => String(l.msg));
        return {
          bans: Number(restored.bans), inSync: restored.inSync === true, toKernelMs,
          restoreMs: Number(r.startedLine.restoreMs), startMs: Number(r.startedLine.startMs),
          rssStarted: started.rss, rssSettled: settled.rss, peak: settled.peak,
          restart: { startMs: Number(line.startMs), restoreMs: Number(line.restoreMs), rss: m.rss, peak: m.peak, errors },
        };
      } finally {
        await again.stop();
      }
    } finally {
      await r.close();
      logProfiles(ctx, 'restore-1m');
    }
  } finally {
    removeTempDir(dir);
  }
}

/** n ban decisions of peer pbx1 in the fleet table: IPv4 from 100.64.0.1 up, a day long, created 1 ms apart. */
export async function fillFleetTable(pg: PgCluster, n: number): Promise<void> {
  await pg.psql(`INSERT INTO fleet_decisions (origin, seq, action, address, until, reason_kind, reason_service, created_at)
    SELECT 'pbx1', g, 'ban', '100.64.0.0'::inet + g, now() + interval '1 day', 'ChallengeResponseFailed', 'PJSIP', now() - (${n} - g) * interval '1 millisecond'
    FROM generate_series(1, ${n}) AS g`);
}

export interface CatchUpRun {
  /** Writing the n decisions into the fleet table (not part of the catch-up). */
  insertMs: number;
  /** "fleet connected" to the kernel's set holding all n. */
  tookMs: number;
  cpuMs: number;
  /** 2 s after. */
  rss: number;
  peak: number;
  /** The highest RSS sampled during the catch-up, when, and how many bans the kernel held then. */
  top: { rss: number; atMs: number; held: number };
  /** RSS every 5 s of the catch-up: "5s 123456 170MB". */
  rssAt: string[];
}

/**
 * A node (pbx2) joining a fleet table of n ban decisions from peer pbx1 (IPv4 from
 * 100.64.0.0/10, a day long, created 1 ms apart), with a throwaway PostgreSQL. The daemon is the
 * compiled one with the launcher's node flags, as `ampere run` starts it.
 */
export async function catchUpRun(n: number, ctx: Ctx): Promise<CatchUpRun> {
  const pg = await PgCluster.start();
  let node: FleetNode | undefined;
  try {
    await initFleet(pg, ['pbx1', 'pbx2']);
    const t0 = performance.now();
    await fillFleetTable(pg, n);
    const insertMs = performance.now() - t0;
    // Peers' bans fill at most 7/8 of set_size (src/fleet/apply.ts peerLimit): sized as an operator would for n.
    const setSize = Math.max(1_048_576, Math.ceil((n * 8) / 7) + 8);
    node = await FleetNode.create('pbx2', pg, { AMPERE_FLEET_RECEIVE_RATE: '1000000', AMPERE_LOG_LEVEL: 'info', AMPERE_BACKUP_DIR: '', AMPERE_SET_SIZE: String(setSize) });
    const d = await node.start({}, false, { cli: DAEMON_CLI, nodeArgs: [...LAUNCH_NODE_FLAGS, ...profArgs(ctx, 'catchup')] });
    await d.waitFor((l) => l.msg === 'fleet connected', 60_000);
    const connected = performance.now();
    const cpu0 = cpuMs(d.pid);
    const count = async () => Number(/Number of entries: (\d+)/.exec(await node!.ns.must('ipset', ['list', '-t', 'ampere-v4']))?.[1] ?? 0);
    let held = 0;
    let top = { rss: 0, atMs: 0, held: 0 };
    const rssAt: string[] = [];
    while ((held = await count()) < n) {
      const rss = memory(d.pid).rss;
      const atMs = performance.now() - connected;
      if (rss > top.rss) top = { rss, atMs, held };
      if (rssAt.length < Math.floor(atMs / 5000)) rssAt.push(`${Math.round(atMs / 1000)}s ${held} ${rss.toFixed(0)}MB`);
      if (atMs > 600_000) throw new Error(`after 600 s the kernel holds ${held} of ${n}`);
      await sleep(50);
    }
    const tookMs = performance.now() - connected;
    const cpu = cpuMs(d.pid) - cpu0;
    await sleep(2000);
    const m = memory(d.pid);
    await node.daemon!.stop();
    logProfiles(ctx, 'catchup');
    return { insertMs, tookMs, cpuMs: cpu, rss: m.rss, peak: m.peak, top, rssAt };
  } finally {
    await node?.destroy();
    await pg.stop();
  }
}
