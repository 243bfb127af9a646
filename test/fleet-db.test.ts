import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { Decisions } from '../src/decisions';
import type { Query } from '../src/fleet/receiver';
import { createLogger } from '../src/log';
import { Store } from '../src/store';
import { ampere } from './helpers/cli';
import { receiverOver } from './helpers/receiver';
import { PgCluster, skipUnlessPg } from './helpers/pg';

/** The fleet's database side alone: fleet init, roles, row-level security, append-only history. */
const skip = skipUnlessPg();
const quiet = createLogger('fatal', { write: () => {} });

describe('fleet database (ampere fleet init)', { skip }, () => {
  let pg: PgCluster;
  before(async () => {
    pg = await PgCluster.start();
    await pg.createDb();
  });
  after(async () => { await pg?.stop(); });

  const connect = async (user: string, password: string) => {
    const c = new Client({ connectionString: pg.url(user, password) });
    await c.connect();
    return c;
  };
  // A node names no "operator" column (it may not); an operator's row says it is one.
  const insert = (c: Client, origin: string, address = '203.0.113.9', operator = false) => operator
    ? c.query(`INSERT INTO fleet_decisions (origin, seq, action, address, operator) VALUES ($1, 1, 'ban', $2, true)`, [origin, address])
    : c.query(`INSERT INTO fleet_decisions (origin, seq, action, address) VALUES ($1, 1, 'ban', $2)`, [origin, address]);

  /** pbx2's receiver over its own connection, with a real Decisions on a throwaway SQLite file; counts the rows its queries read. */
  const pbx2Receiver = async (rate: number) => {
    const client = await connect('pbx2', 'pbx2-secret');
    const dir = mkdtempSync(join(tmpdir(), 'ampere-recv-'));
    const store = new Store(join(dir, 'ampere.db'));
    const decisions = new Decisions({ store, kernel: { add: async () => {}, remove: async () => {}, setAll: async () => {} }, bantime: { bantimeMs: 60_000, factor: 1, maxMs: 60_000 }, log: quiet });
    let rowsRead = 0;
    const query = (async (text: string, params?: unknown[]) => { const r = await client.query(text, params); rowsRead += r.rows.filter((x) => x.id !== null).length; return r; }) as Query;
    const { receiver, state } = receiverOver(query, { decisions, store, log: quiet, setSize: () => 65_536, origin: 'pbx2', rate });
    /** One round; how many rows it read. */
    const round = async () => { rowsRead = 0; await receiver.kick(); return rowsRead; };
    const close = async () => { store.close(); rmSync(dir, { recursive: true, force: true }); await client.end(); };
    return { decisions, state, round, close };
  };

  test('init creates schema, roles and policies; a second run changes nothing; the password is never printed', async () => {
    const first = await ampere(['fleet', 'init', '--url', pg.url(), '--node', 'pbx1:pbx1-secret', '--node', 'pbx2:pbx2-secret', '--operator', 'noc:noc-secret-1'], {});
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /3 migration\(s\) applied/);
    assert.doesNotMatch(first.stdout + first.stderr, /throwaway-super|pbx1-secret/);
    const again = await ampere(['fleet', 'init', '--url', pg.url(), '--node', 'pbx1:pbx1-secret'], {});
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /0 migration\(s\) applied \(already up to date\)/);
    assert.equal(await pg.psql(`SELECT count(*) FROM pg_policies WHERE tablename = 'fleet_decisions'`), '3');
    assert.equal(await pg.psql(`SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE NOT tgisinternal`), 'fleet_decisions_no_update,fleet_decisions_notify');
  });

  test('--print shows the SQL without touching a database', async () => {
    const r = await ampere(['fleet', 'init', '--print', '--node', 'pbx9:pbx9-secret'], {});
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /CREATE TABLE "fleet_decisions"/);
    assert.match(r.stdout, /CREATE POLICY fleet_node_insert/);
    assert.match(r.stdout, /GRANT ampere_node TO "pbx9"/);
    assert.equal(await pg.psql(`SELECT count(*) FROM pg_roles WHERE rolname = 'pbx9'`), '0');
  });

  test('a node inserts only rows of its own origin, never an operator row; nobody updates or deletes', async () => {
    const pbx1 = await connect('pbx1', 'pbx1-secret');
    try {
      await insert(pbx1, 'pbx1');
      // The attack: a compromised pbx1 forging pbx2's decisions, or an operator's.
      await assert.rejects(insert(pbx1, 'pbx2'), /row-level security/);
      await assert.rejects(insert(pbx1, 'pbx1', '203.0.113.10', true), /permission denied/);
      await assert.rejects(pbx1.query(`UPDATE fleet_decisions SET origin = 'pbx2'`), /permission denied/);
      await assert.rejects(pbx1.query(`DELETE FROM fleet_decisions`), /permission denied/);
      await assert.rejects(pbx1.query(`TRUNCATE fleet_decisions`), /permission denied/);
    } finally { await pbx1.end(); }
    const noc = await connect('noc', 'noc-secret-1');
    try {
      await insert(noc, 'noc', '203.0.113.11', true);
      await assert.rejects(insert(noc, 'pbx1'), /row-level security/);
    } finally { await noc.end(); }
    // Append only for the owner too.
    await assert.rejects(pg.psql(`UPDATE fleet_decisions SET address = '198.51.100.1'`), /append only/);
    assert.equal(await pg.psql(`SELECT string_agg(origin, ',' ORDER BY id) FROM fleet_decisions`), 'pbx1,noc');
  });

  test('a node names only what a decision is: never its id, txid, creation time or operator flag', async () => {
    const pbx1 = await connect('pbx1', 'pbx1-secret');
    const noc = await connect('noc', 'noc-secret-1');
    try {
      // The attack: a compromised node dating its flood back over many seconds (the receive rate
      // limit counts per second of creation), or placing it after every cursor (a future txid).
      const forged = [
        `INSERT INTO fleet_decisions (origin, seq, action, address, created_at) VALUES ('pbx1', 1, 'ban', '203.0.113.20', now() - interval '1 hour')`,
        `INSERT INTO fleet_decisions (origin, seq, action, address, txid) VALUES ('pbx1', 1, 'ban', '203.0.113.21', '999999999999'::xid8)`,
        `INSERT INTO fleet_decisions (id, origin, seq, action, address) OVERRIDING SYSTEM VALUE VALUES (1000000, 'pbx1', 1, 'ban', '203.0.113.22')`,
      ];
      for (const sql of forged) await assert.rejects(pbx1.query(sql), /permission denied/, sql);
      for (const sql of forged.slice(0, 2)) await assert.rejects(noc.query(sql.replace(`'pbx1'`, `'noc'`)), /permission denied/, sql);
      assert.equal(await pg.psql(`SELECT count(*) FROM fleet_decisions WHERE address << '203.0.113.16/28'`), '0');
    } finally { await Promise.all([pbx1.end(), noc.end()]); }
  });

  test('ampere check: connection, schema, role and rights of this node; never the password', async () => {
    const checks = async (env: Record<string, string>) => {
      const r = await ampere(['check', '--json'], { AMPERE_DB: '/nonexistent/ampere.db', AMPERE_BACKEND: 'dry-run', AMPERE_PORT: '1', AMPERE_AMI_TIMEOUT: '1s', ...env });
      assert.doesNotMatch(r.stdout + r.stderr, /pbx1-secret|wrong-secret/);
      return (JSON.parse(r.stdout).checks as { name: string; result: string; detail: string }[]).filter((c) => c.name.startsWith('fleet'));
    };
    const good = await checks({ AMPERE_FLEET_URL: pg.url('pbx1', 'pbx1-secret'), AMPERE_FLEET_ORIGIN: 'pbx1' });
    assert.deepEqual(good.map((c) => `${c.name} ${c.result}`), ['fleet ok', 'fleet rights ok'], JSON.stringify(good));
    const forged = await checks({ AMPERE_FLEET_URL: pg.url('pbx1', 'pbx1-secret'), AMPERE_FLEET_ORIGIN: 'pbx2' });
    assert.deepEqual(forged.map((c) => `${c.name} ${c.result}`), ['fleet ok', 'fleet origin fail', 'fleet rights fail'], JSON.stringify(forged));
    // A fleet made by an older Ampere: nodes held INSERT on the whole table.
    await pg.psql(`GRANT INSERT ON fleet_decisions TO ampere_node`);
    try {
      const old = await checks({ AMPERE_FLEET_URL: pg.url('pbx1', 'pbx1-secret'), AMPERE_FLEET_ORIGIN: 'pbx1' });
      const rights = old.find((c) => c.name === 'fleet rights' && c.result === 'fail');
      assert.match(rights?.detail ?? '', /role pbx1 may set id, txid, created_at, operator of its decisions .*run "ampere fleet init --url <owner-url>" again/, JSON.stringify(old));
    } finally {
      await pg.psql(`REVOKE INSERT ON fleet_decisions FROM ampere_node`);
      await pg.psql(`GRANT INSERT (origin, seq, action, address, until, reason_kind, reason_service, reason_account, failures, source) ON fleet_decisions TO ampere_node`);
    }
    const denied = await checks({ AMPERE_FLEET_URL: pg.url('pbx1', 'wrong-secret'), AMPERE_FLEET_ORIGIN: 'pbx1' });
    assert.equal(denied[0].result, 'fail');
    assert.match(denied[0].detail, /password authentication failed/);
    assert.match(denied[0].detail, /pbx1:\*{5}@/);
    assert.equal(await pg.psql(`SELECT count(*) FROM fleet_decisions WHERE address = '192.0.2.1'`), '0');
  });

  test('TLS: fleet_tls_ca checks the server against a private CA; another CA is refused', async () => {
    const ca = await pg.enableTls();
    const tcp = pg.url('pbx1', 'pbx1-secret', 'ampere', false);
    const run = async (env: Record<string, string>) => {
      const r = await ampere(['check', '--json'], { AMPERE_DB: '/nonexistent/ampere.db', AMPERE_BACKEND: 'dry-run', AMPERE_PORT: '1', AMPERE_AMI_TIMEOUT: '1s', AMPERE_FLEET_URL: tcp, AMPERE_FLEET_ORIGIN: 'pbx1', ...env });
      return (JSON.parse(r.stdout).checks as { name: string; result: string; detail: string }[]).find((c) => c.name === 'fleet')!;
    };
    const ok = await run({ AMPERE_FLEET_TLS_CA: ca });
    assert.equal(ok.result, 'ok', ok.detail);
    assert.match(ok.detail, /over TLS$/);
    // The attack: a server (or a man in the middle) whose certificate another CA signed.
    const other = join(pg.dir, 'other-ca.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=someone else', '-keyout', join(pg.dir, 'other-ca.key'), '-out', other], { stdio: 'pipe' });
    const refused = await run({ AMPERE_FLEET_TLS_CA: other });
    assert.equal(refused.result, 'fail');
    assert.match(refused.detail, /certificate/);
    const plain = await run({});
    assert.match(plain.detail, /without TLS$/);
  });

  test('a decision with a txid no transaction has had yet (forged where a node may still name it) is never read', async () => {
    // A fleet made before drizzle-pg/0002: the owner writes what such a node could have.
    await pg.psql(`INSERT INTO fleet_decisions (origin, seq, action, address, until, txid) VALUES ('pbx1', 1, 'ban', '203.0.113.30', now() + interval '1 hour', '999999999999'::xid8)`);
    const pbx1 = await connect('pbx1', 'pbx1-secret');
    const pbx2 = await pbx2Receiver(1000);
    try {
      await pbx1.query(`INSERT INTO fleet_decisions (origin, seq, action, address, until) VALUES ('pbx1', 2, 'ban', '203.0.113.31', now() + interval '1 hour')`);
      const { decisions, state, round } = pbx2;
      await round();
      assert.equal(decisions.isBanned('203.0.113.31'), true);
      assert.equal(decisions.isBanned('203.0.113.30'), false, 'the forged decision was applied');
      assert.ok(BigInt(state.get('receive_cursor') ?? '0') > 0n);
      assert.equal(await round(), 0, 'a round read rows again');
    } finally {
      await Promise.all([pbx1.end(), pbx2.close()]);
    }
  });

  test('a transaction left open costs one txid to remember: later rounds read only new rows, and its own once it commits', async () => {
    const pbx1 = await connect('pbx1', 'pbx1-secret');
    const stuck = await connect('pbx1', 'pbx1-secret');
    const pbx2 = await pbx2Receiver(1_000_000);
    try {
      const { decisions, state, round } = pbx2;
      await round(); // what earlier tests left
      const before = decisions.activeCount;
      // The attack (or a stuck session): a transaction takes its txid and stays open.
      await stuck.query('BEGIN');
      await stuck.query(`INSERT INTO fleet_decisions (origin, seq, action, address, until) VALUES ('pbx1', 1, 'ban', '198.18.200.1', now() + interval '1 hour')`);
      const stuckTxid = (await stuck.query(`SELECT pg_current_xact_id()::text AS t`)).rows[0].t as string;
      const flood = async (from: number, n: number) => pbx1.query(`INSERT INTO fleet_decisions (origin, seq, action, address, until)
        SELECT 'pbx1', g, 'ban', ('198.19.0.0'::inet + g), now() + interval '1 hour' FROM generate_series($1::int, $2::int) AS g`, [from, from + n - 1]);
      await flood(0, 3000);
      assert.equal(await round(), 3000);
      assert.equal(state.get('receive_cursor'), stuckTxid, 'the cursor stays below the open transaction');
      // Before: every round read the whole window since the open transaction again.
      await flood(3000, 1000);
      assert.equal(await round(), 1000, 'a round read the rows after the open transaction again');
      assert.equal(await round(), 0);
      assert.equal(decisions.isBanned('198.18.200.1'), false);
      await stuck.query('COMMIT');
      assert.equal(await round(), 1, 'the open transaction\'s row, once it committed');
      assert.equal(decisions.isBanned('198.18.200.1'), true);
      assert.equal(decisions.activeCount, before + 4001);
      assert.ok(BigInt(state.get('receive_cursor')!) > BigInt(stuckTxid), 'the cursor moved past it');
      assert.equal(await round(), 0);
    } finally {
      await Promise.all([pbx1.end(), stuck.end(), pbx2.close()]);
    }
  });

  test('an insert notifies the channel', async () => {
    const listener = await connect('pbx2', 'pbx2-secret');
    const pbx1 = await connect('pbx1', 'pbx1-secret');
    try {
      await listener.query('LISTEN ampere_fleet');
      const heard = new Promise<string>((resolve) => listener.on('notification', (n) => resolve(n.channel)));
      await insert(pbx1, 'pbx1', '203.0.113.12');
      assert.equal(await heard, 'ampere_fleet');
    } finally { await Promise.all([listener.end(), pbx1.end()]); }
  });
});
