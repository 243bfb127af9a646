import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DaemonProcess } from '../tools/lab/daemon';

/** The daemon with the dry-run backend (no kernel), its AMI port closed (it keeps retrying). */
const dir = mkdtempSync(join(tmpdir(), 'ampere-crash-'));
after(() => rmSync(dir, { recursive: true, force: true }));
/** The daemon's exit code, failing the test if it has not exited within ms. */
async function exited(d: DaemonProcess, ms = 20_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => { d.proc.kill('SIGKILL'); reject(new Error(`no exit within ${ms} ms\n${d.dump()}`)); }, ms); });
  try { return await Promise.race([d.exit, late]); } finally { clearTimeout(timer); }
}
const env = (extra: Record<string, string> = {}) => ({ AMPERE_BACKEND: 'dry-run', AMPERE_PORT: '9', AMPERE_DB: join(dir, 'ampere.db'), AMPERE_NICE: '0', ...extra });

test('an uncaught exception: the lines before it and the reason are on stdout before the exit (code 1)', async () => {
  const d = new DaemonProcess(env(), { nodeArgs: ['--require', join(__dirname, 'fixtures', 'preload', 'fault-on-sigterm.cjs')] });
  await d.waitFor((l) => l.msg === 'ampere started', 20_000);
  d.proc.kill('SIGTERM');
  assert.equal(await exited(d), 1);
  assert.equal(d.count((l) => l.msg === 'stopping'), 1, 'the line logged just before the fault');
  // The fatal line is written synchronously while an earlier asynchronous write may still be
  // in flight, so it need not be the last line: it must be there, with the reason.
  const fatal = d.lines.find((l) => l.msg === 'uncaught exception: ampere stops');
  assert.ok(fatal, d.dump());
  assert.equal(fatal.level, 60);
  assert.match(String((fatal.err as { message: string }).message), /injected fault/);
});

test('a daemon that fails at start: every line before the failure, then the fatal one, then exit 1', async () => {
  // 300 warnings (unknown variables) fill the logger's buffer just before the start fails
  // (the database's folder cannot be made: a file is in the way).
  const noise = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`AMPERE_UNKNOWN_${i}`, 'x']));
  writeFileSync(join(dir, 'a-file'), '');
  const d = new DaemonProcess(env({ ...noise, AMPERE_DB: join(dir, 'a-file', 'ampere.db') }));
  assert.equal(await exited(d), 1);
  assert.equal(d.count((l) => l.level === 40 && /^unknown variable AMPERE_UNKNOWN_\d+ ignored$/.test(l.msg)), 300);
  const last = d.lines.at(-1)!;
  assert.deepEqual([last.msg, last.level], ['ampere could not start', 60]);
});
