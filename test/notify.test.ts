import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { loadConfig, ConfigError } from '../src/config';
import { Notifier, redactUrl } from '../src/notify';
import { checkTemplate, fillTemplate, type NotifyEvent } from '../src/notify/body';
import { ampere } from './helpers/cli';
import { DaemonProcess } from '../tools/lab/daemon';

const SECRET = 'tok3n-s3cr3t';
const dirs: string[] = [];
const servers: Server[] = [];
after(async () => {
  for (const s of servers) { s.closeAllConnections(); await new Promise((r) => s.close(r)); }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Hit { method: string; url: string; auth: string; type: string; body: string }

/** A webhook on loopback; `answer` decides per request (status, or 'hang' to never answer). */
async function webhook(answer: (n: number) => number | 'hang') {
  const hits: Hit[] = [];
  const waiters: (() => void)[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      hits.push({ method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization ?? '', type: req.headers['content-type'] ?? '', body });
      for (const w of waiters.splice(0)) w();
      const a = answer(hits.length);
      if (a !== 'hang') res.writeHead(a).end('ok');
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const until = async (n: number, ms = 10_000) => {
    const end = Date.now() + ms;
    while (hits.length < n) {
      if (Date.now() > end) throw new Error(`webhook got ${hits.length} of ${n} requests`);
      await new Promise<void>((r) => { const t = setTimeout(r, 200); waiters.push(() => { clearTimeout(t); r(); }); });
    }
  };
  return { hits, until, url: `http://hook:${SECRET}-pw@127.0.0.1:${port}/services/T0/${SECRET}-path?token=${SECRET}-q` };
}

/** A pino logger whose every line is kept, to look for the secret in. */
function capture() {
  const lines: string[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write(c, _e, cb) { lines.push(String(c)); cb(); } }));
  return { log, lines };
}

const event = (address: string): NotifyEvent => ({ action: 'ban', address, reason: 'InvalidPassword PJSIP account "100"', source: 'auto', duration: 3600, count: 2, host: 'pbx1', at: '2026-12-05T00:00:00.000Z' });

const waitState = async (cond: () => boolean, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!cond()) { if (Date.now() > end) throw new Error('state not reached'); await new Promise((r) => setTimeout(r, 20)); }
};

describe('notify: the webhook sender against a real local HTTP server', () => {
  test('delivers one JSON POST per event, in order, with basic auth from the URL; logs no secret', async () => {
    const hook = await webhook(() => 204);
    const { log, lines } = capture();
    const n = new Notifier({ url: hook.url, format: 'json', template: '', timeoutMs: 2000, log });
    n.push(event('203.0.113.1'));
    n.push({ ...event('203.0.113.1'), action: 'unban', reason: 'expired', source: '', duration: null, count: null });
    await hook.until(2);
    await waitState(() => n.state.delivered === 2);
    assert.equal(hook.hits[0].method, 'POST');
    assert.equal(hook.hits[0].type, 'application/json');
    assert.equal(hook.hits[0].auth, `Basic ${Buffer.from(`hook:${SECRET}-pw`).toString('base64')}`);
    assert.deepEqual(JSON.parse(hook.hits[0].body), event('203.0.113.1'));
    assert.equal(JSON.parse(hook.hits[1].body).action, 'unban');
    assert.equal(JSON.parse(hook.hits[1].body).reason, 'expired');
    n.stop();
    assert.ok(lines.every((l) => !l.includes(SECRET)), lines.join(''));
  });

  test('500: retried with backoff, then given up, counted and logged without the secret', async () => {
    const hook = await webhook(() => 500);
    const { log, lines } = capture();
    const n = new Notifier({ url: hook.url, format: 'slack', template: '', timeoutMs: 2000, log, attempts: 3, backoffMs: 50 });
    const t0 = Date.now();
    n.push(event('203.0.113.2'));
    await waitState(() => n.state.failed === 1);
    assert.equal(hook.hits.length, 3);
    assert.ok(Date.now() - t0 >= 150, 'two backoff waits (50 + 100 ms) between the three tries');
    assert.equal(n.state.delivered, 0);
    assert.match(JSON.parse(hook.hits[0].body).text, /^ampere on pbx1 banned 203\.0\.113\.2 for 1h \(ban 2, auto\): InvalidPassword/);
    const given = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'notification not delivered: given up');
    assert.equal(given.err, 'HTTP 500');
    assert.equal(given.attempts, 3);
    assert.equal(given.url, `http://127.0.0.1:${new URL(hook.url).port}/[redacted]`);
    n.stop();
    assert.ok(lines.every((l) => !l.includes(SECRET)), lines.join(''));
  });

  test('a webhook that never answers: each try times out, the queue stays bounded, drops are counted; push never waits', async () => {
    const hook = await webhook(() => 'hang');
    const { log, lines } = capture();
    const n = new Notifier({ url: hook.url, format: 'json', template: '', timeoutMs: 300, log, attempts: 2, backoffMs: 50, maxQueue: 5 });
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) n.push(event(`203.0.113.${i + 10}`));
    assert.ok(performance.now() - t0 < 50, 'pushing 50 events must not wait on the webhook');
    assert.equal(n.state.dropped, 45);
    assert.equal(n.state.queued, 5);
    await waitState(() => n.state.failed === 1);
    // The first event's two tries (the next event's first may have begun since).
    assert.deepEqual(hook.hits.slice(0, 2).map((h) => JSON.parse(h.body).address), ['203.0.113.10', '203.0.113.10'], 'the hanging request was timed out and tried once more');
    const given = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'notification not delivered: given up');
    assert.match(given.err, /no answer within 300 ms/);
    assert.ok(lines.some((l) => JSON.parse(l).msg === 'notification dropped: the webhook queue is full'));
    n.stop();
    assert.ok(lines.some((l) => /"unsent":4/.test(l)), 'what is left at stop is logged');
    assert.ok(lines.every((l) => !l.includes(SECRET)), lines.join(''));
  });

  test('a refused connection is retried and given up; its error carries no secret', async () => {
    const { log, lines } = capture();
    const n = new Notifier({ url: `http://u:${SECRET}@127.0.0.1:1/${SECRET}?k=${SECRET}`, format: 'json', template: '', timeoutMs: 1000, log, attempts: 2, backoffMs: 10 });
    n.push(event('203.0.113.3'));
    await waitState(() => n.state.failed === 1);
    assert.match(lines.join(''), /ECONNREFUSED/);
    assert.ok(lines.every((l) => !l.includes(SECRET)));
  });

  test('template: values are JSON-escaped, so a hostile account name cannot break out of its string', () => {
    const t = '{"text": "{action} {address}: {reason}", "who": "{host}"}';
    assert.equal(checkTemplate(t), null);
    const body = JSON.parse(fillTemplate(t, { ...event('203.0.113.4'), reason: 'x", "admin": true, "y": "\\' }));
    assert.deepEqual(Object.keys(body), ['text', 'who']);
    assert.equal(body.text, 'ban 203.0.113.4: x", "admin": true, "y": "\\');
    assert.match(checkTemplate('{"text": {address}}') ?? '', /not valid JSON/);
    assert.match(checkTemplate('{"text": "{nope}"}') ?? '', /unknown placeholder \{nope\}/);
    assert.match(checkTemplate('"{address}"') ?? '', /not a JSON object/);
  });

  test('redactUrl keeps scheme, host and port only', () => {
    assert.equal(redactUrl(`https://a:${SECRET}@hooks.example.com:8443/x/${SECRET}?t=${SECRET}`), 'https://hooks.example.com:8443/[redacted]');
    assert.equal(redactUrl('http://127.0.0.1:9/'), 'http://127.0.0.1:9/');
  });
});

describe('notify: configuration', () => {
  const load = (env: Record<string, string>) => loadConfig({ AMPERE_CONFIG: '/dev/null', AMPERE_ENV_FILE: '/nonexistent', ...env });
  test('a bad URL, format, template or timeout is refused naming the key, never echoing the URL', () => {
    for (const [k, v, re] of [
      ['AMPERE_NOTIFY_URL', `ftp://x:${SECRET}@h/`, /invalid notify_url: \(hidden\) .*http:\/\/ or https:\/\//],
      ['AMPERE_NOTIFY_URL', `not a url ${SECRET}`, /invalid notify_url/],
      ['AMPERE_NOTIFY_FORMAT', 'xml', /invalid notify_format/],
      ['AMPERE_NOTIFY_TEMPLATE', '{"t": {address}}', /invalid notify_template/],
      ['AMPERE_NOTIFY_TIMEOUT', '5m', /invalid notify_timeout/],
    ] as const) {
      assert.throws(() => load({ [k]: v }), (e: unknown) => e instanceof ConfigError && re.test(e.message) && !e.message.includes(SECRET), `${k}=${v}`);
    }
    assert.equal(load({}).config.notify_url, '');
  });

  test('the daemon refuses to start on a bad notify_url, naming the key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ampere-notify-'));
    dirs.push(dir);
    const r = await ampere(['run'], { AMPERE_DB: join(dir, 'a.db'), AMPERE_BACKEND: 'dry-run', AMPERE_NOTIFY_URL: `gopher://${SECRET}` });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid notify_url/);
    assert.ok(!(r.stdout + r.stderr).includes(SECRET));
  });
});

describe('notify: the running daemon', () => {
  test('an operator ban and unban each reach the webhook; no log line, no config output shows the secret', async () => {
    const hook = await webhook(() => 200);
    const dir = mkdtempSync(join(tmpdir(), 'ampere-notify-'));
    dirs.push(dir);
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const metricsPort = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const env = { AMPERE_DB: join(dir, 'ampere.db'), AMPERE_BACKEND: 'dry-run', AMPERE_PORT: '1', AMPERE_NOTIFY_URL: hook.url, AMPERE_METRICS: `127.0.0.1:${metricsPort}` };
    const d = new DaemonProcess(env);
    try {
      await d.waitFor((l) => l.msg === 'ampere started');
      const ban = await ampere(['ban', '198.51.100.7', '--for', '2h', '--reason', 'scanner'], env);
      assert.equal(ban.code, 0, ban.stderr);
      await hook.until(1);
      const b = JSON.parse(hook.hits[0].body);
      assert.deepEqual({ ...b, host: typeof b.host, at: typeof b.at }, { action: 'ban', address: '198.51.100.7', reason: 'scanner', source: 'manual', duration: 7200, count: 1, host: 'string', at: 'string' });
      assert.equal((await ampere(['unban', '198.51.100.7'], env)).code, 0);
      await hook.until(2);
      assert.deepEqual(JSON.parse(hook.hits[1].body).action, 'unban');
      // The count follows the webhook's answer: read until it does.
      let status = await ampere(['status'], env);
      for (let i = 0; i < 50 && !/2 delivered/.test(status.stdout); i++) status = await ampere(['status'], env);
      assert.match(status.stdout, /^notifications: +http:\/\/127\.0\.0\.1:\d+\/\[redacted\]: 2 delivered, 0 given up, 0 dropped, 0 queued$/m);
      assert.ok(!status.stdout.includes(SECRET));
      const scraped = (await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()).split('\n');
      assert.ok(scraped.includes('ampere_notify_total{result="delivered"} 2'), scraped.filter((l) => l.startsWith('ampere_notify')).join('\n'));
      assert.ok(scraped.includes('ampere_notify_queued 0'));
      const cfg = await ampere(['config', '--json'], env);
      assert.ok(!cfg.stdout.includes(SECRET));
      assert.match(cfg.stdout, /"http:\/\/127\.0\.0\.1:\d+\/\[redacted\]"/);
    } finally {
      await d.stop();
    }
    const all = d.lines.map((l) => JSON.stringify(l)).join('\n') + d.stderr;
    assert.ok(d.lines.some((l) => l.msg === 'notifications on'));
    assert.ok(!all.includes(SECRET), 'the secret appears in the daemon log');
  });
});
