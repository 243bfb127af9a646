import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ampere, json } from './helpers/cli';
import { DaemonProcess } from './helpers/daemon';
import { FakeAmi } from './helpers/fake-ami';

/** Operator commands of issue 17: help, completion, config, several addresses, top, import-fail2ban. */
const dirs: string[] = [];
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'ampere-ops-')); dirs.push(d); return d; };
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

describe('help and completion', () => {
  test('help <command> and <command> --help print the same usage, exit 0; unknown is a usage error', async () => {
    const [help, flag, short, run, health, unknown, none] = await Promise.all([
      ampere(['help', 'ban'], {}), ampere(['ban', '--help'], {}), ampere(['ban', '-h'], {}),
      ampere(['run', '--help'], { AMPERE_DB: '/nonexistent/x.db' }), ampere(['health', '--help'], {}), ampere(['help', 'nope'], {}), ampere(['help'], {}),
    ]);
    for (const r of [help, flag, short, run, health, none]) assert.equal(r.code, 0, r.stderr);
    assert.equal(help.stdout, 'usage: ampere ban <ip>... [--for <duration>|permanent] [--reason <text>] [--json]\n');
    assert.equal(flag.stdout, help.stdout);
    assert.equal(short.stdout, help.stdout);
    // `run --help` must print, not start a daemon.
    assert.equal(run.stdout, 'usage: ampere run\n');
    assert.equal(health.stdout, 'usage: ampere health\n');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "nope"/);
    assert.match(none.stdout, /^usage: ampere <command>/);
  });

  test('every command in the main usage has its own usage, and each answers --help with it', async () => {
    const { USAGE_OF } = await import('../src/cli/usage');
    const results = await Promise.all(Object.keys(USAGE_OF).filter((c) => c !== 'help').map(async (c) => [c, await ampere([c, '--help'], {})] as const));
    for (const [c, r] of results) {
      assert.equal(r.code, 0, `${c}: ${r.stderr}`);
      assert.equal(r.stdout, `usage: ampere ${USAGE_OF[c]}\n`, c);
    }
  });

  test('bash completion: sourced in bash, completes commands and the flags of the command typed', async () => {
    const script = (await ampere(['completion', 'bash'], {})).stdout;
    const dir = tmp();
    writeFileSync(join(dir, 'c.bash'), script);
    const complete = (words: string[]) => execFileSync('bash', ['-c', `source ${join(dir, 'c.bash')}; complete -p ampere; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _ampere; echo "\${COMPREPLY[*]}"`], { encoding: 'utf8' }).split('\n');
    const [spec, first] = complete(['ampere', 'im']);
    assert.equal(spec, 'complete -o default -F _ampere ampere');
    assert.deepEqual(first.split(' ').sort(), ['import-fail2ban', 'import-legacy']);
    assert.equal(complete(['ampere', 'ban', '--f'])[1], '--for');
    assert.deepEqual(complete(['ampere', 'top', '--'])[1].split(' ').sort(), ['--by', '--help', '--json', '--limit', '--since']);
    assert.equal(complete(['ampere', 'help', 'sta'])[1], 'status');
    assert.equal(complete(['ampere', 'completion', 'z'])[1], 'zsh');
    const zsh = await ampere(['completion', 'zsh'], {});
    assert.equal(zsh.code, 0);
    assert.match(zsh.stdout, /bashcompinit/);
    assert.equal((await ampere(['completion', 'fish'], {})).code, 2);
  });
});

describe('ampere config', () => {
  test('each value with its source (env, .env, file, default); the password only as set', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'ampere.cfg'), 'loyalty = 5\npass = hunter2-file-secret\nbantime = 2h\nfindtime = 1m\n');
    writeFileSync(join(dir, '.env'), 'AMPERE_BANTIME=3h\nAMPERE_PASS=dotenv-secret-xyz\n');
    const env = { AMPERE_CONFIG: join(dir, 'ampere.cfg'), AMPERE_ENV_FILE: join(dir, '.env'), AMPERE_FINDTIME: '20m', AMPERE_DB: join(dir, 'none.db'), AMPERE_PASS: 'env-secret-abc' };
    const [table, js] = await Promise.all([ampere(['config'], env), ampere(['config', '--json'], env)]);
    assert.equal(table.code, 0, table.stderr);
    assert.equal(js.code, 0, js.stderr);
    for (const out of [table.stdout + table.stderr, js.stdout + js.stderr]) {
      for (const secret of ['hunter2', 'dotenv-secret', 'env-secret']) assert.ok(!out.includes(secret), `password text shown: ${secret}`);
    }
    const keys = Object.fromEntries(json(js).keys.map((k: { key: string; value: string; source: string }) => [k.key, [k.value, k.source]]));
    assert.deepEqual(keys.pass, ['set', 'env']);
    assert.deepEqual(keys.findtime, ['20m', 'env']);
    assert.deepEqual(keys.bantime, ['3h', '.env']);
    assert.deepEqual(keys.loyalty, ['5', 'file']);
    assert.deepEqual(keys.target, ['DROP', 'default']);
    assert.equal(json(js).file, join(dir, 'ampere.cfg'));
    assert.match(table.stdout, /^loyalty +5 +file$/m);
    assert.match(table.stdout, /^pass +set +env$/m);
    // No password given anywhere: said so, still without the default's text.
    const bare = json(await ampere(['config', '--json'], { AMPERE_DB: join(dir, 'none.db') }));
    assert.deepEqual(bare.keys.find((k: { key: string }) => k.key === 'pass').value, 'not set (the default)');
  });

  test('a bad value: exit 1 naming the key (the password hidden); a bad argument: exit 2', async () => {
    const bad = await ampere(['config'], { AMPERE_LOYALTY: 'lots' });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid loyalty: "lots" from AMPERE_LOYALTY/);
    const pass = await ampere(['config'], { AMPERE_PASS: 'x'.repeat(300) + 'SECRETTAIL' });
    assert.equal(pass.code, 1);
    assert.ok(!pass.stderr.includes('SECRETTAIL'));
    assert.equal((await ampere(['config', 'extra'], {})).code, 2);
  });
});
