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
    [{ AMPERE_SET_SIZE: '1000' }, 'set_size', /invalid set_size: "1000" from AMPERE_SET_SIZE \(env\); expected a whole number from 65536 to 16777216/],
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
  const { config, warnings } = loadConfig({ AMPERE_CONFIG: file, AMPERE_LOYALT: '3', AMPERE_ENV_FILE: join(d, 'x'), AMPERE_IPSET_LOADER: 'off' }, d);
  assert.deepEqual(config.allow.map((c) => c.text), ['192.0.2.0/24', '2001:db8::/32', '198.51.100.7']);
  assert.ok(warnings.some((w) => w.includes('typo_key')));
  assert.ok(warnings.some((w) => w.includes('AMPERE_LOYALT')));
  // The ipset loader switch is read by the firewall, not a configuration key.
  assert.ok(!warnings.some((w) => w.includes('AMPERE_IPSET_LOADER')), warnings.join('; '));
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

/** The ConfigError of loading this environment (and the config file, if given), asserted to be one line naming the key. */
function refused(env: Record<string, string>, key: string, re: RegExp, file?: string): void {
  const d = dir();
  const extra: Record<string, string> = {};
  if (file !== undefined) { extra.AMPERE_CONFIG = join(d, 'a.cfg'); writeFileSync(extra.AMPERE_CONFIG, file); }
  assert.throws(() => loadConfig({ ...noFile(d), ...extra, ...env }, d), (e: unknown) => {
    assert.ok(e instanceof ConfigError, `${key}: ConfigError`);
    assert.equal(e.key, key);
    assert.match(e.message, new RegExp(`^invalid ${key}: `));
    assert.match(e.message, re);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  }, `${JSON.stringify(env)} ${file ?? ''}`);
}
const accepted = (env: Record<string, string>) => { const d = dir(); return loadConfig({ ...noFile(d), ...env }, d); };

test('ami_timeout is bounded by what a Node timer holds (24d); the bound is accepted', () => {
  refused({ AMPERE_AMI_TIMEOUT: '25d' }, 'ami_timeout', /to 24d \(the longest wait a Node timer holds\)/);
  refused({ AMPERE_AMI_TIMEOUT: '4w' }, 'ami_timeout', /24d/);
  assert.equal(accepted({ AMPERE_AMI_TIMEOUT: '24d' }).config.ami_timeout, 24 * 86_400_000);
  assert.ok(accepted({ AMPERE_AMI_TIMEOUT: '24d' }).config.ami_timeout < 2 ** 31);
});

test('every duration is bounded (100 years) so a ban end stays a valid date; bantime 0 stays permanent', () => {
  for (const key of ['bantime', 'bantime_max', 'findtime', 'backup_interval']) {
    refused({ [`AMPERE_${key.toUpperCase()}`]: '36501d' }, key, /to 36500d \(100 years\)/);
    refused({ [`AMPERE_${key.toUpperCase()}`]: '999999999999w' }, key, /36500d/);
  }
  const { config } = accepted({ AMPERE_BANTIME: '36500d', AMPERE_BANTIME_MAX: '36500d', AMPERE_FINDTIME: '36500d', AMPERE_BACKUP_INTERVAL: '36500d' });
  assert.equal(config.bantime_max, 36_500 * 86_400_000);
  // The longest ban, from now, is a date.
  assert.doesNotThrow(() => new Date(Date.now() + config.bantime_max).toISOString());
  assert.equal(accepted({ AMPERE_BANTIME: '0' }).config.bantime, 0);
});

test('chain names iptables or ipset refuse are refused at config, naming the key', () => {
  for (const name of ['INPUT', 'OUTPUT', 'FORWARD', 'PREROUTING', 'POSTROUTING', 'input', 'ACCEPT', 'DROP', 'RETURN', 'LOG', 'MASQUERADE']) {
    refused({ AMPERE_CHAIN: name }, 'chain', /built-in chain or target/);
  }
  for (const name of ['-x', '.x', 'a b', 'a!b', 'a/b', 'a:b', 'é']) refused({ AMPERE_CHAIN: name }, 'chain', /letters, digits/);
  // 29 characters: iptables refuses it, and its set <chain>-v4 would be 32 (ipset takes 31).
  refused({ AMPERE_CHAIN: 'a'.repeat(29) }, 'chain', /at most 28 characters/);
  refused({}, 'chain', /built-in/, 'chain = INPUT\n');
  // What both iptables flavours and ipset take (test/config-kernel.test.ts checks the kernel).
  for (const name of ['1abc', 'amp.ere', 'ampere-firewall', 'a_b', 'a'.repeat(28), 'accept_list']) {
    assert.equal(accepted({ AMPERE_CHAIN: name }).config.chain, name);
  }
});

test('set_size: a whole number from 65536 to 16777216, default 1048576; a bad one is refused naming the key', () => {
  assert.equal(accepted({}).config.set_size, 1_048_576);
  for (const good of ['65536', '2000000', '16777216']) assert.equal(accepted({ AMPERE_SET_SIZE: good }).config.set_size, Number(good));
  refused({ AMPERE_SET_SIZE: '1000' }, 'set_size', /^invalid set_size: "1000" from AMPERE_SET_SIZE \(env\); expected a whole number from 65536 to 16777216$/);
  for (const bad of ['65535', '16777217', '4294967295', '1M', '1e6', '2,000,000', '-65536']) refused({ AMPERE_SET_SIZE: bad }, 'set_size', /expected a whole number from 65536 to 16777216/);
  refused({}, 'set_size', /^invalid set_size: "1M" from set_size in .*a\.cfg; expected a whole number/, 'set_size = 1M\n');
  assert.equal(accepted({ AMPERE_SET_SIZE: '' }).config.set_size, 1_048_576, 'empty counts as unset');
});

test('metrics: a real address and port; every interface is accepted with a warning', () => {
  for (const bad of ['999.1.1.1:9327', '1.2.3:9327', '127.0.0.1:0', '127.0.0.1:65536', '127.0.0.1', ':9327', '::1:9327', '[::1]', '[1.2.3.4]:9327', '[fe80::1%eth0]:9327', 'example.com:9327', '[::g]:9327']) {
    refused({ AMPERE_METRICS: bad }, 'metrics', /port 1-65535/);
  }
  for (const good of ['127.0.0.1:9327', '[::1]:9327', 'localhost:9327', '192.0.2.1:1', '[2001:db8::1]:65535']) {
    const { config, warnings } = accepted({ AMPERE_METRICS: good });
    assert.equal(config.metrics, good);
    assert.deepEqual(warnings.filter((w) => w.startsWith('metrics')), []);
  }
  for (const open of ['0.0.0.0:9327', '[::]:9327']) {
    const { config, warnings } = accepted({ AMPERE_METRICS: open });
    assert.equal(config.metrics, open);
    assert.equal(warnings.filter((w) => w.startsWith('metrics') && /reachable from the network/.test(w)).length, 1);
  }
});

test('allow: every address (/0) is refused; a very wide network is accepted with a warning', () => {
  refused({ AMPERE_ALLOW: '0.0.0.0/0' }, 'allow', /0\.0\.0\.0\/0 allows every IPv4 address and would switch protection off/);
  refused({ AMPERE_ALLOW: '192.0.2.0/24, ::/0' }, 'allow', /::\/0 allows every IPv6 address/);
  refused({ AMPERE_ALLOW: '10.1.2.3/0' }, 'allow', /switch protection off/);
  const wide = accepted({ AMPERE_ALLOW: '10.0.0.0/7, 2001::/15' });
  assert.deepEqual(wide.config.allow.map((c) => c.text), ['10.0.0.0/7', '2001::/15']);
  assert.equal(wide.warnings.filter((w) => /^allow: 10\.0\.0\.0\/7, 2001::\/15 are very wide networks/.test(w)).length, 1);
  const fine = accepted({ AMPERE_ALLOW: '10.0.0.0/8, 2001:db8::/16' });
  assert.deepEqual(fine.warnings.filter((w) => w.startsWith('allow')), []);
});

test('an empty pass is refused (ami-io would send "admin"), naming the key and never a password', () => {
  refused({}, 'pass', /not empty/, 'pass =\n');
  refused({}, 'pass', /not empty/, 'pass =    \n');
  assert.equal(accepted({ AMPERE_PASS: 'x' }).config.pass, 'x');
});
