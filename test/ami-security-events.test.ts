import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlRequest } from '../src/control/client';
import { SECURITY_EVENT_GRACE_MS } from '../src/ami/heard';
import { ampere } from './helpers/cli';
import { DaemonProcess } from '../tools/lab/daemon';
import { FakeAmi } from '../tools/lab/ami';

/**
 * An AMI user without `read = security` logs in fine and hears nothing: Ampere would protect
 * nothing while looking healthy. Asterisk sends every login's own SuccessfulAuth at once to a
 * user who may read it, so `check` and `health` can tell.
 */
describe('an AMI user that receives no security events', () => {
  const daemons: DaemonProcess[] = [];
  const amis: FakeAmi[] = [];
  const dirs: string[] = [];
  after(async () => {
    await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
    await Promise.all(amis.map((a) => a.close()));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  const setup = async (readSecurity: boolean) => {
    const ami = new FakeAmi({ readSecurity });
    await ami.listen();
    amis.push(ami);
    const dir = mkdtempSync(join(tmpdir(), 'ampere-sec-'));
    dirs.push(dir);
    const env = { AMPERE_PORT: String(ami.port), AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'dry-run', AMPERE_AMI_TIMEOUT: '2s' };
    const d = new DaemonProcess(env);
    daemons.push(d);
    await d.waitFor((l) => l.msg === 'ami connected');
    const status = () => controlRequest<any>(join(dir, 'ampere.sock'), 'GET', '/status').then((r) => r.body);
    /** Until the grace after the daemon's login is over (what the design promises to wait). */
    const graceOver = async () => {
      const since = (await status()).ami.since as number;
      while (Date.now() < since + SECURITY_EVENT_GRACE_MS + 300) await new Promise((r) => setTimeout(r, 100));
    };
    return { ami, d, dir, env, status, graceOver };
  };

  test('without read = security: health fails once the grace is over, check names the fix', async () => {
    const { dir, env, status, graceOver } = await setup(false);
    const early = await ampere(['health'], env);
    const s0 = await status();
    if (Date.now() - s0.ami.since < SECURITY_EVENT_GRACE_MS - 1000) assert.equal(early.code, 0, `within the grace: ${early.stderr}`);
    await graceOver();
    const health = await ampere(['health'], env);
    assert.equal(health.code, 1);
    assert.match(health.stderr, /^unhealthy: no security event heard since the AMI login \d+ s ago: give the AMI user "ampere" "read = security" in manager\.conf$/m);
    assert.equal((await status()).ami.securityEventSince, null);
    const check = await ampere(['check'], env);
    assert.equal(check.code, 1, check.stdout);
    assert.match(check.stdout, /^FAIL +ami +127\.0\.0\.1:\d+ reachable .*login as "ampere" accepted, but no security event arrived within 3 s \(Asterisk sends one for every login\): give the user "read = security" in manager\.conf$/m);
    assert.match(check.stdout, /^FAIL +daemon health +no security event heard since the AMI login/m);
    assert.match(check.stderr, /ampere check: 2 problems/);
    // The status file (what `ampere health` reads when the socket is out of reach) says it too.
    const file = () => { try { return JSON.parse(readFileSync(join(dir, 'ampere.status.json'), 'utf8')); } catch { return {}; } };
    for (let i = 0; i < 150 && !file().ami?.deaf; i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(String(file().ami?.deaf), /read = security/);
  });

  test('with read = security: the login event is heard, health and check are content', async () => {
    const { env, status, graceOver } = await setup(true);
    await graceOver();
    const s = await status();
    assert.equal(typeof s.ami.securityEventSince, 'number');
    assert.ok(s.ami.securityEventSince >= s.ami.since, 'heard after this login');
    const health = await ampere(['health'], env);
    assert.equal(health.code, 0, health.stderr);
    const check = await ampere(['check'], env);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, /^ok +ami +.*login as "ampere" accepted, security events arrive$/m);
    assert.match(check.stdout, /^ok +daemon health +healthy$/m);
  });

  test('a reconnect is judged afresh: a user that lost read = security is caught after the next login', async () => {
    const { ami, d, env, graceOver } = await setup(true);
    await graceOver();
    assert.equal((await ampere(['health'], env)).code, 0);
    ami.opts.readSecurity = false; // manager.conf changed, Asterisk reloaded
    ami.cut();
    await d.waitFor((l) => l.msg === 'ami connected', 10_000, 2);
    await graceOver();
    const health = await ampere(['health'], env);
    assert.equal(health.code, 1);
    assert.match(health.stderr, /read = security/);
  });
});
