/**
 * Ampere on a plain host: setup's native-module check, scripts/install.sh, the systemd
 * unit (verified by systemd-analyze where installed, its commands run here), where the
 * configuration's .env comes from, and a bare `ampere`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LAUNCH_NODE_FLAGS } from '../src/cli/launch';
import { FakeAmiProcess } from '../tools/lab/ami-proc';
import { Netns, skipUnlessRoot } from '../tools/lab/netns';

const REPO = join(__dirname, '..');
const CLI = join(REPO, 'dist', 'cli.js');
const UNIT = join(REPO, 'deploy', 'ampere.service');
const built = existsSync(CLI) ? undefined : 'dist/ not built (npm run build)';
const env0 = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', AMPERE_CONFIG: '/dev/null' };

function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** [Section] Key=Value lines of a unit file; repeated keys keep every value. */
function parseUnit(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) { section = s[1]; continue; }
    const i = line.indexOf('=');
    assert.ok(i > 0, `unit line without "=": ${line}`);
    const key = `${section}.${line.slice(0, i)}`;
    out.set(key, [...(out.get(key) ?? []), line.slice(i + 1)]);
  }
  return out;
}

const unit = parseUnit(readFileSync(UNIT, 'utf8'));
const one = (key: string) => { const v = unit.get(key); assert.equal(v?.length, 1, `${key} once`); return v![0]; };
/** The unit's command with the installed /usr/local/bin/ampere replaced by this checkout's build. */
const here = (cmd: string) => cmd.replaceAll('/usr/local/bin/ampere', CLI).split(/\s+/);

test('setup: the native-module check passes here and fails, saying what to do, when the module was not built', () => {
  const ok = spawnSync(process.execPath, [join(REPO, 'scripts/check-native.cjs')], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  // what npm 12 leaves when it skips better-sqlite3's install script: the package without build/
  const dir = tmp('ampere-native-');
  try {
    const pkg = join(dir, 'node_modules', 'better-sqlite3');
    mkdirSync(pkg, { recursive: true });
    for (const f of ['package.json', 'lib']) cpSync(join(REPO, 'node_modules/better-sqlite3', f), join(pkg, f), { recursive: true });
    for (const dep of ['bindings', 'file-uri-to-path']) cpSync(join(REPO, 'node_modules', dep), join(dir, 'node_modules', dep), { recursive: true });
    const bad = spawnSync(process.execPath, [join(REPO, 'scripts/check-native.cjs'), dir], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /setup: FAILED: better-sqlite3 does not load/);
    assert.match(bad.stderr, /allowScripts/);
    assert.match(bad.stderr, /npm rebuild better-sqlite3/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // npm 12 runs better-sqlite3's install script only because package.json allows it
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { allowScripts?: Record<string, boolean> };
  assert.equal(pkg.allowScripts?.['better-sqlite3'], true);
  // and setup checks it after npm ci, before it builds and says "done"
  const setup = readFileSync(join(REPO, 'scripts/setup.sh'), 'utf8');
  const at = (s: string) => { const i = setup.indexOf(s); assert.ok(i >= 0, s); return i; };
  assert.ok(at('npm ci') < at('node scripts/check-native.cjs') && at('node scripts/check-native.cjs') < at('setup: done'));
  assert.match(setup, /^set -euo pipefail$/m);
});

test('install.sh: ampere on PATH, an example ampere.cfg only when none exists, the unit', { skip: built }, () => {
  const root = tmp('ampere-install-');
  try {
    const run = () => spawnSync('bash', [join(REPO, 'scripts/install.sh')], { encoding: 'utf8', env: { ...env0, AMPERE_PREFIX: root } });
    const r = run();
    assert.equal(r.status, 0, r.stderr);
    const link = join(root, 'usr/local/bin/ampere');
    assert.ok(lstatSync(link).isSymbolicLink());
    assert.equal(readlinkSync(link), CLI);
    const usage = spawnSync(link, ['--help'], { encoding: 'utf8', env: env0 });
    assert.equal(usage.status, 0, usage.stderr);
    const cfg = join(root, 'etc/ampere/ampere.cfg');
    assert.equal(readFileSync(cfg, 'utf8'), readFileSync(join(REPO, 'deploy/ampere.cfg.example'), 'utf8'));
    // the example changes nothing (every line a comment) and parses
    const check = spawnSync(CLI, ['check', '--config-only'], { encoding: 'utf8', env: { ...env0, AMPERE_CONFIG: cfg } });
    assert.equal(check.status, 0, check.stderr);
    assert.equal(readFileSync(join(root, 'etc/systemd/system/ampere.service'), 'utf8'), readFileSync(UNIT, 'utf8'));
    // an operator's file is never overwritten
    writeFileSync(cfg, 'loyalty = 7\n');
    assert.equal(run().status, 0);
    assert.equal(readFileSync(cfg, 'utf8'), 'loyalty = 7\n');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('ampere.service: restarts, checks the configuration first, launch flags, capabilities only, SIGTERM', () => {
  assert.equal(one('Service.Restart'), 'always');
  assert.deepEqual(here(one('Service.ExecStartPre')).slice(1), ['check', '--config-only']);
  const start = one('Service.ExecStart').split(/\s+/);
  assert.deepEqual(start.slice(0, 2), ['/usr/bin/env', 'node']);
  assert.deepEqual(start.slice(2, -2), LAUNCH_NODE_FLAGS, 'the launch flags of npm start and the container');
  assert.deepEqual(start.slice(-2), ['/usr/local/bin/ampere', 'run']);
  assert.deepEqual(one('Service.CapabilityBoundingSet').split(/\s+/).sort(), ['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_SYS_NICE']);
  assert.equal(one('Service.NoNewPrivileges'), 'yes');
  assert.equal(one('Service.KillSignal'), 'SIGTERM');
  assert.equal(one('Service.StateDirectory'), 'ampere', '/var/lib/ampere: the default database directory');
  assert.equal(one('Service.WorkingDirectory'), '/');
  assert.equal(unit.get('Service.EnvironmentFile'), undefined, 'no .env from a directory');
  assert.equal(one('Install.WantedBy'), 'multi-user.target');
});

test('ampere.service passes systemd-analyze verify', { skip: built }, (t) => {
  if (spawnSync('systemd-analyze', ['--version']).error) { t.skip('systemd-analyze not installed (Debian: apt-get install systemd)'); return; }
  const dir = tmp('ampere-unit-');
  try {
    // the same unit, pointing at this checkout's build instead of the installed link
    const file = join(dir, 'ampere.service');
    writeFileSync(file, readFileSync(UNIT, 'utf8').replaceAll('/usr/local/bin/ampere', CLI));
    const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ExecStartPre: a valid configuration passes; a bad one stops the start naming the key', { skip: built }, () => {
  const [cmd, ...args] = here(one('Service.ExecStartPre'));
  const good = spawnSync(cmd, args, { encoding: 'utf8', cwd: '/', env: env0 });
  assert.equal(good.status, 0, good.stderr);
  const bad = spawnSync(cmd, args, { encoding: 'utf8', cwd: '/', env: { ...env0, AMPERE_LOYALTY: 'many' } });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /loyalty/);
});

test('.env: never read from the working directory, only from AMPERE_ENV_FILE (or Ampere\'s own directory)', { skip: built }, () => {
  const dir = tmp('ampere-cwd-');
  try {
    writeFileSync(join(dir, '.env'), 'AMPERE_LOYALTY=many\n');
    const run = (env: Record<string, string>) => spawnSync(CLI, ['check', '--config-only'], { encoding: 'utf8', cwd: dir, env: { ...env0, ...env } });
    const ignored = run({});
    assert.equal(ignored.status, 0, `a .env in the working directory is not read: ${ignored.stderr}`);
    const named = run({ AMPERE_ENV_FILE: join(dir, '.env') });
    assert.equal(named.status, 1);
    assert.match(named.stderr, /invalid loyalty: "many" from AMPERE_LOYALTY \(\.env\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a bare `ampere` prints the usage and exits 2; `ampere run` is the daemon', { skip: built }, () => {
  const r = spawnSync(CLI, [], { encoding: 'utf8', env: env0, timeout: 30_000 });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^usage: ampere <command>/);
  assert.match(r.stderr, /^ {2}run\s/m);
  assert.equal(r.stdout, '');
});

const rootSkip = built ?? skipUnlessRoot();

test('ExecStart under the unit\'s capability bounding set: starts, bans in the kernel, stops on SIGTERM', { skip: rootSkip }, async () => {
  const ns = await Netns.create();
  const dir = tmp('ampere-svc-');
  const ami = await FakeAmiProcess.start(ns.name);
  try {
    const caps = one('Service.CapabilityBoundingSet').split(/\s+/).map((c) => `+${c.slice(4).toLowerCase()}`).join(',');
    const child = spawn('ip', ['netns', 'exec', ns.name, 'setpriv', `--bounding-set=-all,${caps}`, '--', ...here(one('Service.ExecStart'))], {
      cwd: '/', stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...env0, AMPERE_PORT: String(ami.port), AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'ipset' },
    });
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d) => { out += d; if (/"msg":"ampere started"/.test(out)) resolve(); });
      void exited.then((code) => reject(new Error(`exited ${code} before starting: ${err}\n${out}`)));
    });
    await ami.waitForLogins(1);
    // the operator's test ban from the README, through the control socket, into the kernel set
    const ban = spawnSync('ip', ['netns', 'exec', ns.name, CLI, 'ban', '192.0.2.1', '--for', '1m'], { encoding: 'utf8', env: { ...env0, AMPERE_DB: join(dir, 'ampere.db') } });
    assert.equal(ban.status, 0, ban.stderr);
    assert.equal((await ns.exec('ipset', ['test', 'ampere-v4', '192.0.2.1'])).code, 0, 'in the kernel set');
    child.kill('SIGTERM');
    assert.equal(await exited, 0, `a clean stop on SIGTERM: ${err}`);
    // the ban stays in the kernel after the stop
    assert.equal((await ns.exec('ipset', ['test', 'ampere-v4', '192.0.2.1'])).code, 0);
  } finally {
    await ami.stop();
    await ns.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});
