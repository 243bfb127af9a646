/**
 * The ipset backend's live shell (`ipset -exist -`) against an `ipset` that writes its error
 * the way ipset 7 does, in two writes ("ipset v7.17: ", then the message) before its prompt,
 * here with a pause between them, and whose prompt (bash's printf, unbuffered) comes a byte at
 * a time. The real one is used by test/set-size.test.ts and the firewall tests; this one makes
 * certain the split a loaded machine shows now and then (a full set once failed its batch as
 * "ipset v7.17:", not recognised as full).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandError } from '../src/firewall/exec';
import { IpsetShell } from '../src/firewall/ipset-shell';

/** A fake ipset shell: `add` of an address ending in .99 fails as a full set, in two writes `pauseS` apart. */
const FAKE = (pauseS: number) => `#!/bin/bash
printf 'ipset> '
while IFS= read -r line; do
  case "$line" in
    *.99*) printf 'ipset v7.17: ' >&2; sleep ${pauseS}; printf 'Error in line 1: Hash is full, cannot add more elements\\n' >&2 ;;
    *.98*) printf 'ipset v7.17: ' >&2; sleep ${pauseS} ;;
  esac
  printf 'ipset> '
done
`;

async function withFakeIpset(pauseS: number, fn: (shell: IpsetShell) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-fake-ipset-'));
  const path = process.env.PATH;
  writeFileSync(join(dir, 'ipset'), FAKE(pauseS));
  chmodSync(join(dir, 'ipset'), 0o755);
  process.env.PATH = `${dir}:${path}`;
  const shell = new IpsetShell(undefined, 10_000);
  try { await fn(shell); } finally { shell.close(); process.env.PATH = path; rmSync(dir, { recursive: true, force: true }); }
}

test('an error written in two pieces fails its batch with the whole text, not its first piece', { skip: IpsetShell.available() ? false : 'no stdbuf' }, () =>
  withFakeIpset(0.02, async (shell) => {
    await shell.run(['add s 192.0.2.1 timeout 0']);
    const err = await shell.run(['add s 192.0.2.2 timeout 0', 'add s 192.0.2.99 timeout 0']).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof CommandError, 'the batch failed');
    assert.match(err.stderr, /^ipset v7\.17: Error in line 1: Hash is full, cannot add more elements$/);
    // The failed shell was replaced: the next batch works.
    await shell.run(['add s 192.0.2.3 timeout 0']);
  }));

test('an error with no prompt after it still fails its batch (after a short wait), with what was written', { skip: IpsetShell.available() ? false : 'no stdbuf' }, () =>
  withFakeIpset(3, async (shell) => {
    const err = await shell.run(['add s 192.0.2.98 timeout 0']).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof CommandError);
    assert.equal(err.stderr, 'ipset v7.17:');
  }));
