import { test } from 'node:test';
import assert from 'node:assert/strict';
import { commandLines } from '../src/firewall/exec-lines';
import { CommandError } from '../src/firewall/exec';

/** commandLines: a command's output line by line as it comes, and its failure after them. */
async function collect(file: string, args: string[]): Promise<{ lines: string[]; err: unknown }> {
  const lines: string[] = [];
  try {
    for await (const l of commandLines(file, args)) lines.push(l);
    return { lines, err: null };
  } catch (err) {
    return { lines, err };
  }
}

test('lines split across reads, a last line without a newline, empty lines kept', async () => {
  const r = await collect('sh', ['-c', 'printf "a\\nbb"; sleep 0.05; printf "b\\n\\nlast"']);
  assert.equal(r.err, null);
  assert.deepEqual(r.lines, ['a', 'bbb', '', 'last']);
});

test('200,000 lines arrive in order, as read', async () => {
  const r = await collect('seq', ['1', '200000']);
  assert.equal(r.err, null);
  assert.equal(r.lines.length, 200_000);
  assert.equal(r.lines[0], '1');
  assert.equal(r.lines[199_999], '200000');
});

test('a failing command throws a CommandError with its code and stderr, after the lines it printed', async () => {
  const r = await collect('sh', ['-c', 'echo one; echo oops >&2; exit 3']);
  assert.deepEqual(r.lines, ['one']);
  assert.ok(r.err instanceof CommandError);
  assert.equal((r.err as CommandError).code, 3);
  assert.match((r.err as CommandError).stderr, /oops/);
});

test('a missing command is a CommandError naming it', async () => {
  const r = await collect('ampere-no-such-command', []);
  assert.deepEqual(r.lines, []);
  assert.ok(r.err instanceof CommandError);
  assert.match((r.err as Error).message, /ampere-no-such-command: command not found/);
});

test('a reader that stops early leaves no process behind', async () => {
  let pid = 0;
  for await (const l of commandLines('sh', ['-c', 'echo $$; exec sleep 30'])) { pid = Number(l); break; }
  await new Promise((r) => setTimeout(r, 100));
  assert.throws(() => process.kill(pid, 0), /ESRCH/);
});

test('no timer outlives a command, even one that never started', async () => {
  // A command's kill timer left behind keeps the process alive until it fires (five minutes).
  const timers = () => (process as unknown as { getActiveResourcesInfo(): string[] }).getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  await collect('ampere-no-such-command', []);
  await collect('sh', ['-c', 'exit 2']);
  assert.equal(timers(), before, 'a command that never started, or that failed');
  // A reader that stops early: the command is killed, its timer goes when it has closed.
  for await (const _ of commandLines('sh', ['-c', 'echo 1; exec sleep 30'])) break;
  for (let i = 0; i < 100 && timers() > before; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(timers(), before, 'a command whose reader stopped early');
});
