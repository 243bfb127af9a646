import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeConfig, loadConfig } from '../src/config';

/** Fleet keys: validated like every other key, the password never shown, nothing loaded without fleet_url. */
const dir = mkdtempSync(join(tmpdir(), 'ampere-fleet-cfg-'));
const load = (env: Record<string, string>) => loadConfig({ AMPERE_CONFIG: '/dev/null', AMPERE_ENV_FILE: '/nonexistent/.env', ...env }, dir);

test('fleet keys: defaults, and the origin defaults to the host name', () => {
  const c = load({}).config;
  assert.equal(c.fleet_url, '');
  assert.equal(c.fleet_origin, hostname().split('.')[0]);
  assert.equal(c.fleet_resync, 30_000);
  assert.equal(c.fleet_ban_max, 86_400_000);
  assert.equal(c.fleet_publish_rate, 200);
  assert.equal(c.fleet_receive_rate, 400);
});

test('a bad fleet value stops the start naming the key, never the password', () => {
  const refused = (env: Record<string, string>, key: string) => assert.throws(() => load(env), (e: Error & { key?: string }) => {
    assert.equal(e.key, key, e.message);
    assert.doesNotMatch(e.message, /s3cret/);
    return true;
  });
  refused({ AMPERE_FLEET_URL: 'mysql://pbx1:s3cret@db/ampere' }, 'fleet_url');
  refused({ AMPERE_FLEET_URL: 'postgres://pbx1:s3cret@db.example:5432' }, 'fleet_url');
  refused({ AMPERE_FLEET_URL: 'postgres://pbx1:s3cret@[not-an-url' }, 'fleet_url');
  refused({ AMPERE_FLEET_ORIGIN: 'pbx 1; DROP ROLE' }, 'fleet_origin');
  refused({ AMPERE_FLEET_RESYNC: '0' }, 'fleet_resync');
  refused({ AMPERE_FLEET_BAN_MAX: 'forever' }, 'fleet_ban_max');
  refused({ AMPERE_FLEET_PUBLISH_RATE: '0' }, 'fleet_publish_rate');
  refused({ AMPERE_FLEET_RECEIVE_RATE: '-5' }, 'fleet_receive_rate');
});

test('the described config (the start log line) has the fleet URL without its password', () => {
  const c = load({ AMPERE_FLEET_URL: 'postgres://pbx1:s3cret@db.example:5432/ampere?sslmode=verify-full', AMPERE_FLEET_ORIGIN: 'pbx1' }).config;
  const shown = JSON.stringify(describeConfig(c));
  assert.doesNotMatch(shown, /s3cret/);
  assert.match(shown, /postgres:\/\/pbx1:\*{5}@db\.example:5432\/ampere\?sslmode=verify-full/);
});

test('without fleet_url the daemon loads no fleet code and no pg driver', () => {
  // Everything the daemon imports is loaded by this require; fleet mode is behind `if (cfg.fleet_url)`.
  require('../src/daemon');
  const loaded = Object.keys(require.cache);
  assert.ok(loaded.some((p) => p.endsWith('/src/daemon/index.ts')));
  assert.deepEqual(loaded.filter((p) => /\/node_modules\/pg\/|\/src\/fleet\//.test(p)), []);
});
