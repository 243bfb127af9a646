/**
 * Network namespaces for tests and the benchmark. Every iptables/ipset/conntrack command of the
 * lab runs inside a namespace made here, never in the host's own firewall. A namespace is
 * registered before it is created and deleted at exit, on SIGINT/SIGTERM/SIGHUP and by
 * destroy(), with the processes spawned into it; names are `ampl-<pid>-<n>`, and ones left by
 * a run that was killed (-9) are removed when the next run makes its first namespace.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { must, sh, type ExecResult } from './sh';

export { must, sh, type ExecResult } from './sh';

export const NS_PREFIX = 'ampl-';
const PREFIX = `${NS_PREFIX}${process.pid}-`;
let counter = 0;
const namespaces = new Set<string>();
const children = new Set<ChildProcess>();
const tmpdirs = new Set<string>();

/** A child process that is killed (by its own pid) at cleanup if still running. */
export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  return track(spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts }));
}

export function tempDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `ampere-lab-${tag}-`));
  tmpdirs.add(d);
  return d;
}

export function removeTempDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
  tmpdirs.delete(d);
}

export class Netns {
  private constructor(readonly name: string) {}

  static async create(): Promise<Netns> {
    const name = `${PREFIX}${++counter}`;
    installCleanup();
    namespaces.add(name); // before creating: a Ctrl-C in between still removes it
    await must('ip', ['netns', 'add', name]);
    const ns = new Netns(name);
    await ns.must('ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  exec(cmd: string, args: string[], input?: string): Promise<ExecResult> {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args], input);
  }

  async must(cmd: string, args: string[], input?: string): Promise<string> {
    const r = await this.exec(cmd, args, input);
    if (r.code !== 0) throw new Error(`[${this.name}] ${cmd} ${args.join(' ').slice(0, 200)} -> ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** A long-running process inside the namespace (`ip netns exec` execs it: same pid). */
  spawn(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return spawnTracked('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  async destroy(): Promise<void> {
    if (!namespaces.has(this.name)) return;
    // Processes still inside keep a namespace alive: end ours first.
    for (const c of [...children]) {
      const args = c.spawnargs;
      if (args[0] === 'ip' && args[3] === this.name && c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL');
        await new Promise<void>((r) => { const t = setTimeout(r, 2000); c.once('exit', () => { clearTimeout(t); r(); }); });
      }
    }
    // Whatever else is inside (a child's own children: a chroot's daemon, a forked scanner).
    await killInside(this.name);
    await sh('ip', ['netns', 'del', this.name]);
    namespaces.delete(this.name);
  }
}

/** Every process still inside a namespace: SIGKILL, then waits up to 2 s for them to be gone. */
async function killInside(name: string): Promise<void> {
  const pids = async () => (await sh('ip', ['netns', 'pids', name])).stdout.split('\n').filter(Boolean).map(Number);
  const first = await pids();
  if (first.length === 0) return;
  for (const pid of first) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  const end = Date.now() + 2000;
  while ((await pids()).length && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
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

/** How long a datagram that should pass is waited for (see UdpSink.passes). */
const PASS_WAIT_MS = 5000;

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
  /**
   * Whether a datagram expected to pass arrives: waited for up to PASS_WAIT_MS, since one that
   * arrives ends the wait at once, and a loaded machine (CI runs two suites side by side) can
   * take longer than reaches()'s half second to deliver it.
   */
  passes(attacker: Netns, from: string, to: string): Promise<boolean> {
    return this.reaches(attacker, from, to, PASS_WAIT_MS);
  }

  /** Whether a datagram arrives within waitMs (a drop is told by its absence after that long). */
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
  const name = `${PREFIX}probe`;
  try {
    execFileSync('ip', ['netns', 'add', name], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', name], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return `ip netns unusable here: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
}

function cleanupSync(): void {
  for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
  children.clear();
  for (const n of namespaces) {
    try {
      for (const pid of execFileSync('ip', ['netns', 'pids', n], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
        try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
      }
      execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
    } catch { /* gone */ }
  }
  namespaces.clear();
  for (const d of tmpdirs) { try { rmSync(d, { recursive: true, force: true }); } catch { /* gone */ } }
  tmpdirs.clear();
}

let installed = false;

/**
 * Cleanup on every way out (exit, SIGINT, SIGTERM, SIGHUP), installed by the first namespace;
 * namespaces of earlier runs whose process is dead are removed then.
 */
export function installCleanup(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nlab: ${sig}, cleaning up (${namespaces.size} namespaces, ${children.size} processes)\n`);
      cleanupSync();
      process.exit(130);
    });
  }
  try {
    const list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const line of list.split('\n')) {
      const m = new RegExp(`^(${NS_PREFIX}(\\d+)-\\S+)`).exec(line);
      if (!m || Number(m[2]) === process.pid) continue;
      try { process.kill(Number(m[2]), 0); continue; } catch { /* its run is dead */ }
      try { execFileSync('ip', ['netns', 'del', m[1]], { stdio: 'ignore' }); } catch { /* raced */ }
    }
  } catch { /* no ip netns: skipUnlessRoot() says so */ }
}

