import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AllowList } from '../src/allow';
import { loadConfig, type LoadedConfig } from '../src/config';
import type { Decisions } from '../src/decisions';
import type { SecurityEvent } from '../src/events';
import { makeReload, rebuildFirewall, ReloadRefused } from '../src/daemon/reload';
import { PenaltyTable } from '../src/scoring';
import { ampere } from './helpers/cli';
import { DaemonProcess, quietEnv } from '../tools/lab/daemon';

const ev = (address: string): SecurityEvent => ({
  kind: 'InvalidAccountID', address, family: 4, service: 'PJSIP', account: '100', sessionId: '', transport: 'UDP', port: 5060, severity: 'Error',
});
const load = (values: Record<string, string>): LoadedConfig => loadConfig({ AMPERE_ENV_FILE: '/nonexistent/.env', AMPERE_CONFIG: '/dev/null', ...Object.fromEntries(Object.entries(values).map(([k, v]) => [`AMPERE_${k.toUpperCase()}`, v])) });

test('reload in process: penalties judge with the new loyalty, a new allow entry lifts its bans, bad config refused', async () => {
  let values: Record<string, string> = { loyalty: '5' };
  const cfg = load(values).config;
  const penalties = new PenaltyTable({ loyalty: cfg.loyalty, findtimeMs: cfg.findtime, maxHosts: 1000 });
  let bantime: unknown = null;
  const decisions = { setBantime: (b: unknown) => { bantime = b; } } as unknown as Decisions;
  const allow = AllowList.of([]);
  const unbanned: string[] = [];
  const effects = { activeBans: () => [{ address: '198.51.100.7', family: 4 as const }, { address: '203.0.113.1', family: 4 as const }], unban: async (a: string) => { unbanned.push(a); return true; }, forgetWhere: () => 0 };
  const log = pino({ level: 'silent' });
  const reload = makeReload({ cfg, penalties, decisions, allow, allowEffects: effects, log, load: () => load(values) });

  values = { loyalty: '2', bantime: '2h', allow: '198.51.100.0/24', log_level: 'debug', chain: 'other' };
  const r = await reload();
  assert.deepEqual(r.applied.sort(), ['allow', 'bantime', 'log_level', 'loyalty']);
  assert.deepEqual(r.needsRestart, ['chain']);
  assert.equal(penalties.observe(ev('192.0.2.1'), 1).action, 'none');
  assert.equal(penalties.observe(ev('192.0.2.1'), 2).action, 'ban', 'the second failure bans at loyalty 2 (5 before)');
  assert.deepEqual(bantime, { bantimeMs: 7_200_000, factor: 4, maxMs: 30 * 86_400_000 });
  assert.equal(log.level, 'debug');
  assert.deepEqual(unbanned, ['198.51.100.7'], 'only the ban the new entry covers is lifted');
  assert.ok(allow.allows('198.51.100.9', 4));
  assert.equal(cfg.loyalty, 2, 'the running config shows what was applied');
  assert.equal(cfg.chain, 'ampere', 'a restart-only key is not written into the running config');

  values = { loyalty: '2', bantime: '2h', allow: '', log_level: 'debug', chain: 'other' };
  assert.deepEqual((await reload()).applied, ['allow']);
  assert.ok(!allow.allows('198.51.100.9', 4), 'a configured entry removed from the file stops matching');
  assert.ok(allow.allows('127.0.0.1', 4), 'the built-in entries stay');

  values = { loyalty: 'lots' };
  await assert.rejects(reload(), (err: unknown) => err instanceof ReloadRefused && /invalid loyalty/.test(err.message));
  assert.equal(cfg.loyalty, 2, 'a refused reload changes nothing');
});

test('reload in process: target and set_size rebuild the firewall in one load', async () => {
  let values: Record<string, string> = {};
  const cfg = load(values).config;
  const penalties = new PenaltyTable({ loyalty: cfg.loyalty, findtimeMs: cfg.findtime, maxHosts: 1000 });
  const calls: string[] = [];
  const backend = { setTarget: (t: string) => calls.push(`target ${t}`), setSetSize: (n: number) => calls.push(`size ${n}`) };
  const decisions = { resync: async () => { calls.push('resync'); } } as unknown as Decisions;
  const reload = makeReload({ cfg, penalties, decisions, allow: AllowList.of([]), allowEffects: { activeBans: () => [], unban: async () => true, forgetWhere: () => 0 }, log: pino({ level: 'silent' }),
    rebuild: rebuildFirewall(backend, decisions), load: () => load(values) });
  values = { set_size: '65536' };
  assert.deepEqual(await reload(), { applied: ['set_size'], needsRestart: [] });
  assert.deepEqual(calls.splice(0), ['size 65536', 'resync']);
  assert.equal(cfg.set_size, 65536, 'status shows it');
  values = { set_size: '2000000', target: 'REJECT' };
  assert.deepEqual((await reload()).applied.sort(), ['set_size', 'target']);
  assert.deepEqual(calls.splice(0), ['target REJECT', 'size 2000000', 'resync'], 'both in one load');
  values = { set_size: '100', target: 'REJECT' };
  await assert.rejects(reload(), (err: unknown) => err instanceof ReloadRefused && /^invalid set_size: "100" from AMPERE_SET_SIZE \(env\); expected a whole number from 65536 to 16777216$/.test(err.message));
  assert.deepEqual(calls, []);
  assert.equal(cfg.set_size, 2_000_000);
});

test('ampere reload and SIGHUP against a running daemon', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampt-reload-'));
  const file = join(dir, 'ampere.cfg');
  writeFileSync(file, 'loyalty = 3\n');
  const env = { ...(await quietEnv(join(dir, 'ampere.db'))), AMPERE_CONFIG: file };
  const d = new DaemonProcess(env);
  try {
    await d.waitFor((x) => x.msg === 'ampere started', 30_000);
    const policy = async () => {
      const r = await ampere(['status'], env);
      assert.equal(r.code, 0, r.stderr);
      return /^ban policy: +(.*)$/m.exec(r.stdout)?.[1];
    };
    // Built-in allow entries: loopback v4 and v6, and the AMI host (loopback here).
    assert.match((await policy())!, /^ban after 3 failures within 10m; bans 1h, x4 for each repeat, at most 30d; \d+ allow entr(y|ies)$/);

    // (a) SIGHUP reloads instead of ending the daemon; the new loyalty is applied.
    writeFileSync(file, 'loyalty = 7\n');
    d.lp.proc.kill('SIGHUP');
    const line = await d.waitFor((x) => x.msg === 'configuration reloaded', 10_000);
    assert.deepEqual(line.applied, ['loyalty']);
    assert.deepEqual(line.needsRestart, []);
    assert.equal(d.lp.proc.exitCode, null, 'still running');
    assert.match((await policy())!, /^ban after 7 failures within 10m;/, 'status shows the policy a reload applied');
    const before = Number(/(\d+) allow entr/.exec((await policy())!)![1]);
    writeFileSync(file, 'loyalty = 7\nbantime = 0\nallow = 198.51.100.0/24\n');
    assert.equal((await ampere(['reload'], env)).code, 0);
    assert.equal(await policy(), `ban after 7 failures within 10m; bans never expire; ${before + 1} allow entries`);
    const json = JSON.parse((await ampere(['status', '--json'], env)).stdout) as { policy: Record<string, number> };
    assert.deepEqual(json.policy, { loyalty: 7, findtimeMs: 600_000, bantimeMs: 0, bantimeFactor: 4, bantimeMaxMs: 30 * 86_400_000, allowEntries: before + 1 });

    // (b) an invalid value is refused naming the key; the daemon keeps running.
    writeFileSync(file, 'loyalty = zero\n');
    const bad = await ampere(['reload'], env);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /reload refused: invalid loyalty/);
    await d.waitFor((x) => x.msg.startsWith('configuration reload refused') && x.key === 'loyalty', 10_000);
    // Unchanged loyalty (7) is what the daemon still runs with: a reload back to 7 applies nothing.
    writeFileSync(file, 'loyalty = 7\nbantime = 0\nallow = 198.51.100.0/24\n');
    const back = await ampere(['reload', '--json'], env);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual(JSON.parse(back.stdout), { applied: [], needsRestart: [] });

    // (c) a changed chain needs a restart.
    writeFileSync(file, 'loyalty = 4\nchain = other\n');
    const ok = await ampere(['reload'], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /applied: loyalty/);
    assert.match(ok.stdout, /needs a restart: chain/);

    assert.equal(await d.stop(), 0);
    const gone = await ampere(['reload'], env);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /daemon not running/);
  } finally {
    await d.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A port nobody listens on now (the kernel's choice, closed again), and a server holding one. */
async function holdPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, server };
}
async function freePort(): Promise<number> {
  const { port, server } = await holdPort();
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}
const scrape = (port: number) => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.status, (err: Error) => String((err.cause as Error | undefined)?.message ?? err));

test('a reload moves the metrics endpoint and the backup schedule; a port in use keeps the old one; on/off needs a restart', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampt-reload-live-'));
  const file = join(dir, 'ampere.cfg');
  const backups = join(dir, 'backups');
  mkdirSync(backups);
  const [p1, p2] = [await freePort(), await freePort()];
  writeFileSync(file, `metrics = 127.0.0.1:${p1}\n`);
  const env = { ...(await quietEnv(join(dir, 'ampere.db'))), AMPERE_CONFIG: file };
  const d = new DaemonProcess(env);
  const held = await holdPort();
  try {
    await d.waitFor((x) => x.msg === 'ampere started', 30_000);
    assert.equal(await scrape(p1), 200);

    writeFileSync(file, `metrics = 127.0.0.1:${p2}\nbackup_dir = ${backups}\nbackup_keep = 3\n`);
    const moved = await ampere(['reload', '--json'], env);
    assert.equal(moved.code, 0, moved.stderr);
    assert.deepEqual(JSON.parse(moved.stdout), { applied: ['metrics', 'backup_dir', 'backup_keep'], needsRestart: [] });
    assert.equal(await scrape(p2), 200, 'served at the new address');
    assert.match(String(await scrape(p1)), /ECONNREFUSED/, 'and no longer at the old one');
    const status = JSON.parse((await ampere(['status', '--json'], env)).stdout) as { metrics: string; backup: { dir: string; keep: number } };
    assert.deepEqual([status.metrics, status.backup.dir, status.backup.keep], [`127.0.0.1:${p2}`, backups, 3]);
    // The schedule's first backup comes 5 s after it starts when the directory has none.
    const written = await d.waitFor((x) => x.msg === 'scheduled backup written', 15_000);
    assert.ok(String(written.path).startsWith(`${backups}/`), String(written.path));
    assert.equal(readdirSync(backups).filter((f) => f.endsWith('.db')).length, 1);

    // A port someone else holds: not moved, the endpoint stays where it was, said once.
    writeFileSync(file, `metrics = 127.0.0.1:${held.port}\nbackup_dir = ${backups}\nbackup_keep = 3\n`);
    const refused = await ampere(['reload', '--json'], env);
    assert.deepEqual(JSON.parse(refused.stdout), { applied: [], needsRestart: [] });
    await d.waitFor((x) => x.msg === 'metrics endpoint not moved: it stays where it was' && x.still === `127.0.0.1:${p2}`, 10_000);
    assert.equal(await scrape(p2), 200, 'still served at the address it had');

    // Off needs a restart: nothing closes.
    writeFileSync(file, `backup_dir = ${backups}\nbackup_keep = 3\n`);
    const off = await ampere(['reload', '--json'], env);
    assert.deepEqual(JSON.parse(off.stdout), { applied: [], needsRestart: ['metrics'] });
    assert.equal(await scrape(p2), 200);
    assert.equal(await d.stop(), 0);
  } finally {
    await d.stop('SIGKILL');
    held.server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
