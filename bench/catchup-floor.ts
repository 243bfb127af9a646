/**
 * The parts a 1M-ban catch-up cannot do without, each alone on this machine, to show where its
 * floor is (issue 15's 3 s): PostgreSQL producing a million peer decisions and the client
 * parsing them (pages of 5,000 as the receiver reads, and one aggregated row, the least the
 * driver can do), the daemon's store writing a million peer bans in pages of 5,000 (its bulk
 * path, no checks), and the native loader adding a million addresses to a set that exists (as
 * a catch-up does). Not part of `npm run bench`:
 *
 *   node --import tsx bench/catchup-floor.ts [--bans=1000000]
 *
 * Needs root (a namespace, ipset, initdb as postgres) and Debian's postgresql.
 */
import { join } from 'node:path';
import { Store, type NewBan } from '../src/store';
import { nativeIpsetLoader } from '../src/firewall/ipset-native';
import { asRole, initFleet } from '../test/helpers/fleet';
import { PgCluster } from '../test/helpers/pg';
import { withNetns } from '../tools/lab/netns';
import { fillFleetTable } from './lib/scale';
import { removeTempDir, scriptArg, tempDir } from './lib/sys';

const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };

async function timed(what: string, fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = performance.now();
  const c0 = cpuMs();
  await fn();
  const ms = performance.now() - t0;
  console.log(`${what}: ${Math.round(ms)} ms (this process's CPU ${Math.round(cpuMs() - c0)} ms)`);
  return ms;
}

async function fetchFloor(n: number): Promise<void> {
  const pg = await PgCluster.start();
  try {
    await initFleet(pg, ['pbx1', 'pbx2']);
    await fillFleetTable(pg, n);
    await pg.psql('VACUUM ANALYZE fleet_decisions');
    const c = await asRole(pg, 'pbx2');
    try {
      const page = `SELECT txid::text AS t, id::text AS i, address AS a, date_part('epoch', until) * 1000 AS u FROM fleet_decisions
        WHERE (txid, id) > ($1::xid8, $2::bigint) AND origin <> 'pbx2' ORDER BY txid, id LIMIT 5000`;
      await timed(`PostgreSQL: ${n} decisions (txid, id, address, until) in pages of 5,000, rows as arrays`, async () => {
        for (let from = ['0', '0']; ;) {
          const rows = (await c.query<string[]>({ text: page, values: from, rowMode: 'array' })).rows;
          if (rows.length < 5000) return;
          from = [rows[rows.length - 1][0], rows[rows.length - 1][1]];
        }
      });
      await timed(`PostgreSQL: ${n} addresses as one string_agg row, split`, async () => {
        const r = await c.query<{ a: string }>(`SELECT string_agg(host(address), ',' ORDER BY txid, id) AS a FROM fleet_decisions WHERE origin <> 'pbx2'`);
        if (r.rows[0].a.split(',').length !== n) throw new Error('short');
      });
    } finally { await c.end(); }
  } finally { await pg.stop(); }
}

const address = (i: number) => `100.${64 + (i >>> 16)}.${(i >>> 8) & 255}.${i & 255}`;

async function storeFloor(n: number): Promise<void> {
  const dir = tempDir('floor-db');
  const store = new Store(join(dir, 'ampere.db'));
  try {
    const now = Date.now();
    const ban = (i: number): NewBan => ({ address: address(i), family: 4, now, until: now + 86_400_000, reasonKind: 'ChallengeResponseFailed', reasonService: 'PJSIP', reasonAccount: '', failures: 0, source: 'fleet', origin: 'pbx1' });
    await timed(`SQLite: ${n} peer bans through the store's bulk write, pages of 5,000`, () => {
      for (let i = 1; i <= n; i += 5000) store.bans.recordBans(Array.from({ length: Math.min(5000, n - i + 1) }, (_, k) => ban(i + k)));
    });
  } finally {
    store.close();
    removeTempDir(dir);
  }
}

async function kernelFloor(n: number): Promise<void> {
  const loader = nativeIpsetLoader();
  if (!loader) { console.log('native loader not built (npm run build): kernel part skipped'); return; }
  const lines: string[] = [];
  for (let i = 1; i <= n; i++) lines.push(`add floor ${address(i)} timeout 86400`);
  await withNetns(async (ns) => {
    await ns.must('ipset', ['create', 'floor', 'hash:ip', 'family', 'inet', 'hashsize', '262144', 'maxelem', String(2 * n), 'timeout', '0']);
    await timed(`kernel: ${n} adds into an existing set by the native loader`, () => ns.must(loader, [], lines.join('\n') + '\n'));
    const held = /Number of entries: (\d+)/.exec(await ns.must('ipset', ['list', '-t', 'floor']))?.[1];
    if (Number(held) !== n) throw new Error(`the set holds ${held}`);
  });
}

async function main(): Promise<void> {
  const n = Number(scriptArg('bans', '1000000'));
  await fetchFloor(n);
  await storeFloor(n);
  await kernelFloor(n);
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
