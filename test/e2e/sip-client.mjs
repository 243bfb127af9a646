#!/usr/bin/env node
// A small SIP client for the end-to-end test: digest REGISTER and OPTIONS
// over UDP or TCP, IPv4 or IPv6. Node's standard library only, so it starts
// fast inside `ip netns exec`. sipvicious covers UDP/IPv4; this covers what
// it lacks (TCP, IPv6) and plays the legitimate phone.
//
//   node sip-client.mjs register --server 10.232.0.1 --user 100 \
//        --password secret [--password wrong2 ...] [--transport udp|tcp] \
//        [--port 5060] [--timeout 1500] [--interval 0] [--repeat 1]
//   node sip-client.mjs options --server fd32::1 [--transport tcp]
//
// Every --password is one REGISTER attempt (a fresh request, the 401
// challenge, then the authenticated request), in order; --repeat N runs the
// whole list N times, --interval ms waits between attempts. One JSON line per
// attempt on stdout: {"attempt":1,"password":"...","status":200|401|403|"timeout"|"error",...}.
// The exit code is 0 when the last attempt got a final response, 3 when it
// timed out, 1 on usage errors.
import dgram from 'node:dgram';
import net from 'node:net';
import crypto from 'node:crypto';

function parseArgs(argv) {
  const [command, ...rest] = argv;
  const opts = { command, passwords: [], transport: 'udp', port: 5060, timeout: 1500, interval: 0, repeat: 1 };
  for (let i = 0; i < rest.length; i++) {
    const key = rest[i];
    const value = rest[i + 1];
    if (!key.startsWith('--') || value === undefined) throw new Error(`bad argument ${key}`);
    i++;
    switch (key) {
      case '--server': opts.server = value; break;
      case '--user': opts.user = value; break;
      case '--password': opts.passwords.push(value); break;
      case '--transport': opts.transport = value.toLowerCase(); break;
      case '--port': opts.port = Number(value); break;
      case '--timeout': opts.timeout = Number(value); break;
      case '--interval': opts.interval = Number(value); break;
      case '--repeat': opts.repeat = Number(value); break;
      default: throw new Error(`unknown option ${key}`);
    }
  }
  if (!opts.server) throw new Error('--server is required');
  if (!['udp', 'tcp'].includes(opts.transport)) throw new Error('--transport must be udp or tcp');
  if (command === 'register' && (!opts.user || opts.passwords.length === 0)) {
    throw new Error('register needs --user and at least one --password');
  }
  if (!['register', 'options'].includes(command)) throw new Error(`unknown command ${command}`);
  return opts;
}

const md5 = (s) => crypto.createHash('md5').update(s).digest('hex');
const rand = (n = 8) => crypto.randomBytes(n).toString('hex');
const hostPart = (ip) => (net.isIPv6(ip) ? `[${ip}]` : ip);

/** Splits a byte stream into SIP messages (headers + Content-Length body). */
class MessageReader {
  constructor() { this.buf = Buffer.alloc(0); }
  push(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    const out = [];
    for (;;) {
      // skip keep-alive CRLFs between messages
      while (this.buf.length >= 2 && this.buf[0] === 13 && this.buf[1] === 10) this.buf = this.buf.subarray(2);
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) break;
      const head = this.buf.subarray(0, end).toString('latin1');
      const m = /^content-length\s*:\s*(\d+)/im.exec(head) ?? /^l\s*:\s*(\d+)/im.exec(head);
      const len = m ? Number(m[1]) : 0;
      if (this.buf.length < end + 4 + len) break;
      out.push(head);
      this.buf = this.buf.subarray(end + 4 + len);
    }
    return out;
  }
}

function parseResponse(head) {
  const lines = head.split('\r\n');
  const m = /^SIP\/2\.0 (\d{3})/.exec(lines[0]);
  if (!m) return null;
  const headers = [];
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers.push([line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()]);
  }
  const get = (name) => headers.filter(([k]) => k === name).map(([, v]) => v);
  return { status: Number(m[1]), get, cseq: (get('cseq')[0] ?? '').split(/\s+/)[0] };
}

function parseChallenge(values) {
  // Asterisk may offer several algorithms; pick MD5 (or no algorithm = MD5).
  for (const v of values) {
    if (!/^digest\s/i.test(v)) continue;
    const params = {};
    for (const m of v.slice(7).matchAll(/(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]+))/g)) params[m[1].toLowerCase()] = m[2] ?? m[3];
    if (!params.algorithm || /^md5$/i.test(params.algorithm)) return params;
  }
  return null;
}

/** One transport connection to the server; send(text) and next(timeout) for replies. */
async function openTransport(opts) {
  const family = net.isIPv6(opts.server) ? 6 : 4;
  const reader = new MessageReader();
  const queue = [];
  let waiter = null;
  const deliver = (head) => {
    if (waiter) { const w = waiter; waiter = null; w(head); } else queue.push(head);
  };
  let send;
  let close;
  let local;
  if (opts.transport === 'udp') {
    const sock = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    await new Promise((resolve, reject) => { sock.once('error', reject); sock.connect(opts.port, opts.server, resolve); });
    sock.on('message', (msg) => {
      const end = msg.indexOf('\r\n\r\n');
      deliver(msg.subarray(0, end < 0 ? msg.length : end).toString('latin1'));
    });
    sock.on('error', () => {});
    local = { address: sock.address().address, port: sock.address().port };
    send = (text) => new Promise((resolve) => sock.send(text, () => resolve()));
    close = () => sock.close();
  } else {
    const sock = net.connect({ host: opts.server, port: opts.port });
    const connected = await new Promise((resolve) => {
      const timer = setTimeout(() => { sock.destroy(); resolve(false); }, opts.timeout);
      sock.once('connect', () => { clearTimeout(timer); resolve(true); });
      sock.once('error', () => { clearTimeout(timer); resolve(false); });
    });
    if (!connected) return null;
    sock.on('data', (chunk) => { for (const h of reader.push(chunk)) deliver(h); });
    sock.on('error', () => {});
    local = { address: sock.localAddress, port: sock.localPort };
    send = (text) => new Promise((resolve) => sock.write(text, () => resolve()));
    close = () => sock.destroy();
  }
  const next = (timeout) => new Promise((resolve) => {
    if (queue.length) return resolve(queue.shift());
    const timer = setTimeout(() => { waiter = null; resolve(null); }, timeout);
    waiter = (h) => { clearTimeout(timer); resolve(h); };
  });
  return { send, next, close, local };
}

function buildRequest(method, opts, t, { callId, cseq, fromTag, auth }) {
  const server = hostPart(opts.server);
  const transport = opts.transport.toUpperCase();
  const user = opts.user ?? 'probe';
  const uri = `sip:${server}:${opts.port}`;
  const lines = [
    `${method} ${uri} SIP/2.0`,
    `Via: SIP/2.0/${transport} ${hostPart(t.local.address)}:${t.local.port};branch=z9hG4bK${rand()};rport`,
    'Max-Forwards: 70',
    `From: <sip:${user}@${server}>;tag=${fromTag}`,
    `To: <sip:${user}@${server}>`,
    `Call-ID: ${callId}`,
    `CSeq: ${cseq} ${method}`,
    `Contact: <sip:${user}@${hostPart(t.local.address)}:${t.local.port};transport=${opts.transport}>`,
    'User-Agent: ampere-e2e-sip-client',
  ];
  if (method === 'REGISTER') lines.push('Expires: 60');
  if (auth) lines.push(auth);
  lines.push('Content-Length: 0', '', '');
  return { text: lines.join('\r\n'), uri };
}

async function request(t, opts, method, ctx, cseqWanted) {
  const { text, uri } = buildRequest(method, opts, t, ctx);
  await t.send(text);
  const deadline = Date.now() + opts.timeout;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) return { status: 'timeout', uri };
    const head = await t.next(left);
    if (head === null) return { status: 'timeout', uri };
    const res = parseResponse(head);
    if (!res || res.status < 200) continue; // provisional or not a response
    if (!head.includes(`${cseqWanted} ${method}`)) continue; // stale retransmission
    return { ...res, uri };
  }
}

async function registerAttempt(opts, password) {
  const started = Date.now();
  const t = await openTransport(opts);
  if (!t) return { status: 'timeout', stage: 'connect', ms: Date.now() - started };
  try {
    const ctx = { callId: `${rand(12)}@ampere-e2e`, cseq: 1, fromTag: rand(4) };
    const first = await request(t, opts, 'REGISTER', ctx, 1);
    if (first.status !== 401 && first.status !== 407) {
      return { status: first.status, stage: 'initial', ms: Date.now() - started };
    }
    const challenge = parseChallenge(first.get(first.status === 401 ? 'www-authenticate' : 'proxy-authenticate'));
    if (!challenge) return { status: 'error', stage: 'challenge', ms: Date.now() - started };
    const ha1 = md5(`${opts.user}:${challenge.realm}:${password}`);
    const ha2 = md5(`REGISTER:${first.uri}`);
    let auth;
    if (challenge.qop && /\bauth\b/.test(challenge.qop)) {
      const cnonce = rand(8);
      const nc = '00000001';
      const response = md5(`${ha1}:${challenge.nonce}:${nc}:${cnonce}:auth:${ha2}`);
      auth = `Digest username="${opts.user}", realm="${challenge.realm}", nonce="${challenge.nonce}", uri="${first.uri}", response="${response}", algorithm=MD5, cnonce="${cnonce}", nc=${nc}, qop=auth`;
    } else {
      const response = md5(`${ha1}:${challenge.nonce}:${ha2}`);
      auth = `Digest username="${opts.user}", realm="${challenge.realm}", nonce="${challenge.nonce}", uri="${first.uri}", response="${response}", algorithm=MD5`;
    }
    if (challenge.opaque !== undefined) auth += `, opaque="${challenge.opaque}"`;
    const hdr = `${first.status === 401 ? 'Authorization' : 'Proxy-Authorization'}: ${auth}`;
    const second = await request(t, opts, 'REGISTER', { ...ctx, cseq: 2, auth: hdr }, 2);
    return { status: second.status, stage: 'auth', ms: Date.now() - started };
  } finally {
    t.close();
  }
}

async function optionsProbe(opts) {
  const started = Date.now();
  const t = await openTransport(opts);
  if (!t) return { status: 'timeout', stage: 'connect', ms: Date.now() - started };
  try {
    const res = await request(t, opts, 'OPTIONS', { callId: `${rand(12)}@ampere-e2e`, cseq: 1, fromTag: rand(4) }, 1);
    return { status: res.status, stage: 'options', ms: Date.now() - started };
  } finally {
    t.close();
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`sip-client: ${err.message}\n`);
    process.exit(1);
  }
  let last;
  if (opts.command === 'options') {
    last = await optionsProbe(opts);
    process.stdout.write(`${JSON.stringify({ attempt: 1, ...last })}\n`);
  } else {
    let n = 0;
    for (let r = 0; r < opts.repeat; r++) {
      for (const password of opts.passwords) {
        if (n > 0 && opts.interval > 0) await sleep(opts.interval);
        n++;
        last = await registerAttempt(opts, password);
        process.stdout.write(`${JSON.stringify({ attempt: n, password, ...last })}\n`);
      }
    }
  }
  process.exit(last.status === 'timeout' ? 3 : 0);
}

main().catch((err) => {
  process.stderr.write(`sip-client: ${err.stack ?? err}\n`);
  process.exit(1);
});
