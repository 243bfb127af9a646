/**
 * End to end, without Docker: what docker-compose.yml deploys, rebuilt from
 * the same files, against a real Asterisk and real attack tools.
 *
 *  - Asterisk: Debian sid's packages in a chroot (scripts/e2e-setup.sh), in
 *    the PBX's network namespace, with deploy/asterisk/ mounted read-only at
 *    /etc/asterisk (the compose bind mount), started with the command of
 *    docker/asterisk/Dockerfile, and waited for with its health check.
 *  - Ampere: in the same namespace (network_mode: host), started through
 *    docker/entrypoint.sh with the environment docker-compose.yml gives the
 *    `ampere` service (interpolated from this test's .env values) plus the
 *    Dockerfile's ENV, with the compose volumes bind-mounted at /data and
 *    /backups and the repo at /app, in a private mount namespace.
 *  - Clients in their own namespaces: a phone, and attackers using sipvicious
 *    (svcrack, svwar: UDP/IPv4) and test/e2e/sip-client.mjs (TCP, IPv6).
 *
 * Needs root and network namespaces; skipped with the reason otherwise,
 * except in CI (CI=true), where it fails instead.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { KEYS } from '../src/config/keys';
import {
  REPO, execForm, healthcheckCommand, lastOp, loadCompose, parseDockerfile, pjsipAuths, service, serviceEnvironment, serviceMounts, stageEnv,
} from './e2e/deploy-files';
import { skipUnlessRoot } from '../tools/lab/netns';
import { Lab, PBX4, PBX6, host, lockMachine, must, sh, sleep, waitFor, type Host, type Proc } from './e2e/lab';

const ROOT = process.env.AMPERE_E2E_ROOT ?? '/var/cache/ampere-e2e/sid';
const IN_CI = Boolean(process.env.CI) && process.env.CI !== 'false' && process.env.CI !== '0';
const SIP_CLIENT = join(REPO, 'test/e2e/sip-client.mjs');
const SIP_JAM = join(REPO, 'test/e2e/sip-jam.mjs');
const PBX_RUN = join(REPO, 'test/e2e/pbx-run.sh');
const CONTAINER_RUN = join(REPO, 'test/e2e/container-run.sh');

// ------------------------------------------------------------ can it run? --
function whyNot(): string | null {
  if (process.platform !== 'linux') return 'needs Linux';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, iptables, chroot); run as root or in CI';
  const missing = ['ip', 'ipset', 'unshare', 'nsenter', 'chroot', 'svcrack', 'svwar', 'iptables-legacy', 'iptables-nft']
    .filter((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0);
  if (missing.length) return `missing tools: ${missing.join(', ')} (bash scripts/e2e-setup.sh installs sipvicious)`;
  const netns = skipUnlessRoot();
  if (netns) return netns;
  if (!existsSync(join(ROOT, '.ampere-e2e-ready'))) return `no Asterisk root at ${ROOT}: run bash scripts/e2e-setup.sh first`;
  return null;
}
const reason = whyNot();
if (reason) process.stderr.write(`e2e: ${IN_CI ? 'CANNOT RUN' : 'skipped'}: ${reason}\n`);
const opts = reason && !IN_CI ? { skip: reason } : {};

// ------------------------------------------------- the deployment's files --
const compose = loadCompose();
const ampereImage = parseDockerfile(join(REPO, 'Dockerfile'));
const runtime = ampereImage.stages[ampereImage.stages.length - 1];
const asteriskImage = parseDockerfile(join(REPO, 'docker/asterisk/Dockerfile')).stages[0];
const ASTERISK_CMD = execForm(lastOp(asteriskImage, 'CMD')!.args);
const ASTERISK_HEALTH = healthcheckCommand(asteriskImage);
const AMPERE_CMD = execForm(lastOp(runtime, 'CMD')!.args);
const AMPERE_HEALTH = healthcheckCommand(runtime);
const asteriskConf = serviceMounts(compose, 'asterisk').find((m) => m.target === '/etc/asterisk')!;
const PHONE_AUTH = pjsipAuths(join(asteriskConf.source, 'pjsip.conf'))[0];

/** The operator's .env for this run: everything else stays at its default. */
const DOTENV: Record<string, string> = { AMPERE_LOG_LEVEL: 'debug' };

/** env_file entries of the ampere service: the .env, the one the operator edits. */
const envFiles = (service(compose, 'ampere').env_file as { path: string }[] | undefined ?? []).map((e) => e.path);

/**
 * The container's environment, as Docker builds it: the image's ENV, then the
 * service's env_file (.env, played here by `dotenv`), then its `environment`.
 */
function containerEnv(dotenv: Record<string, string>): NodeJS.ProcessEnv {
  return {
    // The Node running the tests comes first, as the image's own Node does there (Node 24 runs).
    PATH: `${dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    HOME: '/root',
    ...stageEnv(runtime),
    ...(envFiles.includes('.env') ? dotenv : {}),
    ...serviceEnvironment(compose, 'ampere', dotenv),
  };
}
/** A setting as Ampere will see it: from the container environment, else its default. */
function setting(key: keyof typeof KEYS, dotenv = DOTENV): string {
  return containerEnv(dotenv)[`AMPERE_${key.toUpperCase()}`] ?? KEYS[key].default;
}
const LOYALTY = Number(setting('loyalty'));
const CHAIN = setting('chain');

// ------------------------------------------------------------ the network --
const phone = host('phone', 10);
const atk = Array.from({ length: 8 }, (_, i) => host(`atk${i + 1}`, 21 + i));
const jam = host('jam', 31);
const jamScan = [host('jscan1', 32), host('jscan2', 33)];
const HOSTS: Host[] = [phone, ...atk, jam, ...jamScan];

let lab: Lab;
let runDir: string;
let dataDir: string;
let asterisk: Proc | null = null;
let ampere: Proc | null = null;
const timings: Record<string, number> = {};
let failed = false;
let unlock: (() => void) | null = null;

/** A test of this file: the run's logs are kept when any of them fails. */
function e2e(name: string, fn: () => Promise<void>) {
  test(name, opts, async () => {
    try { await fn(); } catch (err) { failed = true; throw err; }
  });
}

function nsExec(ns: string, cmd: string, args: string[], timeoutMs = 20_000) {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args], undefined, timeoutMs);
}

interface SipResult { attempt: number; status: number | 'timeout' | 'error'; stage: string; ms: number }
async function sip(h: Host, args: string[], timeoutMs = 30_000): Promise<SipResult[]> {
  const r = await nsExec(h.ns, process.execPath, [SIP_CLIENT, ...args], timeoutMs);
  if (r.code === 1 || r.timedOut) throw new Error(`sip-client ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as SipResult);
}
const register = (h: Host, passwords: string[], o: { server?: string; transport?: 'udp' | 'tcp'; timeout?: number; user?: string } = {}) =>
  sip(h, ['register', '--server', o.server ?? PBX4, '--transport', o.transport ?? 'udp', '--user', o.user ?? PHONE_AUTH.username,
    '--timeout', String(o.timeout ?? 1500), ...passwords.flatMap((p) => ['--password', p])]);

const wrong = (n: number, tag: string) => Array.from({ length: n }, (_, i) => `wrong-${tag}-${i + 1}`);

// ---------------------------------------------------------------- kernel --
async function inKernel(address: string): Promise<boolean> {
  const set = `${CHAIN}-v${address.includes(':') ? 6 : 4}`;
  const r = await nsExec(lab.pbx, 'ipset', ['test', set, address], 5000);
  if (r.code !== 0 && !/is NOT in set/.test(r.stderr)) throw new Error(`ipset test ${set} ${address}: ${r.stderr}`);
  return r.code === 0;
}
const waitBanned = (address: string, ms = 5000) => waitFor(() => inKernel(address), ms, 50);
const waitUnbanned = (address: string, ms: number) => waitFor(async () => !(await inKernel(address)), ms, 200);

// -------------------------------------------------------------- database --
interface BanRow { address: string; started_at: number; until: number | null; lifted_at: number | null; lift_reason: string | null }
function dbRows(address: string): { bans: BanRow[]; host: { banned: number; ban_until: number | null; ban_count: number } | undefined } {
  const db = new Database(join(dataDir, 'ampere.db'), { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    return {
      bans: db.prepare('select * from bans where address = ? order by id').all(address) as BanRow[],
      host: db.prepare('select * from hosts where address = ?').get(address) as never,
    };
  } finally {
    db.close();
  }
}
const activeBan = (address: string) => dbRows(address).bans.find((b) => b.lifted_at === null && (b.until === null || b.until > Date.now()));
/**
 * The ban's row once it is stored: the kernel gets a ban first and the row follows (automatic
 * bans are committed together a little later), so a row read right after the kernel showed the
 * ban may not be there yet. Polls up to boundMs.
 */
async function storedBan(address: string, boundMs = 5000): Promise<ReturnType<typeof activeBan>> {
  const end = Date.now() + boundMs;
  for (;;) {
    const b = activeBan(address);
    if (b || Date.now() > end) return b;
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---------------------------------------------------------------- Ampere --
type LogLine = { msg?: string; level?: number; address?: string; [k: string]: unknown };
function logs(p: Proc | null = ampere): LogLine[] {
  if (!p) return [];
  return p.lines.filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l) as LogLine; } catch { return {}; } });
}
const countMsg = (msg: string, p: Proc | null = ampere) => logs(p).filter((l) => l.msg === msg).length;
function waitLog(pred: (l: LogLine) => boolean, timeoutMs: number, p: Proc | null = ampere): Promise<LogLine | undefined> {
  return waitFor(() => logs(p).find(pred), timeoutMs, 50);
}

/** The compose volumes at their container paths, /app = the repository (the image's WORKDIR). */
function mountArgs(): string[] {
  const args: string[] = [];
  for (const m of serviceMounts(compose, 'ampere')) {
    if (m.target.startsWith('/etc/ampere')) continue; // optional, commented out in compose
    const src = m.bind ? join(runDir, 'bind', m.target.replace(/\//g, '_')) : join(runDir, 'volumes', m.source);
    mkdirSync(src, { recursive: true });
    lab.mountPoint(m.target);
    args.push('--bind', `${src}:${m.target}${m.readOnly ? ':ro' : ''}`);
    if (m.target === '/data') dataDir = src;
  }
  lab.mountPoint('/app');
  args.push('--bind', `${REPO}:/app:ro`);
  // what the image does not have: the host's /etc/ampere, the repo's .env
  if (existsSync('/etc/ampere')) args.push('--empty', '/etc/ampere');
  if (existsSync(join(REPO, '.env'))) args.push('--null', '/app/.env');
  return [...args, '--cwd', lastOp(runtime, 'WORKDIR')!.args];
}

function startAmpere(dotenv: Record<string, string>): Proc {
  const entry = join(REPO, 'docker/entrypoint.sh'); // COPY'd to the image's ENTRYPOINT path
  ampere = lab.spawn('ampere', 'ip', ['netns', 'exec', lab.pbx, CONTAINER_RUN, ...mountArgs(), '--', entry, ...AMPERE_CMD], containerEnv(dotenv));
  return ampere;
}

/** The image's HEALTHCHECK, run like `docker exec`: in the container's namespaces, with its environment. */
async function ampereHealth(): Promise<{ code: number | null; out: string }> {
  const r = await sh('nsenter', ['-t', String(ampere!.pid), '-m', '-n', '--', ...AMPERE_HEALTH], undefined, 15_000, containerEnv(DOTENV));
  return { code: r.code, out: (r.stdout + r.stderr).trim() };
}

async function stopAmpere() {
  const r = await ampere!.stop('SIGTERM', 15_000);
  return r;
}

// -------------------------------------------------------------- Asterisk --
/**
 * The demo's configuration with Asterisk's own security log added: the demo logs to the console
 * only, and the tests count the guesses that reached Asterisk from that file.
 */
function asteriskConfWithSecurityLog(): string {
  const dir = join(runDir, 'asterisk-conf');
  if (existsSync(dir)) return dir;
  cpSync(asteriskConf.source, dir, { recursive: true });
  appendFileSync(join(dir, 'logger.conf'), '; added by the e2e test: one line per security event\nsecurity => security\n');
  return dir;
}

function startAsterisk(): Proc {
  asterisk = lab.spawn('asterisk', 'ip', ['netns', 'exec', lab.pbx, PBX_RUN, ROOT, asteriskConfWithSecurityLog(), join(runDir, 'asterisk-log'), '--', ...ASTERISK_CMD]);
  return asterisk;
}
/** The image's HEALTHCHECK, run like `docker exec`: in the Asterisk process's namespaces and chroot. */
async function asteriskHealthy(): Promise<boolean> {
  const r = await sh('nsenter', ['-t', String(asterisk!.pid), '-m', '-n', '-r', '-w', '--', '/usr/bin/env', '-i',
    'PATH=/usr/sbin:/usr/bin:/sbin:/bin', ...ASTERISK_HEALTH], undefined, 15_000);
  return r.code === 0;
}
async function waitAsterisk(): Promise<number> {
  const t0 = Date.now();
  const ok = await waitFor(async () => asterisk!.running && (await asteriskHealthy()), 30_000, 200);
  assert.ok(ok, `Asterisk did not come up: ${asterisk!.lines.slice(-20).join('\n')}`);
  return Date.now() - t0;
}
function securityLog(address: string, event: string): number {
  const file = join(runDir, 'asterisk-log', 'security');
  if (!existsSync(file)) return 0;
  return readFileSync(file, 'utf8').split('\n')
    .filter((l) => l.includes(`SecurityEvent="${event}"`) && l.includes(`/${address}/`)).length;
}

// --------------------------------------------------------------- set up --
before(async () => {
  if (reason) {
    if (IN_CI) { failed = true; throw new Error(`e2e cannot run in CI: ${reason}`); }
    return;
  }
  failed = true; // until set-up is through
  const t0 = Date.now();
  unlock = await lockMachine(6 * 60_000, (pid) => process.stderr.write(`e2e: waiting for another e2e run (pid ${pid}) to finish\n`));
  timings.lockWaitMs = Date.now() - t0;
  const stale = Lab.removeStaleDirs();
  if (stale.length) process.stderr.write(`e2e: removed mount points left by an earlier run: ${stale.join(', ')}\n`);
  mkdirSync(join(REPO, 'test/.tmp'), { recursive: true });
  runDir = mkdtempSync(join(REPO, 'test/.tmp', 'e2e-'));
  lab = new Lab(runDir);
  // Interrupted (Ctrl-C, CI time-out): after() will not run, so clean up here.
  // (process.on, not once: the test runner forwards the signal it got, so it may come twice.)
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (interrupted) return;
      interrupted = true;
      lab.teardownSync();
      unlock?.();
      try { process.stderr.write(`e2e: ${sig}: cleaned up\n`); } catch { /* runner gone */ }
      process.exit(130);
    });
  }

  // the app as the image has it: built from the current sources
  const newest = (dir: string): number => readdirSync(dir, { withFileTypes: true })
    .reduce((m, e) => Math.max(m, e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs), 0);
  const cli = join(REPO, 'dist/cli.js');
  if (!existsSync(cli) || statSync(cli).mtimeMs < newest(join(REPO, 'src'))) {
    const b = await sh('npm', ['run', 'build'], undefined, 180_000);
    assert.equal(b.code, 0, `npm run build failed:\n${b.stdout}\n${b.stderr}`);
    timings.buildMs = Date.now() - t0;
  }

  await lab.createNetwork(HOSTS);
  // The PBX host already has a rule, written with iptables-legacy: Ampere's
  // auto-detection must pick legacy, or its rules would be invisible here.
  await must('ip', ['netns', 'exec', lab.pbx, 'iptables-legacy', '-w', '-A', 'INPUT', '-i', 'lo', '-j', 'ACCEPT']);

  const ta = Date.now();
  startAsterisk();
  timings.asteriskStartMs = await waitAsterisk();
  timings.asteriskStartMs = Date.now() - ta;

  const tb = Date.now();
  startAmpere(DOTENV);
  const connected = await waitLog((l) => l.msg === 'ami connected', 30_000);
  assert.ok(connected, `Ampere did not connect to AMI:\n${ampere!.lines.slice(-30).join('\n')}`);
  timings.ampereConnectMs = Date.now() - tb;
  timings.setupMs = Date.now() - t0;
  failed = false;
});

after(async () => {
  if (!lab) { unlock?.(); return; }
  const problems = await lab.teardown();
  unlock?.();
  const mounts = readFileSync('/proc/mounts', 'utf8').split('\n').filter((l) => l.includes(ROOT) || l.includes(runDir));
  if (mounts.length) problems.push(`mounts left: ${mounts.join('; ')}`);
  process.stderr.write(`e2e timings (ms): ${JSON.stringify(timings)}\n`);
  if (problems.length) throw new Error(`e2e cleanup: ${problems.join('; ')}`);
  if (!failed && !process.env.AMPERE_E2E_KEEP) rmSync(runDir, { recursive: true, force: true });
  else process.stderr.write(`e2e: logs kept in ${runDir}\n`);
});

// ----------------------------------------------------------------- tests --
e2e('the deployment comes up: Asterisk healthy, Ampere connected and healthy, on the host iptables flavour', async () => {
  const health = await waitFor(async () => { const h = await ampereHealth(); return h.code === 0 ? h : null; }, 15_000, 500);
  assert.ok(health, `HEALTHCHECK ${AMPERE_HEALTH.join(' ')} never passed: ${(await ampereHealth()).out}`);
  // the database and the status file are on the /data volume
  assert.ok(existsSync(join(dataDir, 'ampere.db')));
  assert.ok(existsSync(join(dataDir, 'ampere.status.json')));
  // the chain went where the host's rules are
  const legacy = await must('ip', ['netns', 'exec', lab.pbx, 'iptables-legacy-save']);
  const nft = await must('ip', ['netns', 'exec', lab.pbx, 'iptables-nft-save']);
  assert.match(legacy, new RegExp(`^-A INPUT .*-j ${CHAIN}\\b`, 'm'), 'jump into the chain, in iptables-legacy');
  assert.match(legacy, new RegExp(`^-A ${CHAIN} .*--match-set ${CHAIN}-v4 src`, 'm'));
  assert.doesNotMatch(nft, new RegExp(`-j ${CHAIN}\\b`), 'nothing in iptables-nft');
  const v6 = await must('ip', ['netns', 'exec', lab.pbx, 'ip6tables-legacy-save']);
  assert.match(v6, new RegExp(`^-A ${CHAIN} .*--match-set ${CHAIN}-v6 src`, 'm'));
});

e2e('the legitimate phone registers, over UDP, TCP and IPv6, and one mistyped password does not ban it', async () => {
  const ok = (r: SipResult[]) => r.map((x) => x.status);
  assert.deepEqual(ok(await register(phone, [PHONE_AUTH.password])), [200]);
  assert.deepEqual(ok(await register(phone, ['mistyped', PHONE_AUTH.password])), [401, 200]);
  assert.deepEqual(ok(await register(phone, [PHONE_AUTH.password], { transport: 'tcp' })), [200]);
  assert.deepEqual(ok(await register(phone, ['mistyped', PHONE_AUTH.password], { server: PBX6 })), [401, 200]);
  // the same mistake again later: still forgiven, since each success clears the count
  assert.deepEqual(ok(await register(phone, ['mistyped', PHONE_AUTH.password])), [401, 200]);
  await sleep(1000);
  assert.equal(await inKernel(phone.v4), false);
  assert.equal(await inKernel(phone.v6), false);
});

e2e(`a UDP attacker is banned by its loyalty-th failure (loyalty = ${LOYALTY}), then gets no SIP reply`, async () => {
  const a = atk[0];
  for (let k = 1; k <= LOYALTY; k++) {
    const [r] = await register(a, [`guess-${k}`]);
    assert.equal(r.status, 401, `failure ${k} is answered`);
    if (k < LOYALTY) {
      await sleep(600); // well past the daemon's flush interval
      assert.equal(await inKernel(a.v4), false, `not banned after ${k} failures`);
    } else {
      const t0 = Date.now();
      assert.ok(await waitBanned(a.v4, 3000), `banned after failure ${k}`);
      timings.banLatencyMs = Date.now() - t0;
    }
  }
  const ban = await waitLog((l) => l.msg === 'ban' && l.address === a.v4, 2000);
  assert.ok(ban, 'a "ban" log line');
  assert.ok(activeBan(a.v4), 'an active ban in the database');
  const [after1] = await register(a, ['one-more'], { timeout: 2000 });
  assert.equal(after1.status, 'timeout', 'no SIP reply once banned');
  assert.equal(securityLog(a.v4, 'ChallengeResponseFailed'), LOYALTY, 'Asterisk saw exactly loyalty failures');
});

e2e('svcrack (sipvicious, UDP) is banned and then gets no reply', async () => {
  const a = atk[1];
  const wordlist = join(runDir, 'wordlist.txt');
  writeFileSync(wordlist, `${wrong(300, 'svcrack').join('\n')}\n`);
  const svcrack = lab.spawn('svcrack', 'ip', ['netns', 'exec', a.ns, 'svcrack', '-u', PHONE_AUTH.username, '-d', wordlist, '--maximumtime', '3', PBX4]);
  assert.ok(await waitBanned(a.v4, 10_000), `svcrack banned: ${svcrack.lines.slice(-5).join(' | ')}`);
  // once banned it hears nothing more and gives up by itself; do not wait for that
  await Promise.race([svcrack.exited, sleep(1000)]);
  await svcrack.stop('SIGTERM', 3000);
  const failures = securityLog(a.v4, 'ChallengeResponseFailed');
  timings.svcrackFailuresBeforeBan = failures;
  assert.ok(failures >= LOYALTY && failures < 300, `Asterisk saw ${failures} of svcrack's 300 guesses before the ban`);
  assert.ok(activeBan(a.v4));
  const [probe] = await register(a, ['after'], { timeout: 1500 });
  assert.equal(probe.status, 'timeout');
});

e2e('svwar (sipvicious extension scan, UDP) is banned', async () => {
  const a = atk[2];
  let runs = 0;
  // stock svwar stops after a probe or two against PJSIP, so scan again until banned
  while (runs < 5 && !(await inKernel(a.v4))) {
    runs++;
    const r = await nsExec(a.ns, 'svwar', ['--force', '-e200-210', '--maximumtime', '2', PBX4], 30_000);
    assert.ok(!r.timedOut);
    await sleep(300);
  }
  assert.ok(await waitBanned(a.v4, 3000), `svwar banned (after ${runs} runs)`);
  assert.ok(securityLog(a.v4, 'InvalidAccountID') >= LOYALTY);
  assert.ok(activeBan(a.v4));
});

e2e('TCP attackers over IPv4 and IPv6 are banned, and then cannot even connect', async () => {
  const a4 = atk[3];
  const a6 = atk[4];
  const r4 = await register(a4, wrong(LOYALTY, 'tcp4'), { transport: 'tcp' });
  assert.deepEqual(r4.map((x) => x.status), Array(LOYALTY).fill(401));
  const r6 = await register(a6, wrong(LOYALTY, 'tcp6'), { transport: 'tcp', server: PBX6 });
  assert.deepEqual(r6.map((x) => x.status), Array(LOYALTY).fill(401));
  assert.ok(await waitBanned(a4.v4), 'IPv4 TCP attacker banned');
  assert.ok(await waitBanned(a6.v6), 'IPv6 TCP attacker banned');
  assert.ok(await storedBan(a6.v6), 'IPv6 ban in the database');
  const [c4] = await register(a4, ['x'], { transport: 'tcp', timeout: 1500 });
  assert.deepEqual([c4.status, c4.stage], ['timeout', 'connect']);
  const [c6] = await register(a6, ['x'], { transport: 'tcp', server: PBX6, timeout: 1500 });
  assert.deepEqual([c6.status, c6.stage], ['timeout', 'connect']);
  const [u6] = await register(a6, ['x'], { server: PBX6, timeout: 1500 });
  assert.equal(u6.status, 'timeout', 'nor over UDP/IPv6');
  // only the attacker's family was banned: its IPv4 address was never seen
  assert.equal(await inKernel(a6.v4), false);
});

/** `ampere <args>` run like `docker compose exec ampere ampere ...`. */
async function ampereCli(args: string[]) {
  const r = await sh('nsenter', ['-t', String(ampere!.pid), '-m', '-n', '--', 'node', '/app/dist/cli.js', ...args], undefined, 15_000, containerEnv(DOTENV));
  assert.equal(r.code, 0, `ampere ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
const ampereStatus = async () => JSON.parse(await ampereCli(['status', '--json'])) as { ami: { reconnects: number; malformed: number; merged: number; state: string } };

e2e('a REGISTER every 10 ms with CR/LF in its From user (AMI jamming) does not blind Ampere: scanners banned at their loyalty-th failure, the session never drops', async () => {
  // The jamming source is allowed, so its own (genuine) events do not ban it and it jams all along.
  await ampereCli(['allow', 'add', jam.v4, '--note', 'e2e jammer']);
  const disconnectsBefore = countMsg('ami disconnected');
  const connectsBefore = countMsg('ami connected');
  const before = await ampereStatus();
  const jammer = lab.spawn('jam', 'ip', ['netns', 'exec', jam.ns, process.execPath, SIP_JAM, '--server', PBX4, '--interval', '10', '--seconds', '60']);
  try {
    // The attack gets through: Asterisk cuts the %0d%0a%0d%0a events in two, Ampere merges them back.
    const hit = await waitFor(async () => (await ampereStatus()).ami.merged >= before.ami.merged + 20, 15_000, 250);
    assert.ok(hit, `jam events cut and merged (status: ${JSON.stringify((await ampereStatus()).ami)}; jammer: ${jammer.lines.slice(-3).join(' | ')})`);
    // Asterisk's own security log shows the CR/LF too: the AccountID spans lines there as well.
    const crafted = readFileSync(join(runDir, 'asterisk-log', 'security'), 'utf8').split('\nSet:x",SessionID=').length - 1;
    assert.ok(crafted >= 10, `Asterisk reports the crafted REGISTERs with an unescaped CR/LF (${crafted})`);
    // One guess at a time: not banned before the loyalty-th failure, banned at it.
    const s = jamScan[0];
    for (let k = 1; k <= LOYALTY; k++) {
      const [r] = await register(s, [`jam-guess-${k}`]);
      assert.equal(r.status, 401, `failure ${k} is answered`);
      if (k < LOYALTY) {
        await sleep(600);
        assert.equal(await inKernel(s.v4), false, `not banned after ${k} failures`);
      } else assert.ok(await waitBanned(s.v4, 3000), `banned after failure ${k}, while jammed`);
    }
    // svcrack at full speed, jammed all along.
    const c = jamScan[1];
    const wordlist = join(runDir, 'wordlist-jam.txt');
    writeFileSync(wordlist, `${wrong(300, 'jamcrack').join('\n')}\n`);
    const svcrack = lab.spawn('svcrack-jam', 'ip', ['netns', 'exec', c.ns, 'svcrack', '-u', PHONE_AUTH.username, '-d', wordlist, '--maximumtime', '3', PBX4]);
    assert.ok(await waitBanned(c.v4, 10_000), `svcrack banned while jammed: ${svcrack.lines.slice(-5).join(' | ')}`);
    await Promise.race([svcrack.exited, sleep(1000)]);
    await svcrack.stop('SIGTERM', 3000);
    const ban = await waitLog((l) => l.msg === 'ban' && l.address === c.v4, 2000);
    assert.equal(ban?.failures, LOYALTY, 'banned at its loyalty-th failure');
    const failures = securityLog(c.v4, 'ChallengeResponseFailed');
    timings.jammedSvcrackFailuresBeforeBan = failures;
    assert.ok(failures >= LOYALTY && failures < 300, `Asterisk saw ${failures} of svcrack's guesses before the ban`);
    assert.ok(jammer.running, 'the jammer ran all along');
  } finally {
    await jammer.stop('SIGTERM', 3000);
  }
  const after1 = await ampereStatus();
  timings.jamMerged = after1.ami.merged - before.ami.merged;
  assert.equal(after1.ami.reconnects, before.ami.reconnects, 'no AMI reconnect');
  assert.equal(after1.ami.state, 'connected');
  assert.equal(countMsg('ami disconnected'), disconnectsBefore, 'no "ami disconnected" line');
  assert.equal(countMsg('ami connected'), connectsBefore);
  await ampereCli(['allow', 'rm', jam.v4]);
});

e2e('SIGTERM: Ampere stops cleanly and leaves its bans in the kernel; on restart they are still there', async () => {
  const bannedSoFar = [atk[0].v4, atk[1].v4, atk[2].v4, atk[3].v4, atk[4].v6];
  const t0 = Date.now();
  const exit = await stopAmpere();
  timings.ampereStopMs = Date.now() - t0;
  assert.equal(exit.killed, false, 'stopped within 15 s');
  assert.equal(exit.code, 0, `clean exit: ${ampere!.lines.slice(-5).join('\n')}`);
  assert.ok(!existsSync(join(dataDir, 'ampere.db-wal')), 'database closed cleanly (WAL checkpointed and removed)');
  for (const address of bannedSoFar) {
    assert.ok(await inKernel(address), `${address} still banned in the kernel while Ampere is down`);
    assert.ok(activeBan(address), `${address} still banned in the database`);
  }
  const [down] = await register(atk[0], ['while-down'], { timeout: 1500 });
  assert.equal(down.status, 'timeout', 'the kernel keeps dropping while Ampere is down');

  const t1 = Date.now();
  const previous = ampere!;
  startAmpere(DOTENV);
  assert.notEqual(ampere, previous);
  assert.ok(await waitLog((l) => l.msg === 'ami connected', 30_000), `no reconnect:\n${ampere!.lines.slice(-20).join('\n')}`);
  timings.ampereRestartMs = Date.now() - t1;
  for (const address of bannedSoFar) {
    assert.ok(await inKernel(address), `${address} banned after the restart`);
    assert.ok(activeBan(address));
  }
  assert.equal((await ampereHealth()).code, 0);
});

e2e('Asterisk restarts mid-attack: Ampere reconnects and bans a new attacker', async () => {
  const a = atk[5];
  const disconnectsBefore = countMsg('ami disconnected');
  const connectsBefore = countMsg('ami connected');
  // the attack starts while Asterisk is up...
  const [first] = await register(a, ['mid-1']);
  assert.equal(first.status, 401);
  // ...Asterisk goes away (docker compose restart asterisk: SIGTERM, then a new start)
  const t0 = Date.now();
  const stopped = await asterisk!.stop('SIGTERM', 15_000);
  assert.equal(stopped.killed, false, 'Asterisk stopped on SIGTERM');
  assert.ok(await waitFor(() => countMsg('ami disconnected') > disconnectsBefore, 10_000, 50), 'Ampere noticed the disconnect');
  const unhealthy = await waitFor(async () => (await ampereHealth()).code === 1, 10_000, 300);
  assert.ok(unhealthy, 'HEALTHCHECK fails while AMI is down');
  // the attacker keeps going: nobody answers
  const [gap] = await register(a, ['mid-2'], { timeout: 800 });
  assert.equal(gap.status, 'timeout');
  startAsterisk();
  await waitAsterisk();
  timings.asteriskRestartMs = Date.now() - t0;
  assert.ok(await waitFor(() => countMsg('ami connected') > connectsBefore, 40_000, 100), 'Ampere reconnected');
  timings.amiReconnectAfterRestartMs = Date.now() - t0;
  // the attack goes on after the restart and is banned
  let sent = 0;
  while (sent < LOYALTY + 2 && !(await inKernel(a.v4))) {
    const [r] = await register(a, [`mid-after-${++sent}`], { timeout: 1500 });
    if (r.status === 'timeout') break;
    await sleep(300);
  }
  assert.ok(await waitBanned(a.v4, 3000), `attacker banned after the Asterisk restart (${sent} more guesses)`);
  assert.ok(activeBan(a.v4));
  assert.ok(await waitFor(async () => (await ampereHealth()).code === 0, 15_000, 500), 'healthy again');
});

e2e('backup and restore as docs/deploy.md says: the kernel follows the restored database', async () => {
  const backupsDir = join(runDir, 'bind', '_backups');
  // the scheduled backup (AMPERE_BACKUP_DIR=/backups from the compose file) lands in the bind mount
  assert.ok(await waitFor(() => readdirSync(backupsDir).some((f) => f.endsWith('.db')), 10_000, 200), 'a scheduled backup in ./backups');
  // docker compose exec ampere ampere backup
  const b = await sh('nsenter', ['-t', String(ampere!.pid), '-m', '-n', '--', 'node', '/app/dist/cli.js', 'backup', '--json'],
    undefined, 30_000, containerEnv(DOTENV));
  assert.equal(b.code, 0, b.stderr);
  const backup = JSON.parse(b.stdout) as { path: string; activeBans: number };
  assert.match(backup.path, /^\/backups\/ampere-.*\.db$/);
  assert.ok(backup.activeBans >= 6, `backup holds the bans so far (${backup.activeBans})`);
  // a ban made after the backup...
  const late = atk[7];
  await register(late, wrong(LOYALTY, 'late'));
  assert.ok(await waitBanned(late.v4), 'banned after the backup');
  // docker compose stop ampere; docker compose run --rm --no-deps ampere restore <file>; docker compose start ampere
  assert.equal((await stopAmpere()).code, 0);
  const restore = lab.spawn('restore', 'ip', ['netns', 'exec', lab.pbx, CONTAINER_RUN, ...mountArgs(), '--',
    join(REPO, 'docker/entrypoint.sh'), 'restore', backup.path], containerEnv(DOTENV));
  const r = await Promise.race([restore.exited, sleep(30_000).then(() => null)]);
  assert.ok(r && r.code === 0, `restore failed: ${restore.lines.join('\n')}`);
  assert.ok(readdirSync(dataDir).some((f) => f.startsWith('ampere.db.before-restore-')), 'the replaced database is kept');
  startAmpere(DOTENV);
  assert.ok(await waitLog((l) => l.msg === 'ami connected', 30_000));
  // ...is gone with the restore, from the database and from the kernel; the older bans are back
  assert.equal(activeBan(late.v4), undefined);
  assert.ok(await waitUnbanned(late.v4, 5000), 'the kernel matches the restored database');
  assert.ok(await inKernel(atk[0].v4));
  assert.ok(activeBan(atk[0].v4));
});

e2e('after bantime the ban is gone from the kernel and the database', async () => {
  // The operator shortens bantime in .env and restarts the service.
  const dotenv = { ...DOTENV, AMPERE_BANTIME: '5s' };
  await stopAmpere();
  startAmpere(dotenv);
  assert.ok(await waitLog((l) => l.msg === 'ami connected', 30_000));
  const a = atk[6];
  assert.equal(await inKernel(a.v4), false);
  await register(a, wrong(LOYALTY, 'expiry'));
  const t0 = Date.now();
  assert.ok(await waitBanned(a.v4, 3000), 'banned');
  const ban = await storedBan(a.v4);
  assert.ok(ban && ban.until !== null, 'a timed ban in the database');
  assert.ok(ban.until! - ban.started_at <= 5_000 + 1_000, `ban length ${ban.until! - ban.started_at} ms`);
  assert.ok(await waitUnbanned(a.v4, 15_000), 'gone from the kernel after bantime');
  timings.banExpiredAfterMs = Date.now() - t0;
  assert.ok(await waitLog((l) => l.msg === 'unban' && l.address === a.v4, 3000), 'an "unban" log line');
  const rows = dbRows(a.v4);
  assert.equal(activeBan(a.v4), undefined, 'no active ban in the database');
  assert.ok(rows.bans.length >= 1 && rows.bans.every((b) => b.lifted_at !== null || (b.until !== null && b.until <= Date.now())));
  assert.ok(!rows.host?.banned, 'host no longer marked banned');
  // and it is answered again
  const [back] = await register(a, ['again'], { timeout: 1500 });
  assert.equal(back.status, 401);
  // the earlier one-hour bans were not touched by the shorter setting
  assert.ok(await inKernel(atk[0].v4));
});

e2e('the phone was never banned', async () => {
  const [r] = await register(phone, [PHONE_AUTH.password]);
  assert.equal(r.status, 200);
  for (const address of [phone.v4, phone.v6]) {
    assert.equal(await inKernel(address), false, `${address} not in the kernel`);
    const rows = existsSync(join(dataDir, 'ampere.db')) ? dbRows(address) : { bans: [] };
    assert.equal(rows.bans.length, 0, `${address} never banned in the database`);
    const everyRun = lab.procs.filter((p) => p.name === 'ampere').flatMap((p) => logs(p));
    assert.ok(!everyRun.some((l) => l.msg === 'ban' && l.address === address));
  }
  // nor was the loopback (AMI's own events)
  assert.equal(await inKernel('127.0.0.1'), false);
});
