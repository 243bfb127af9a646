import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlRequest } from '../src/control/client';
import { Store } from '../src/store';
import { ampere, json } from './helpers/cli';
import { DaemonProcess } from '../tools/lab/daemon';

/**
 * `ampere bans --since/--source/--sort/--limit`: the same answer from the daemon (filtered and
 * ordered by SQLite in the control route) and from the database read offline.
 */
const dir = mkdtempSync(join(tmpdir(), 'ampere-bansf-'));
const db = join(dir, 'ampere.db');
const env = { AMPERE_DB: db, AMPERE_BACKEND: 'dry-run', AMPERE_PORT: '1', AMPERE_ENV_FILE: '/nonexistent', AMPERE_CONFIG: '/dev/null' };
const H = 3_600_000;
const now = Date.now();
let d: DaemonProcess | null = null;

before(() => {
  const store = new Store(db, 20);
  const ban = (address: string, ageH: number, source: 'auto' | 'manual' | 'legacy' | 'fail2ban' | 'kernel') =>
    store.bans.recordBan({ address, family: 4, now: now - ageH * H, until: now + 24 * H, source, reasonKind: 'InvalidPassword', reasonService: 'PJSIP', reasonAccount: '100', failures: 3 });
  // 198.51.100.9 is banned three times (two lifted), so its count is 3.
  ban('198.51.100.9', 50, 'auto'); store.bans.liftBan('198.51.100.9', now - 49 * H, 'unban');
  ban('198.51.100.9', 30, 'auto'); store.bans.liftBan('198.51.100.9', now - 29 * H, 'unban');
  ban('198.51.100.9', 20, 'auto');
  ban('203.0.113.20', 10, 'manual');
  ban('192.0.2.5', 5, 'fail2ban');
  ban('203.0.113.3', 2, 'auto');
  ban('10.9.9.9', 0.5, 'kernel');
  store.close();
});
after(async () => { await d?.stop('SIGKILL'); rmSync(dir, { recursive: true, force: true }); });

const addresses = async (args: string[]) => {
  const r = await ampere(['bans', ...args, '--json'], env);
  assert.equal(r.code, 0, r.stderr);
  return json(r).map((b: { address: string }) => b.address);
};

/** Each case with what it must list; run offline, then against the daemon. */
const CASES: [string[], string[]][] = [
  [[], ['10.9.9.9', '203.0.113.3', '192.0.2.5', '203.0.113.20', '198.51.100.9']],
  [['--since', '6h'], ['10.9.9.9', '203.0.113.3', '192.0.2.5']],
  [['--source', 'auto'], ['203.0.113.3', '198.51.100.9']],
  [['--source', 'auto', '--all'], ['203.0.113.3', '198.51.100.9', '198.51.100.9', '198.51.100.9']],
  [['--sort', 'address'], ['10.9.9.9', '192.0.2.5', '198.51.100.9', '203.0.113.20', '203.0.113.3']],
  [['--sort', 'count', '--limit', '2'], ['198.51.100.9', '10.9.9.9']],
  [['--all', '--since', '40h', '--sort', 'count'], ['198.51.100.9', '198.51.100.9', '10.9.9.9', '203.0.113.3', '192.0.2.5', '203.0.113.20']],
  [['--limit', '3', '--sort', 'time'], ['10.9.9.9', '203.0.113.3', '192.0.2.5']],
  [['203.0.113.0/24', '--sort', 'address'], ['203.0.113.20', '203.0.113.3']],
  [['--source', 'legacy'], []],
];

describe('ampere bans filters and order', () => {
  test('offline: from the database', async () => {
    for (const [args, want] of CASES) assert.deepEqual(await addresses(args), want, args.join(' '));
  });

  test('daemon: the control route filters and orders; bad query values are refused with 400', async () => {
    d = new DaemonProcess(env);
    await d.waitFor((l) => l.msg === 'ampere started');
    for (const [args, want] of CASES) assert.deepEqual(await addresses(args), want, args.join(' '));
    // Read page by page in count order: pages of 2 put together are the whole order.
    const sock = join(dir, 'ampere.sock');
    const pages: string[] = [];
    let cursor: number | null = null;
    do {
      const q: string = `/bans?sort=count&limit=2${cursor === null ? '' : `&before=${cursor}`}`;
      const r = await controlRequest<{ bans: { address: string }[]; next: number | null }>(sock, 'GET', q);
      assert.equal(r.status, 200);
      pages.push(...r.body.bans.map((b) => b.address));
      cursor = r.body.next;
    } while (cursor !== null);
    assert.deepEqual(pages, await addresses(['--sort', 'count']));
    for (const [q, re] of [['source=nope', /source must be one of auto, manual/], ['sort=random', /sort must be one of time, address, count/], ['since=-5', /since must be a time/], ['since=1e3', /since must be/]] as const) {
      const r = await controlRequest<{ error: string }>(sock, 'GET', `/bans?${q}`);
      assert.equal(r.status, 400, q);
      assert.match(JSON.stringify(r.body), re);
    }
  });

  test('bad option values are usage errors (exit 2) naming the option', async () => {
    for (const [args, re] of [
      [['--since', 'yesterday'], /--since "yesterday" is not a duration/],
      [['--source', 'cidr'], /--source must be one of auto, manual, range, legacy, fail2ban, kernel, fleet \(got "cidr"\)/],
      [['--sort', 'name'], /--sort must be one of time, address, count/],
      [['--limit', '0'], /--limit must be a whole number/],
    ] as const) {
      const r = await ampere(['bans', ...args], env);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.stderr, re);
    }
  });
});
