/**
 * What can be checked of the container deployment without a Docker engine:
 * docker-compose.yml parses and says what the e2e test relies on, the
 * Dockerfiles have the stages, packages, health check and entrypoint the
 * issue asks for, .env.example lists every configuration key with its
 * default, and deploy/asterisk/ has the AMI account Ampere logs in with.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KEYS } from '../src/config/keys';
import {
  REPO, confValue, execForm, healthcheckCommand, interpolate, lastOp, loadCompose, parseAsteriskConf,
  parseDockerfile, parseEnvExample, pjsipAuths, service, serviceEnvironment, serviceLongMounts, serviceMounts, stageEnv,
} from './e2e/deploy-files';
import { parseYaml } from './e2e/yaml';

const compose = loadCompose();
const envName = (key: string) => `AMPERE_${key.toUpperCase()}`;
/** Keys docker-compose.yml fixes rather than passing from .env. */
const FIXED = new Set(['db']);

function pyYaml(file: string): unknown | undefined {
  try {
    const out = execFileSync('python3', ['-c', 'import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))', file], {
      encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 20_000,
    });
    return JSON.parse(out);
  } catch {
    return undefined; // no python3 or no PyYAML: the own parser alone decides
  }
}

function stringify(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stringify);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, stringify(x)]));
  return v === null ? null : String(v);
}

test('docker-compose.yml parses, and PyYAML (where installed) reads the same document', (t) => {
  assert.deepEqual(Object.keys(compose.services as object).sort(), ['ampere', 'asterisk']);
  assert.deepEqual(Object.keys(compose.volumes as object).sort(), ['ampere-data', 'asterisk-lib']);
  const py = pyYaml(join(REPO, 'docker-compose.yml'));
  if (py === undefined) { t.diagnostic('PyYAML not available: cross-check skipped'); return; }
  assert.deepEqual(compose, stringify(py));
});

test('the YAML reader refuses what it does not understand instead of misreading it', () => {
  assert.throws(() => parseYaml('a: &x 1\nb: *x\n'), /unsupported/);
  assert.throws(() => parseYaml('a: |\n  text\n'), /unsupported/);
  assert.throws(() => parseYaml('a: 1\na: 2\n'), /duplicate/);
  assert.deepEqual(parseYaml('a:\n  - x # c\n  - "y # z"\nb: [p, \'q\']\nc:\n'), { a: ['x', 'y # z'], b: ['p', 'q'], c: null });
});

test('compose variable interpolation', () => {
  assert.equal(interpolate('${A:-x}', {}), 'x');
  assert.equal(interpolate('${A:-x}', { A: '' }), 'x');
  assert.equal(interpolate('${A-x}', { A: '' }), '');
  assert.equal(interpolate('${A:-x}/$B/$$C', { A: 'a', B: 'b' }), 'a/b/$C');
  assert.throws(() => interpolate('${A:?need A}', {}), /need A/);
});

test('docker compose up -d starts Ampere alone; the demo Asterisk only with --profile pbx', () => {
  // what `docker compose up` starts: the services without profiles, and those of the given profiles
  const started = (profiles: string[]) => Object.entries(compose.services as Record<string, { profiles?: string[] }>)
    .filter(([, svc]) => !svc.profiles || svc.profiles.some((p) => profiles.includes(p))).map(([name]) => name).sort();
  assert.deepEqual(started([]), ['ampere'], 'the sidecar of the Asterisk already on this host');
  assert.deepEqual(started(['pbx']), ['ampere', 'asterisk']);
  // nothing ties the sidecar to the demo PBX: it reconnects to whatever Asterisk answers on AMI
  assert.equal(service(compose, 'ampere').depends_on, undefined);
});

test('asterisk service: Debian Asterisk image, host network, the repo config folder mounted', () => {
  const svc = service(compose, 'asterisk');
  assert.deepEqual(svc.profiles, ['pbx']);
  assert.equal(svc.network_mode, 'host');
  assert.equal(svc.restart, 'unless-stopped');
  const build = svc.build as { context: string };
  assert.equal(build.context, 'docker/asterisk');
  const df = parseDockerfile(join(REPO, 'docker/asterisk/Dockerfile'));
  assert.equal(df.stages.length, 1);
  assert.match(df.stages[0].from, /^debian:/);
  const run = df.stages[0].instructions.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  for (const pkg of ['asterisk', 'asterisk-modules', 'asterisk-config']) assert.match(run, new RegExp(`\\s${pkg}(=\\S+)?(\\s|$)`), pkg);
  // the compose health check is the image's, and the e2e test waits on the same command
  const hc = svc.healthcheck as { test: string[] };
  assert.deepEqual(hc.test, ['CMD', ...healthcheckCommand(df.stages[0])]);
  // the foreground command the e2e test runs in its chroot
  const cmd = execForm(lastOp(df.stages[0], 'CMD')!.args);
  assert.equal(cmd[0], 'asterisk');
  assert.ok(cmd.includes('-f'), 'asterisk must stay in the foreground');

  const conf = serviceMounts(compose, 'asterisk').find((m) => m.target === '/etc/asterisk');
  assert.ok(conf, 'deploy folder mounted at /etc/asterisk');
  assert.ok(conf.bind && conf.readOnly);
  assert.equal(conf.source, join(REPO, 'deploy/asterisk'));
  for (const f of ['manager.conf', 'pjsip.conf', 'modules.conf', 'asterisk.conf', 'logger.conf', 'extensions.conf']) {
    assert.ok(existsSync(join(conf.source, f)), `deploy/asterisk/${f}`);
  }
  // logs go to the console only, which docker rotates: no log file grows in a volume
  const logfiles = parseAsteriskConf(join(conf.source, 'logger.conf')).find((s) => s.name === 'logfiles');
  assert.deepEqual(logfiles?.values.map(([k]) => k), ['console']);
  assert.ok(!serviceMounts(compose, 'asterisk').some((m) => m.target === '/var/log/asterisk'));
  const logging = svc.logging as { driver: string; options: Record<string, string> };
  assert.equal(logging.driver, 'json-file');
  assert.ok(logging.options['max-size'] && logging.options['max-file'], 'rotated');
});

test('the demo Asterisk image installs the Asterisk version that was tested', (t) => {
  const df = parseDockerfile(join(REPO, 'docker/asterisk/Dockerfile'));
  // a dated snapshot of the Debian archive and exact versions: a build next month installs the same
  assert.match(df.args.DEBIAN_SNAPSHOT ?? '', /^\d{8}T\d{6}Z$/);
  const version = df.args.ASTERISK_VERSION ?? '';
  assert.match(version, /^1:\d+\.\d+\.\d+\S*-\d+$/);
  const run = df.stages[0].instructions.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  assert.match(run, /snapshot\.debian\.org\/archive\/debian\/%s/);
  for (const pkg of ['asterisk', 'asterisk-modules', 'asterisk-config']) {
    assert.ok(run.includes(` ${pkg}=\${ASTERISK_VERSION} `), `${pkg} pinned to ASTERISK_VERSION`);
  }
  const declared = df.stages[0].instructions.filter((i) => i.op === 'ARG').map((i) => i.args.trim());
  assert.deepEqual(declared.sort(), ['ASTERISK_VERSION', 'DEBIAN_SNAPSHOT'], 'both ARGs reach the stage');
  // the version the end-to-end test's Asterisk runs (scripts/e2e-setup.sh's stamp), where it was set up
  const stamp = join(process.env.AMPERE_E2E_ROOT ?? '/var/cache/ampere-e2e/sid', '.ampere-e2e-ready');
  if (!existsSync(stamp)) { t.diagnostic(`no e2e Asterisk here (${stamp}): version not compared`); return; }
  assert.equal(/^asterisk (\S+),/.exec(readFileSync(stamp, 'utf8'))?.[1], version, 'the pinned version is the one the e2e test ran');
});

test('manager.conf: AMI on loopback, an ampere account with read = security and write = no', () => {
  const sections = parseAsteriskConf(join(REPO, 'deploy/asterisk/manager.conf'));
  const general = sections.find((s) => s.name === 'general');
  assert.equal(confValue(general, 'enabled'), 'yes');
  assert.equal(confValue(general, 'bindaddr'), '127.0.0.1');
  assert.equal(confValue(general, 'port'), KEYS.port.default);
  const ampere = sections.find((s) => s.name === KEYS.user.default);
  assert.ok(ampere, `[${KEYS.user.default}] account`);
  assert.equal(confValue(ampere, 'read'), 'security');
  assert.equal(confValue(ampere, 'write'), 'no');
  // out of the box the sidecar logs in with its defaults
  assert.equal(confValue(ampere, 'secret'), KEYS.pass.default);
  assert.equal(confValue(ampere, 'permit'), '127.0.0.1/255.255.255.255');
  const users = sections.filter((s) => s.name !== 'general');
  assert.deepEqual(users.map((s) => s.name), [KEYS.user.default], 'no other AMI account');
});

test('one manager.conf block everywhere: README, docs/deploy.md and the demo PBX say the same (but the secret)', () => {
  const blocks = (file: string) => [...readFileSync(join(REPO, file), 'utf8').matchAll(/```ini\n[ \t]*(\[ampere\]\n[\s\S]*?)```/g)]
    .map((m) => m[1].split('\n').map((l) => l.trim()).filter(Boolean));
  const readme = blocks('README.md');
  const docs = blocks('docs/deploy.md');
  assert.equal(readme.length, 1, 'one [ampere] block in README.md');
  assert.deepEqual(docs, readme, 'docs/deploy.md shows the same block');
  const demo = parseAsteriskConf(join(REPO, 'deploy/asterisk/manager.conf')).find((x) => x.name === 'ampere')!;
  const withoutSecret = (lines: string[]) => lines.filter((l) => !l.startsWith('secret'));
  assert.deepEqual(withoutSecret(readme[0]), ['[ampere]', ...withoutSecret(demo.values.map(([k, v]) => `${k} = ${v}`))]);
  assert.ok(readme[0].includes('secret = change-me-to-a-long-random-secret'));
});

test('pjsip.conf: UDP and TCP on IPv4 and IPv6, and endpoints with passwords', () => {
  const file = join(REPO, 'deploy/asterisk/pjsip.conf');
  const sections = parseAsteriskConf(file);
  const transports = sections.filter((s) => confValue(s, 'type') === 'transport')
    .map((s) => `${confValue(s, 'protocol')} ${confValue(s, 'bind')}`).sort();
  assert.deepEqual(transports, ['tcp 0.0.0.0:5060', 'tcp [::]:5060', 'udp 0.0.0.0:5060', 'udp [::]:5060']);
  assert.ok(pjsipAuths(file).length >= 1, 'at least one endpoint with a password (the e2e phone uses the first)');
});

test('ampere service: host network, all capabilities dropped but NET_ADMIN/NET_RAW/SYS_NICE, hardened, /data volume, backups bind mount', () => {
  const svc = service(compose, 'ampere');
  assert.equal(svc.network_mode, 'host');
  assert.deepEqual(svc.cap_drop, ['ALL']);
  assert.deepEqual([...(svc.cap_add as string[])].sort(), ['NET_ADMIN', 'NET_RAW', 'SYS_NICE']);
  assert.deepEqual(svc.security_opt, ['no-new-privileges:true']);
  assert.equal(svc.read_only, 'true', 'read-only root file system');
  assert.ok((svc.tmpfs as string[]).some((t) => t.split(':')[0] === '/tmp'), 'a tmpfs /tmp');
  assert.equal(svc.restart, 'unless-stopped');
  assert.equal((svc.build as { context: string }).context, '.');
  assert.equal(svc.privileged, undefined, 'capabilities, not privileged');
  // every path the container writes is a volume or a tmpfs: the database, the backups
  const writable = [...serviceMounts(compose, 'ampere').filter((m) => !m.readOnly).map((m) => m.target), '/tmp'];
  for (const p of ['/data', '/backups']) assert.ok(writable.includes(p), `${p} writable`);
  // the host's iptables lock, never created by docker (as a directory) when missing
  const lock = serviceLongMounts(compose, 'ampere').find((m) => m.target === '/run/xtables.lock');
  assert.ok(lock, '/run/xtables.lock mounted');
  assert.equal(lock.type, 'bind');
  assert.equal(lock.source, '/run/xtables.lock');
  assert.deepEqual(lock.bind, { create_host_path: 'false' });
  assert.notEqual(lock.read_only, 'true', 'iptables takes the lock (flock on a writable file)');
  const mounts = serviceMounts(compose, 'ampere');
  const data = mounts.find((m) => m.target === '/data');
  assert.ok(data && !data.bind, '/data is a named volume');
  assert.ok(Object.keys(compose.volumes as object).includes(data.source), `volume ${data.source} declared`);
  const backups = mounts.find((m) => m.target === '/backups');
  assert.ok(backups && backups.bind && !backups.readOnly, '/backups is a writable bind mount');
  assert.ok(!('ports' in svc), 'no ports: host network, health check reads a file');
});

test('ampere configuration: the keys set in .env, the database fixed on /data', () => {
  const svc = service(compose, 'ampere');
  // only the keys the operator sets reach the container: unset ones never arrive
  // empty, so the daemon, `docker exec` and the HEALTHCHECK all see the same thing
  assert.deepEqual(svc.env_file, [{ path: '.env', required: 'false' }]);
  assert.deepEqual(Object.keys(svc.environment as object).sort(), ['AMPERE_BACKUP_DIR', 'AMPERE_DB']);
  assert.deepEqual(serviceEnvironment(compose, 'ampere', {}), { AMPERE_DB: '/data/ampere.db', AMPERE_BACKUP_DIR: '/backups' });
  // backups go to the bind mount unless .env says otherwise, and an empty value turns them off
  assert.equal(serviceEnvironment(compose, 'ampere', { AMPERE_BACKUP_DIR: '' }).AMPERE_BACKUP_DIR, '');
  assert.equal(serviceEnvironment(compose, 'ampere', { AMPERE_BACKUP_DIR: '/data/b' }).AMPERE_BACKUP_DIR, '/data/b');
});

test('.env.example lists every key with its default, all commented out', () => {
  const example = parseEnvExample();
  for (const [key, spec] of Object.entries(KEYS)) {
    if (FIXED.has(key)) continue;
    const name = envName(key);
    const line = example.get(name);
    assert.ok(line, `.env.example lists ${name}`);
    const composeDefault = /^\$\{[A-Z_]+:?-([^}]*)\}$/.exec(String((service(compose, 'ampere').environment as Record<string, string>)[name] ?? ''))?.[1];
    assert.equal(line.value, composeDefault ?? spec.default, `${name} shows the default (the compose file's, else Ampere's)`);
    assert.ok(line.commented, `${name} is commented out: copying the file changes nothing`);
    if (line.value !== '') assert.ok('ok' in (spec.parse as (raw: string) => object)(line.value), `${name}=${line.value} parses`);
  }
  assert.ok(example.has('AMPERE_CONFIG'));
  assert.deepEqual(example.get('TZ'), { value: 'Etc/UTC', commented: true }, 'TZ documented');
  for (const name of example.keys()) {
    assert.ok(name === 'AMPERE_CONFIG' || name === 'TZ' || (name.startsWith('AMPERE_') && name.slice(7).toLowerCase() in KEYS), `${name} is a real key`);
  }
  assert.ok(!example.has('AMPERE_DB'), 'the database path is fixed by the compose file');
});

test('Dockerfile: two stages on one pinned Node 24 Debian slim base, runtime tools, health check, tini entrypoint', () => {
  const df = parseDockerfile(join(REPO, 'Dockerfile'));
  assert.equal(df.stages.length, 2);
  const [build, runtime] = df.stages;
  assert.equal(build.from, runtime.from, 'same base for build and run (better-sqlite3 ABI)');
  assert.match(build.from, /^node:24\.\d+\.\d+-[a-z]+-slim$/, 'a pinned Node 24 LTS release');
  // the image's Node is the one scripts/test-node24.sh runs the suite on
  const pinned = /^NODE24_VERSION=(\S+)/m.exec(readFileSync(join(REPO, 'scripts/test-node24.sh'), 'utf8'))?.[1];
  assert.equal(build.from.split('-')[0], `node:${pinned}`);
  const buildRuns = build.instructions.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  assert.match(buildRuns, /npm ci/);
  assert.match(buildRuns, /npm run build/);
  // the native ipset loader is built in the image, or the build fails
  assert.match(buildRuns, /npm run build \\?\s*&& test -x dist\/ampere-ipset-load/);
  for (const c of ['native ./native', 'scripts/build-native.sh ./scripts/build-native.sh']) assert.ok(build.instructions.some((i) => i.op === 'COPY' && i.args === c), c);
  assert.match(readFileSync(join(REPO, 'package.json'), 'utf8'), /"build": "[^"]*scripts\/build-native\.sh/);
  assert.match(buildRuns, /npm prune --omit=dev && prune-native node_modules && node -e "require\('better-sqlite3'\)/);
  assert.ok(build.instructions.some((i) => i.op === 'COPY' && i.args === 'docker/prune-native.sh /usr/local/bin/prune-native'));
  assert.match(buildRuns, /python3/); // node-gyp toolchain for better-sqlite3
  assert.equal(stageEnv(build).npm_config_build_from_source, 'true');

  const runtimeRuns = runtime.instructions.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  for (const pkg of ['iptables', 'ipset', 'conntrack', 'tini']) assert.match(runtimeRuns, new RegExp(`\\s${pkg}(\\s|$)`), pkg);
  const copies = runtime.instructions.filter((i) => i.op === 'COPY').map((i) => i.args);
  for (const want of [/--from=build \/app\/dist /, /--from=build \/app\/node_modules /, /^drizzle /, /^drizzle-pg /]) {
    assert.ok(copies.some((c) => want.test(c)), `COPY ${want}`);
  }
  assert.ok(!copies.some((c) => /^src\b/.test(c)), 'no sources in the runtime image');

  const env = stageEnv(runtime);
  assert.equal(env.AMPERE_DB, '/data/ampere.db');
  assert.match(lastOp(runtime, 'VOLUME')!.args, /\/data/);
  assert.deepEqual(healthcheckCommand(runtime), ['node', '/app/dist/cli.js', 'health']);
  assert.equal(lastOp(runtime, 'WORKDIR')!.args, '/app');
  assert.match(runtimeRuns, /ln -s \/app\/dist\/cli\.js \/usr\/local\/bin\/ampere/);

  const entry = execForm(lastOp(runtime, 'ENTRYPOINT')!.args);
  assert.equal(entry[0], '/usr/bin/tini');
  const script = entry[entry.length - 1];
  assert.ok(copies.includes(`docker/entrypoint.sh ${script}`), `docker/entrypoint.sh is copied to ${script}`);
  assert.deepEqual(execForm(lastOp(runtime, 'CMD')!.args), ['run']);
  assert.ok(statSync(join(REPO, 'docker/entrypoint.sh')).mode & 0o111, 'entrypoint is executable');
  // what the build stage copies exists
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'src', 'drizzle']) assert.ok(existsSync(join(REPO, f)), f);
});

test('.dockerignore keeps secrets, databases and build output out of the context', () => {
  const lines = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
  for (const want of ['.git', 'node_modules', 'dist', '.env*', '*.db', '*.db-wal', 'test']) assert.ok(lines.includes(want), want);
  assert.ok(lines.includes('!scripts/build-native.sh'), 'the native build script stays in the context');
  for (const needed of ['src', 'native', 'drizzle', 'drizzle-pg', 'docker/entrypoint.sh', 'docker/prune-native.sh', 'docker', 'package.json', 'package-lock.json', 'tsconfig.json']) {
    assert.ok(!lines.includes(needed), `${needed} must stay in the context`);
  }
});

/**
 * What the runtime stage copies into /app, read from the Dockerfile's COPY lines: [what in this
 * tree, where under /app]. A build stage's /app/X is this tree's X once built (npm ci, npm run build).
 */
function runtimeAppCopies(): [string, string][] {
  const runtime = parseDockerfile(join(REPO, 'Dockerfile')).stages[1];
  const out: [string, string][] = [];
  for (const i of runtime.instructions.filter((x) => x.op === 'COPY')) {
    const parts = i.args.split(/\s+/);
    const from = parts[0].startsWith('--from=') ? parts.shift()!.slice('--from='.length) : null;
    const [src, dest] = parts;
    const target = dest.replace(/^\.\//, '').replace(/^\/app\//, '');
    if (target.startsWith('/')) continue; // outside /app (the entrypoint)
    out.push([from === null ? src : src.replace(/^\/app\//, ''), target]);
  }
  return out;
}

test('the runtime stage\'s /app (as the Dockerfile copies it, node_modules pruned of dev dependencies) runs on its own, fleet init included', async (t) => {
  if (!existsSync(join(REPO, 'dist/cli.js'))) { t.skip('dist/ not built (npm run build)'); return; }
  // what the Dockerfile copies into /app, assembled in a scratch directory
  const app = mkdtempSync(join(tmpdir(), 'ampere-image-app-'));
  try {
    const copies = runtimeAppCopies();
    assert.deepEqual(copies.map(([, to]) => to).sort(), ['dist', 'drizzle', 'drizzle-pg', 'node_modules', 'package.json']);
    // package-lock.json: the prune below reads it (the image's node_modules was pruned in the build stage).
    for (const [from, to] of [...copies, ['package-lock.json', 'package-lock.json']]) {
      // realpath: a node_modules that is itself a symlink is copied, never linked (prune works on the copy)
      cpSync(realpathSync(join(REPO, from)), join(app, to), { recursive: true, verbatimSymlinks: true });
    }
    const prune = spawnSync('npm', ['prune', '--omit=dev', '--offline', '--no-audit', '--no-fund'], { cwd: app, encoding: 'utf8', timeout: 120_000 });
    assert.equal(prune.status, 0, prune.stderr);
    assert.equal(realpathSync(join(app, 'node_modules')), realpathSync(app) + '/node_modules', 'the copy, not the tree the tests run on');
    const native = spawnSync('sh', [join(REPO, 'docker/prune-native.sh'), join(app, 'node_modules')], { encoding: 'utf8' });
    assert.equal(native.status, 0, native.stderr);
    const bs3 = join(app, 'node_modules/better-sqlite3');
    for (const gone of ['deps', 'src', 'build/Release/obj.target', 'build/Release/test_extension.node', 'build/Makefile']) assert.ok(!existsSync(join(bs3, gone)), `${gone} pruned`);
    // dev-only packages (package-lock's "dev": true) are gone: typescript, tsx, drizzle-kit, ...
    const lock = JSON.parse(readFileSync(join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    const devOnly = Object.entries(lock.packages).filter(([p, v]) => v.dev && /^node_modules\/(@[^/]+\/)?[^/]+$/.test(p)).map(([p]) => p);
    assert.ok(devOnly.includes('node_modules/typescript'));
    for (const p of devOnly) assert.ok(!existsSync(join(app, p)), `${p} pruned`);
    assert.ok(existsSync(join(app, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node')), 'the native addon stays');
    // every compiled module loads with production dependencies only, and the migrations apply
    const script = `
      const { readdirSync } = require('fs'); const { join } = require('path');
      const walk = (d) => readdirSync(d, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]);
      for (const f of walk(join(process.cwd(), 'dist'))) if (f.endsWith('.js') && !f.endsWith('/cli.js')) require(f);
      const { openDatabase } = require('./dist/store/open.js');
      const db = openDatabase(join(process.cwd(), 'data', 'ampere.db'));
      const tables = db.$client.prepare("select name from sqlite_master where type = 'table'").all().map((r) => r.name);
      db.$client.close();
      console.log(JSON.stringify(tables));`;
    const r = spawnSync(process.execPath, ['-e', script], { cwd: app, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const tables = JSON.parse(r.stdout.trim().split('\n').pop()!) as string[];
    for (const want of ['hosts', 'bans']) assert.ok(tables.includes(want), `table ${want} after migrations`);
    const help = spawnSync(process.execPath, ['dist/cli.js', '--help'], { cwd: app, encoding: 'utf8', timeout: 30_000 });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /\bhealth\b/);
    // The fleet's migrations are in the image: docker-compose.fleet.yml tells to run fleet init in it.
    const init = spawnSync(process.execPath, ['dist/cli.js', 'fleet', 'init', '--print', '--node', 'pbx9:pbx9-secret'], { cwd: app, encoding: 'utf8', timeout: 30_000 });
    assert.equal(init.status, 0, init.stderr);
    assert.match(init.stdout, /CREATE TABLE "fleet_decisions"/);
    assert.match(init.stdout, /GRANT INSERT \("origin", /);
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});

test('docker-compose.fleet.yml: a PostgreSQL on loopback only, new enough for xid8, and the fleet URL passed to ampere', (t) => {
  const fleet = loadCompose(join(REPO, 'docker-compose.fleet.yml'));
  assert.deepEqual(Object.keys(fleet.services as object).sort(), ['ampere', 'fleet-db']);
  const db = service(fleet, 'fleet-db');
  assert.ok(Number(/^postgres:(\d+)/.exec(String(db.image))?.[1]) >= 13, `${db.image}: pg_current_xact_id and xid8 need PostgreSQL 13`);
  assert.deepEqual(db.ports, ['127.0.0.1:5432:5432'], 'the fleet database is not published beyond loopback');
  assert.equal((service(fleet, 'ampere').environment as Record<string, string>).AMPERE_FLEET_URL, '${AMPERE_FLEET_URL:-}');
  assert.ok((fleet.volumes as Record<string, unknown>)['fleet-db'] !== undefined);
  const py = pyYaml(join(REPO, 'docker-compose.fleet.yml'));
  if (py === undefined) { t.diagnostic('PyYAML not available: cross-check skipped'); return; }
  assert.deepEqual(fleet, stringify(py));
});
