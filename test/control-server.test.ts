import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlRequest, ControlUnreachable } from '../src/control/client';
import { claimSocket, ControlServer, HttpError } from '../src/control/server';
import { createLogger } from '../src/log';

const quiet = createLogger('silent');

test('control server: JSON in and out over a 0600 socket, errors as statuses, stale sockets replaced, a live one refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-ctl-'));
  const path = join(dir, 'ampere.sock');
  await assert.rejects(controlRequest(path, 'GET', '/status'), (e: unknown) => e instanceof ControlUnreachable && e.reason === 'not-running');
  const srv = await ControlServer.listen(path, async (r) => {
    if (r.path === '/echo') return { body: { method: r.method, body: r.body, q: r.query.get('q') } };
    if (r.path === '/bad') throw new HttpError(400, 'no good');
    throw new Error('unexpected');
  }, quiet);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.deepEqual((await controlRequest(path, 'POST', '/echo?q=1', { a: [1] })).body, { method: 'POST', body: { a: [1] }, q: '1' });
  assert.deepEqual(await controlRequest(path, 'GET', '/bad'), { status: 400, body: { error: 'no good' } });
  assert.equal((await controlRequest(path, 'GET', '/boom')).status, 500);
  await assert.rejects(claimSocket(path), /another Ampere daemon is running on this database/);
  await srv.close();
  assert.equal(existsSync(path), false);
  // A socket file left by a killed daemon: nothing answers, so it is replaced.
  const child = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await once(child.stdout!, 'data');
  child.kill('SIGKILL');
  await once(child, 'exit');
  assert.equal(existsSync(path), true);
  await claimSocket(path);
  assert.equal(existsSync(path), false);
  writeFileSync(path, 'not a socket');
  await assert.rejects(claimSocket(path), /exists and is not a socket/);
});
