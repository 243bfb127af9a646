import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseDuration, formatDuration, describeConfig } from '../src/config';

const dir = () => mkdtempSync(join(tmpdir(), 'ampere-cfg-'));
const noFile = (d: string) => ({ AMPERE_CONFIG: undefined, AMPERE_ENV_FILE: join(d, 'none.env') });

test('defaults are the original six keys plus the new ones', () => {
  const d = dir();
  const { config, sources } = loadConfig({ AMPERE_ENV_FILE: join(d, 'x') }, d);
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.port, 5038);
  assert.equal(config.user, 'ampere');
  assert.equal(config.pass, 'ampere');
  assert.equal(config.loyalty, 3);
  assert.equal(config.chain, 'ampere');
  assert.equal(config.db, '/var/lib/ampere/ampere.db');
  assert.equal(config.findtime, 600_000);
  assert.equal(config.bantime, 3_600_000);
  assert.equal(config.bantime_factor, 4);
  assert.equal(config.bantime_max, 30 * 86_400_000);
  assert.deepEqual(config.allow, []);
  assert.equal(config.backend, 'ipset');
  assert.equal(config.target, 'DROP');
  assert.equal(sources.loyalty, 'default');
});

test('an original ampere.cfg works unchanged', () => {
  const d = dir();
  const file = join(d, 'ampere.cfg');
  writeFileSync(file, '# original\npass = 123\nloyalty = 4\nchain = ampere-firewall\n');
  const { config, sources, file: used } = loadConfig({ AMPERE_CONFIG: file, AMPERE_ENV_FILE: join(d, 'x') }, d);
  assert.equal(config.pass, '123');
  assert.equal(config.loyalty, 4);
  assert.equal(config.chain, 'ampere-firewall');
  assert.equal(sources.chain, 'file');
  assert.equal(used, file);
});

test('precedence: environment > .env > config file > defaults', () => {
  const d = dir();
  const file = join(d, 'ampere.cfg');
  writeFileSync(file, 'loyalty = 4\nport = 5039\nuser = fromfile\nchain = c-file\n');
  writeFileSync(join(d, '.env'), 'AMPERE_LOYALTY=5\nAMPERE_PORT=5040\n');
  const { config, sources } = loadConfig({ AMPERE_CONFIG: file, AMPERE_LOYALTY: '6' }, d);
  assert.equal(config.loyalty, 6);
  assert.equal(sources.loyalty, 'env');
  assert.equal(config.port, 5040);
  assert.equal(sources.port, '.env');
  assert.equal(config.user, 'fromfile');
  assert.equal(config.findtime, 600_000);
  assert.equal(sources.findtime, 'default');
});

test('an empty variable counts as unset: the file or the default applies', () => {
  const d = dir();
  const file = join(d, 'ampere.cfg');
  writeFileSync(file, 'loyalty = 4\n');
  const { config, sources } = loadConfig({ AMPERE_CONFIG: file, AMPERE_ENV_FILE: join(d, 'x'), AMPERE_LOYALTY: '', AMPERE_HOST: '' }, d);
  assert.equal(config.loyalty, 4);
  assert.equal(sources.loyalty, 'file');
  assert.equal(config.host, '127.0.0.1');
});

test('the default config file may be missing; an explicit one may not', () => {
  const d = dir();
  assert.doesNotThrow(() => loadConfig({ ...noFile(d) }, d));
  assert.throws(() => loadConfig({ AMPERE_CONFIG: join(d, 'nope.cfg') }, d), (e: ConfigError) => e.key === 'config' && /nope\.cfg/.test(e.message));
});

test('invalid values stop the start with one line naming key, value and what is allowed', () => {
  const d = dir();
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ AMPERE_LOYALTY: 'three' }, 'loyalty', /invalid loyalty: "three" from AMPERE_LOYALTY \(env\); expected a whole number/],
    [{ AMPERE_LOYALTY: '0' }, 'loyalty', /"0"/],
    [{ AMPERE_PORT: '70000' }, 'port', /1 to 65535/],
    [{ AMPERE_FINDTIME: '10 minutes' }, 'findtime', /duration such as 90s/],
    [{ AMPERE_BANTIME: '-1' }, 'bantime', /bantime/],
    [{ AMPERE_BACKEND: 'nftables' }, 'backend', /one of ipset, rules/],
    [{ AMPERE_TARGET: 'ACCEPT' }, 'target', /DROP, REJECT/],
    [{ AMPERE_ALLOW: '10.0.0.0/8, 300.1.1.1' }, 'allow', /bad entry "300\.1\.1\.1"/],
    [{ AMPERE_CHAIN: '-j ACCEPT' }, 'chain', /chain name/],
    [{ AMPERE_CHAIN: 'a'.repeat(29) }, 'chain', /1-28/],
    [{ AMPERE_BANTIME: '40d' }, 'bantime', /longer than bantime_max/],
    [{ AMPERE_LOG_LEVEL: 'loud' }, 'log_level', /one of trace/],
  ];
  for (const [env, key, re] of cases) {
    assert.throws(() => loadConfig({ ...noFile(d), ...env }, d), (e: unknown) => {
      assert.ok(e instanceof ConfigError, `${key}: ConfigError`);
      assert.equal(e.key, key);
      assert.match(e.message, re);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    });
  }
});

test('the password never appears in an error or in the described config', () => {
  const d = dir();
  const secret = 'sup3r\rsecret';
  assert.throws(() => loadConfig({ ...noFile(d), AMPERE_PASS: secret }, d), (e: Error) => e.message.includes('pass') && !e.message.includes('sup3r'));
  const { config } = loadConfig({ ...noFile(d), AMPERE_PASS: 'hunter2' }, d);
  assert.ok(!JSON.stringify(describeConfig(config)).includes('hunter2'));
});

test('allow accepts IPs and CIDRs of both families; unknown keys are warned about', () => {
  const d = dir();
  const file = join(d, 'a.cfg');
  writeFileSync(file, 'allow = 192.0.2.0/24, 2001:db8::/32 198.51.100.7\ntypo_key = 1\n');
  const { config, warnings } = loadConfig({ AMPERE_CONFIG: file, AMPERE_LOYALT: '3', AMPERE_ENV_FILE: join(d, 'x') }, d);
  assert.deepEqual(config.allow.map((c) => c.text), ['192.0.2.0/24', '2001:db8::/32', '198.51.100.7']);
  assert.ok(warnings.some((w) => w.includes('typo_key')));
  assert.ok(warnings.some((w) => w.includes('AMPERE_LOYALT')));
});

test('durations', () => {
  assert.equal(parseDuration('90s'), 90_000);
  assert.equal(parseDuration('10m'), 600_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('7d'), 7 * 86_400_000);
  assert.equal(parseDuration('45'), 45_000);
  assert.equal(parseDuration('0'), 0);
  assert.equal(parseDuration('1.5h'), null);
  assert.equal(parseDuration('h'), null);
  assert.equal(formatDuration(3_600_000), '1h');
  assert.equal(formatDuration(90_000), '90s');
  assert.equal(formatDuration(4 * 3_600_000), '4h');
});
