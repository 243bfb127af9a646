/**
 * Network namespaces for firewall tests. Every iptables/ipset/conntrack call a test makes goes
 * into a namespace made here, never into the host's own firewall. Names are `ampt-<pid>-<n>`,
 * and teardown always deletes them (which also drops their rules, sets and veth ends:
 * iptables, ipset and conntrack state are all per network namespace).
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';

let counter = 0;

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command (argument array, no shell); never rejects, the caller reads `code`. */
export function sh(cmd: string, args: string[], input?: string): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { maxBuffer: 256 * 1024 * 1024, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 255) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr || (err && !stderr ? err.message : '')) });
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

export class Netns {
  private readonly children = new Set<ChildProcess>();
  private deleted = false;

  private constructor(readonly name: string) {}

  static async create(): Promise<Netns> {
    const name = `ampt-${process.pid}-${++counter}`;
    const r = await sh('ip', ['netns', 'add', name]);
    if (r.code !== 0) throw new Error(`ip netns add ${name}: ${r.stderr}`);
    const ns = new Netns(name);
    await ns.must('ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** Run inside the namespace; never rejects. */
  exec(cmd: string, args: string[], input?: string): Promise<ExecResult> {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args], input);
  }

  /** Run inside the namespace; rejects with stderr on a non-zero exit. */
  async must(cmd: string, args: string[], input?: string): Promise<string> {
    const r = await this.exec(cmd, args, input);
    if (r.code !== 0) throw new Error(`[${this.name}] ${cmd} ${args.join(' ')} -> ${r.code}: ${r.stderr}`);
    return r.stdout;
  }

  /** A long-running process inside the namespace; killed (by its own pid) at destroy(). */
  spawn(cmd: string, args: string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  async destroy(): Promise<void> {
    if (this.deleted) return;
    this.deleted = true;
    for (const c of this.children) c.kill('SIGKILL');
    await sh('ip', ['netns', 'del', this.name]);
  }
}

/** Run fn in a fresh namespace that is deleted afterwards, whatever happens. */
export async function withNetns<T>(fn: (ns: Netns) => Promise<T>): Promise<T> {
  const ns = await Netns.create();
  try {
    return await fn(ns);
  } finally {
    await ns.destroy();
  }
}

/** A second namespace ("attacker") joined to the host namespace by a veth pair. */
export interface Attacker {
  ns: Netns;
  x: number;
  hostV4: string; // 10.231.X.1
  hostV6: string; // fd31:X::1
  /** Two source addresses per family: [0] to ban, [1] to stay allowed. */
  v4: [string, string]; // 10.231.X.2, 10.231.X.3
  v6: [string, string]; // fd31:X::2, fd31:X::3
}

export async function addAttacker(host: Netns): Promise<Attacker> {
  const ns = await Netns.create();
  const x = (counter % 250) + 1;
  const id = `${process.pid % 100000}x${counter}`;
  const [h, a] = [`vh${id}`, `va${id}`].map((n) => n.slice(0, 15));
  try {
    // Created directly inside both namespaces: nothing appears in the host's own namespace.
    const r = await sh('ip', ['link', 'add', h, 'netns', host.name, 'type', 'veth', 'peer', 'name', a, 'netns', ns.name]);
    if (r.code !== 0) throw new Error(`veth: ${r.stderr}`);
    const v6 = x.toString(16);
    await host.must('ip', ['addr', 'add', `10.231.${x}.1/24`, 'dev', h]);
    await host.must('ip', ['addr', 'add', `fd31:${v6}::1/64`, 'dev', h, 'nodad']);
    await host.must('ip', ['link', 'set', h, 'up']);
    for (const last of [2, 3]) {
      await ns.must('ip', ['addr', 'add', `10.231.${x}.${last}/24`, 'dev', a]);
      await ns.must('ip', ['addr', 'add', `fd31:${v6}::${last}/64`, 'dev', a, 'nodad']);
    }
    await ns.must('ip', ['link', 'set', a, 'up']);
    return {
      ns,
      x,
      hostV4: `10.231.${x}.1`,
      hostV6: `fd31:${v6}::1`,
      v4: [`10.231.${x}.2`, `10.231.${x}.3`],
      v6: [`fd31:${v6}::2`, `fd31:${v6}::3`],
    };
  } catch (err) {
    await ns.destroy();
    throw err;
  }
}

const SINK = `
const dgram = require('node:dgram');
const port = Number(process.argv[1]);
let ready = 0;
for (const type of ['udp4', 'udp6']) {
  // Separate v4 and v6 sockets (ipv6Only is only valid, and only needed, on the v6 one).
  const s = dgram.createSocket(type === 'udp6' ? { type, ipv6Only: true } : { type });
  s.on('error', (e) => { process.stderr.write(String(e) + '\\n'); process.exit(1); });
  s.on('message', (m, r) => process.stdout.write(r.address + ' ' + m + '\\n'));
  s.bind(port, type === 'udp4' ? '0.0.0.0' : '::', () => { if (++ready === 2) process.stdout.write('ready\\n'); });
}`;

const SEND = `
const dgram = require('node:dgram');
const [from, to, port, token] = process.argv.slice(1);
const s = dgram.createSocket(to.includes(':') ? 'udp6' : 'udp4');
s.bind({ address: from }, () => s.send(token, Number(port), to, (e) => { if (e) console.error(e.message); s.close(); }));`;

/** A UDP listener (v4 and v6) in a namespace that remembers which datagrams arrived. */
export class UdpSink {
  private seen = '';
  private listeners: (() => void)[] = [];
  private tokens = 0;

  private constructor(
    readonly ns: Netns,
    readonly port: number,
  ) {}

  static async start(ns: Netns, port = 5060): Promise<UdpSink> {
    const sink = new UdpSink(ns, port);
    const child = ns.spawn(process.execPath, ['-e', SINK, String(port)]);
    child.stdout!.on('data', (d: Buffer) => {
      sink.seen += d.toString();
      for (const l of sink.listeners.splice(0)) l();
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    if (!(await sink.waitFor('ready', 5000))) throw new Error(`udp sink did not start in ${ns.name}: ${stderr}`);
    return sink;
  }

  private waitFor(text: string, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.seen.includes(text)) return finish(true);
        this.listeners.push(check);
      };
      const timer = setTimeout(() => finish(false), ms);
      const finish = (v: boolean) => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== check);
        resolve(v);
      };
      check();
    });
  }

  /** Send one datagram from `from` (an attacker address) to `to`; true if it arrived. */
  async reaches(attacker: Netns, from: string, to: string, waitMs = 500): Promise<boolean> {
    const token = `tok-${process.pid}-${++this.tokens}`;
    const r = await attacker.exec(process.execPath, ['-e', SEND, from, to, String(this.port), token]);
    if (r.code !== 0) throw new Error(`udp send from ${from}: ${r.stderr}`);
    return this.waitFor(`${from} ${token}\n`, waitMs);
  }
}

/**
 * Reason to skip namespace tests (not root, or `ip netns` unusable), or undefined when they
 * can run. Synchronous so it can feed `describe(..., { skip })`.
 */
export function skipUnlessRoot(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  const name = `ampt-${process.pid}-probe`;
  try {
    execFileSync('ip', ['netns', 'add', name], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', name], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return `ip netns unusable here: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
}

/** Delete namespaces left by earlier test runs that died (their pid no longer exists). */
export async function removeStaleNamespaces(): Promise<string[]> {
  const r = await sh('ip', ['netns', 'list']);
  const removed: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^(ampt-(\d+)-\S+)/.exec(line);
    if (!m || Number(m[2]) === process.pid || pidAlive(Number(m[2]))) continue;
    await sh('ip', ['netns', 'del', m[1]]);
    removed.push(m[1]);
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
