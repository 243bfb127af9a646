import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ampere } from './helpers/cli';
import { DaemonProcess } from '../tools/lab/daemon';

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'ampere-logfmt-')); dirs.push(d); return d; };

test('log_format = pretty: the daemon writes one readable line per event, none of them JSON', async () => {
  const dir = tmp();
  const d = new DaemonProcess({ AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'dry-run', AMPERE_PORT: '1', AMPERE_LOG_FORMAT: 'pretty' });
  const text = (l: { msg: string }) => l.msg.replace(/^\(not json\) /, '');
  const started = await d.waitFor((l) => / INFO \(ampere\): ampere started /.test(text(l)));
  // [2026-12-05 00:07:19.123 +0000] INFO (ampere): ampere started {"config":...}
  assert.match(text(started), /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d{4}\] INFO \(ampere\): ampere started \{"config":\{.*"log_format":"pretty"/);
  assert.equal(await d.stop(), 0);
  assert.ok(d.lines.length >= 2);
  for (const l of d.lines) assert.match(text(l), /^\[[^\]]+\] (TRACE|DEBUG|INFO|WARN|ERROR|FATAL) \(ampere\): \S/, 'every line readable, not JSON');
  assert.ok(d.lines.some((l) => / INFO \(ampere\): ampere stopped; bans stay in the kernel/.test(text(l))), 'the last line, written at stop, is there');
});

test('log_format: the default is JSON; a bad value stops the start naming the key', async () => {
  const dir = tmp();
  const bad = await ampere(['run'], { AMPERE_DB: join(dir, 'a.db'), AMPERE_BACKEND: 'dry-run', AMPERE_LOG_FORMAT: 'fancy' });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^ampere: invalid log_format: "fancy" from AMPERE_LOG_FORMAT \(env\); expected one of json, pretty$/m);
  const d = new DaemonProcess({ AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'dry-run', AMPERE_PORT: '1' });
  const started = await d.waitFor((l) => l.msg === 'ampere started');
  assert.equal(started.level, 30);
  await d.stop();
});
