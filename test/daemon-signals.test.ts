import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DaemonProcess, quietEnv } from '../tools/lab/daemon';

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

// Pretty logs are written synchronously, so the warning reaches the test while the start is still running.
const text = (l: { msg: string }) => l.msg.replace(/^\(not json\) /, '');

for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  test(`${signal} during the start: the daemon finishes starting and ${signal === 'SIGHUP' ? 'keeps running' : 'stops cleanly (exit 0)'}`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'ampere-sig-')); dirs.push(dir);
    // An unknown variable makes the start's first line a warning, logged before the database opens.
    const d = new DaemonProcess({ ...(await quietEnv(join(dir, 'ampere.db'))), AMPERE_LOG_FORMAT: 'pretty', AMPERE_NO_SUCH_KEY: '1' });
    t.after(() => d.stop('SIGKILL'));
    await d.waitFor((l) => /WARN \(ampere\): unknown variable AMPERE_NO_SUCH_KEY ignored/.test(text(l)));
    d.proc.kill(signal);
    await d.waitFor((l) => / INFO \(ampere\): ampere started /.test(text(l)));
    if (signal === 'SIGHUP') {
      // Handled either while starting (nothing to reload yet) or just after (a reload): never an end.
      await d.waitFor((l) => /SIGHUP during the start: nothing reloaded|configuration reloaded/.test(text(l)));
      assert.equal(d.proc.exitCode, null);
      assert.equal(await d.stop(), 0);
      return;
    }
    assert.equal(await d.exit, 0, `exit code (a signal-killed daemon gives null); stderr: ${d.stderr}`);
    const stopping = d.lines.findIndex((l) => new RegExp(`INFO \\(ampere\\): stopping \\{"signal":"${signal}"\\}`).test(text(l)));
    const started = d.lines.findIndex((l) => / ampere started /.test(text(l)));
    assert.ok(stopping > started, 'stopped after the start completed');
    assert.ok(d.lines.some((l) => /ampere stopped; bans stay in the kernel/.test(text(l))));
  });
}
