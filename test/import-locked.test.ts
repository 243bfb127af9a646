import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { encodeLegacyAddr } from '../src/legacy';
import { ampere } from './helpers/cli';
import { legacyDb } from './helpers/fixtures';
import { DaemonProcess, quietEnv } from '../tools/lab/daemon';

test('an import while another process holds the write lock: every ban reaches the kernel, rows stored after', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampt-lockimport-'));
  const env = await quietEnv(join(dir, 'ampere.db'));
  const legacy = join(dir, 'old.db');
  legacyDb(legacy, Array.from({ length: 1500 }, (_, i): [number, string] => [encodeLegacyAddr(`12.0.${i >> 8}.${i & 255}`), `acct${i}`]));
  const d = new DaemonProcess(env);
  let holder: Database.Database | null = null;
  try {
    await d.waitFor((x) => x.msg === 'ampere started', 30_000);
    // The attack on the import: a backup tool (or a sqlite3 shell) holds the write lock throughout.
    holder = new Database(env.AMPERE_DB);
    holder.exec('BEGIN IMMEDIATE');
    const r = await ampere(['import-legacy', legacy, '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { imported: string[]; refused: unknown[] };
    assert.equal(out.imported.length, 1500, 'every entry imported (in the kernel) though no row could be written');
    const held = holder.prepare("SELECT count(*) AS n FROM bans WHERE source = 'legacy'").get() as { n: number };
    assert.equal(held.n, 0, 'nothing stored while the lock is held');
    holder.exec('COMMIT');
    holder.close();
    holder = null;
    // What the design promises: the pending rows are retried and written once the lock is gone.
    await d.waitFor((x) => x.msg === 'database writes succeed again', 20_000);
    const ro = new Database(env.AMPERE_DB, { readonly: true });
    try {
      const { n } = ro.prepare("SELECT count(*) AS n FROM bans WHERE source = 'legacy' AND lifted_at IS NULL").get() as { n: number };
      assert.equal(n, 1500);
    } finally { ro.close(); }
    assert.equal(await d.stop(), 0);
  } finally {
    holder?.close();
    await d.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
