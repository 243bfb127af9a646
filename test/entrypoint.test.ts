/**
 * docker/entrypoint.sh, run directly (no container): argument dispatch, the
 * environment it hands to Node, its preflight errors, exec (so that the
 * signal from `docker stop` reaches Node), and the restore helper against a
 * real SQLite database.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { REPO } from './e2e/deploy-files';
import { LAUNCH_HEAP_LIMIT_MB, LAUNCH_SEMI_SPACE_MB } from '../src/cli/heap';
import { LAUNCH_COMPILE_FLAGS, LAUNCH_HEAP_FLAGS, LAUNCH_NODE_FLAGS } from '../src/cli/launch';

const ENTRYPOINT = join(REPO, 'docker/entrypoint.sh');
let dir: string;
let fakeBin: string;
let fakeApp: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'ampere-entrypoint-'));
  // A fake `node` that reports what it was given, as JSON, and its own PID.
  fakeBin = join(dir, 'bin');
  mkdirSync(fakeBin);
  writeFileSync(join(fakeBin, 'node'), `#!/bin/sh
if [ "\${FAKE_NODE_SLEEP:-}" ]; then trap 'echo "{\\"signal\\":\\"TERM\\",\\"pid\\":$$}"; exit 0' TERM; echo "{\\"ready\\":true,\\"pid\\":$$}"; while :; do sleep 0.05; done; fi
printf '{"pid":%s,"argv":[' "$$"
sep=''; for a in "$@"; do printf '%s"%s"' "$sep" "$a"; sep=','; done
printf '],"env":{'
sep=''; env | sort | grep '^AMPERE_' | while IFS= read -r kv; do printf '%s"%s":"%s"' "$sep" "\${kv%%=*}" "\${kv#*=}"; sep=','; done
printf '}}\\n'
`);
  chmodSync(join(fakeBin, 'node'), 0o755);
  fakeApp = join(dir, 'app');
  mkdirSync(join(fakeApp, 'dist'), { recursive: true });
  writeFileSync(join(fakeApp, 'dist', 'cli.js'), '// fake\n');
});

after(() => { rmSync(dir, { recursive: true, force: true }); });

interface Result { code: number | null; stdout: string; stderr: string }

function entry(args: string[], env: Record<string, string | undefined> = {}, opts: { realNode?: boolean; wrap?: string[] } = {}): Result {
  const base: Record<string, string> = {
    PATH: opts.realNode ? process.env.PATH! : `${fakeBin}:/usr/sbin:/usr/bin:/sbin:/bin`,
    AMPERE_APP_DIR: opts.realNode ? REPO : fakeApp,
    AMPERE_DB: join(dir, 'data', 'ampere.db'),
  };
  const full: Record<string, string> = { ...base };
  for (const [k, v] of Object.entries(env)) { if (v === undefined) delete full[k]; else full[k] = v; }
  const cmd = opts.wrap ? opts.wrap[0] : ENTRYPOINT;
  const argv = opts.wrap ? [...opts.wrap.slice(1), ENTRYPOINT, ...args] : args;
  const r = spawnSync(cmd, argv, { env: full, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const json = (r: Result) => JSON.parse(r.stdout.trim().split('\n').pop()!) as { argv: string[]; env: Record<string, string>; pid: number };

test('no argument runs `ampere run` with the app from AMPERE_APP_DIR', () => {
  const r = entry([]);
  assert.equal(r.code, 0, r.stderr);
  const out = json(r);
  assert.deepEqual(out.argv, [...LAUNCH_NODE_FLAGS, join(fakeApp, 'dist/cli.js'), 'run']);
  assert.match(r.stderr, /starting ampere: database .*ampere\.db, configuration from environment/);
});

test("the daemon gets Ampere's heap size, each part unless NODE_OPTIONS sets it, and its compile flags; `npm start` gives the same", () => {
  const [limit, semi] = LAUNCH_HEAP_FLAGS;
  assert.deepEqual(json(entry(['run'], { NODE_OPTIONS: '--max-old-space-size=512' })).argv, [semi, ...LAUNCH_COMPILE_FLAGS, join(fakeApp, 'dist/cli.js'), 'run']);
  assert.deepEqual(json(entry(['run'], { NODE_OPTIONS: '--max-semi-space-size=32' })).argv, [limit, ...LAUNCH_COMPILE_FLAGS, join(fakeApp, 'dist/cli.js'), 'run']);
  assert.deepEqual(json(entry(['run'], { NODE_OPTIONS: '--max_old_space_size=512 --max-semi-space-size=32' })).argv, [...LAUNCH_COMPILE_FLAGS, join(fakeApp, 'dist/cli.js'), 'run']);
  assert.deepEqual(json(entry(['run'], { NODE_OPTIONS: '--enable-source-maps' })).argv.slice(0, LAUNCH_NODE_FLAGS.length), LAUNCH_NODE_FLAGS);
  assert.deepEqual(LAUNCH_HEAP_FLAGS, [`--max-old-space-size=${LAUNCH_HEAP_LIMIT_MB}`, `--max-semi-space-size=${LAUNCH_SEMI_SPACE_MB}`]);
  assert.deepEqual(json(entry(['health'])).argv, [join(fakeApp, 'dist/cli.js'), 'health'], 'short commands keep Node defaults');
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  assert.equal(pkg.scripts.start, `node ${LAUNCH_NODE_FLAGS.join(' ')} dist/cli.js run`);
});

test('options alone are options of `run`; other commands go to the CLI', () => {
  // After the launch flags and the CLI's path.
  assert.deepEqual(json(entry(['--verbose'])).argv.slice(LAUNCH_NODE_FLAGS.length + 1), ['run', '--verbose']);
  assert.deepEqual(json(entry(['run', '-x'])).argv.slice(LAUNCH_NODE_FLAGS.length + 1), ['run', '-x']);
  assert.deepEqual(json(entry(['health'])).argv.slice(1), ['health']);
  assert.deepEqual(json(entry(['unban', '10.0.0.1'])).argv.slice(1), ['unban', '10.0.0.1']);
  assert.deepEqual(json(entry(['bans', '--json'])).argv.slice(1), ['bans', '--json']);
});

test('an executable on PATH runs as is (docker compose run ampere sh ...)', () => {
  const r = entry(['sh', '-c', 'echo "hello $AMPERE_DB"']);
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), `hello ${join(dir, 'data', 'ampere.db')}`);
});

test('the environment reaches Node unchanged (the HEALTHCHECK, run by docker exec, sees the same)', () => {
  const out = json(entry(['run'], { AMPERE_LOYALTY: '4', AMPERE_ALLOW: '', AMPERE_BANTIME: '5s', OTHER: 'x' }));
  assert.equal(out.env.AMPERE_LOYALTY, '4');
  assert.equal(out.env.AMPERE_ALLOW, '');
  assert.equal(out.env.AMPERE_BANTIME, '5s');
});

test('the database defaults to /data/ampere.db', () => {
  const out = json(entry(['health'], { AMPERE_DB: undefined }));
  assert.equal(out.env.AMPERE_DB, '/data/ampere.db');
  assert.equal(json(entry(['health'], { AMPERE_DB: '' })).env.AMPERE_DB, '/data/ampere.db');
});

test('run creates the database directory', () => {
  const db = join(dir, 'fresh', 'sub', 'ampere.db');
  const r = entry(['run'], { AMPERE_DB: db });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(existsSync(join(dir, 'fresh', 'sub')));
});

test('preflight: unwritable database directory, missing config file, missing app', () => {
  let r = entry(['run'], { AMPERE_DB: '/proc/ampere-test/ampere.db' });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /database directory \/proc\/ampere-test is not writable/);
  r = entry(['run'], { AMPERE_CONFIG: join(dir, 'missing.cfg') });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /AMPERE_CONFIG=.*missing\.cfg is not a readable file/);
  r = entry(['run'], { AMPERE_APP_DIR: join(dir, 'nowhere') });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /dist\/cli\.js not found/);
  // a readable config file is named in the start line
  const cfg = join(dir, 'ampere.cfg');
  writeFileSync(cfg, 'loyalty = 4\n');
  r = entry(['run'], { AMPERE_CONFIG: cfg });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`configuration from environment, then ${cfg}`));
  assert.equal(json(r).env.AMPERE_CONFIG, cfg);
});

test('preflight: without CAP_NET_ADMIN it refuses to start, unless the backend is dry-run', (t) => {
  const setpriv = spawnSync('sh', ['-c', 'command -v setpriv'], { encoding: 'utf8' }).stdout.trim();
  if (process.getuid?.() !== 0 || !setpriv) { t.skip('needs root and setpriv (util-linux)'); return; }
  const drop = [setpriv, '--inh-caps=-net_admin', '--bounding-set=-net_admin', '--'];
  let r = entry(['run'], {}, { wrap: drop });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /no CAP_NET_ADMIN: run the container with cap_add: \[NET_ADMIN, NET_RAW\]/);
  r = entry(['run'], { AMPERE_BACKEND: 'dry-run' }, { wrap: drop });
  assert.equal(r.code, 0, r.stderr);
  // other commands (health) need no capability
  assert.equal(entry(['health'], {}, { wrap: drop }).code, 0);
});

test('exec: Node replaces the shell, so SIGTERM from tini reaches it', async () => {
  const child = spawn(ENTRYPOINT, ['run'], {
    env: { PATH: `${fakeBin}:/usr/bin:/bin`, AMPERE_APP_DIR: fakeApp, AMPERE_DB: join(dir, 'data', 'ampere.db'), FAKE_NODE_SLEEP: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  const deadline = Date.now() + 10_000;
  while (!out.includes('ready') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.match(out, /"ready":true/);
  assert.equal(JSON.parse(out.split('\n')[0]).pid, child.pid, 'node runs as the entrypoint process itself');
  const code = await new Promise<number | null>((resolve) => { child.once('exit', (c) => resolve(c)); child.kill('SIGTERM'); });
  assert.equal(code, 0);
  assert.match(out, /"signal":"TERM"/);
});

// --------------------------------------------------------- backup/restore --

function makeDb(file: string, addresses: string[]) {
  mkdirSync(join(file, '..'), { recursive: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.exec('create table if not exists bans (id integer primary key, address text not null, lifted_at integer)');
  const ins = db.prepare('insert into bans (address) values (?)');
  for (const a of addresses) ins.run(a);
  return db; // left open, like the running daemon's connection
}

function addressesIn(file: string): string[] {
  const db = new Database(file, { readonly: true });
  try { return (db.prepare('select address from bans order by id').all() as { address: string }[]).map((r) => r.address); } finally { db.close(); }
}

test('backup is the CLI\'s (ampere backup), not the entrypoint\'s', () => {
  assert.deepEqual(json(entry(['backup', '--to', '/backups'])).argv.slice(1), ['backup', '--to', '/backups']);
});

test('restore: refuses while the daemon answers on its socket, keeps the previous database, drops stale WAL files', async () => {
  const dataDir = join(dir, 'restore-data');
  const dbFile = join(dataDir, 'ampere.db');
  makeDb(dbFile, ['198.51.100.7']).close();
  const backupFile = join(dir, 'restore-src.db');
  makeDb(backupFile, ['203.0.113.9', '203.0.113.10']).close();
  // a "daemon" listening on the control socket
  const sock = join(dataDir, 'ampere.sock');
  const server = createServer((c) => c.end());
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  const entryAsync = (args: string[]) => new Promise<Result>((resolve) => {
    const child = spawn(ENTRYPOINT, args, { env: { PATH: process.env.PATH!, AMPERE_APP_DIR: REPO, AMPERE_DB: dbFile } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  try {
    const r = await entryAsync(['restore', backupFile]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Ampere is running .* stop it first/);
    assert.deepEqual(addressesIn(dbFile), ['198.51.100.7']);
    // --force overrides the check
    const forced = await entryAsync(['restore', backupFile, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.deepEqual(addressesIn(dbFile), ['203.0.113.9', '203.0.113.10']);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
  // stopped daemon: the socket file may stay behind, nobody answers: restore goes ahead
  writeFileSync(sock, '');
  makeDb(backupFile, ['203.0.113.11']).close();
  writeFileSync(`${dbFile}-wal`, 'stale');
  let r = entry(['restore', backupFile], { AMPERE_DB: dbFile }, { realNode: true });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(addressesIn(dbFile), ['203.0.113.9', '203.0.113.10', '203.0.113.11']);
  assert.ok(!existsSync(`${dbFile}-wal`) || readFileSync(`${dbFile}-wal`, 'utf8') !== 'stale', 'the old WAL is gone');
  const previous = readdirSync(dataDir).filter((f) => f.startsWith('ampere.db.before-restore-'));
  assert.ok(previous.length >= 1);
  assert.ok(previous.some((f) => addressesIn(join(dataDir, f)).join() === '198.51.100.7'), 'the first database was kept');

  // a corrupt file is refused and changes nothing
  const junk = join(dir, 'junk.db');
  writeFileSync(junk, 'this is not a database'.repeat(100));
  r = entry(['restore', junk], { AMPERE_DB: dbFile }, { realNode: true });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /restore failed/);
  assert.deepEqual(addressesIn(dbFile), ['203.0.113.9', '203.0.113.10', '203.0.113.11']);

  assert.equal(entry(['restore'], { AMPERE_DB: dbFile }).code, 2);
  assert.equal(entry(['restore', join(dir, 'absent.db')], { AMPERE_DB: dbFile }).code, 1);
});
