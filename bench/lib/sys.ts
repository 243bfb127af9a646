/**
 * Processes, namespaces and temporary files of the benchmark, with one cleanup that always
 * runs: at normal exit, on an error, on Ctrl-C (SIGINT) and on SIGTERM. Namespaces are named
 * `ampb-<pid>-<n>`; ones left by an earlier run that was killed (-9) are removed at start.
 * Every firewall command of the benchmark runs inside these namespaces, never in the host's.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PREFIX = `ampb-${process.pid}-`;
let counter = 0;
const namespaces = new Set<string>();
const children = new Set<ChildProcess>();
const tmpdirs = new Set<string>();

export interface ExecResult { code: number; stdout: string; stderr: string }

/** Run a command (argument array, never a shell); never rejects, the caller reads `code`. */
export function sh(cmd: string, args: string[], input?: string, timeoutMs = 600_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { maxBuffer: 1 << 30, timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 255) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr || (err && !stderr ? err.message : '')) });
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

export async function must(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await sh(cmd, args, input);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ').slice(0, 200)} -> ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

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
  const d = mkdtempSync(join(tmpdir(), `ampere-bench-${tag}-`));
  tmpdirs.add(d);
  return d;
}

export function removeTempDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
  tmpdirs.delete(d);
}

export class Ns {
  private constructor(readonly name: string) {}

  static async create(): Promise<Ns> {
    const name = `${PREFIX}${++counter}`;
    namespaces.add(name); // before creating: a Ctrl-C in between still removes it
    await must('ip', ['netns', 'add', name]);
    const ns = new Ns(name);
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
        await new Promise((r) => { c.once('exit', r); setTimeout(r, 2000); });
      }
    }
    await sh('ip', ['netns', 'del', this.name]);
    namespaces.delete(this.name);
  }
}

/**
 * The lab: "pbx" (the daemon, its AMI server, Asterisk's SIP port) and "atk" (attackers),
 * joined by a veth pair. Addresses only from 10.233.0.0/16 and fd33::/64.
 *   pbx 10.233.0.1/16, fd33::1/64; atk 10.233.0.2, fd33::2, plus attacker addresses 10.233.1.1, ...
 * Spoofed probe sources come from 10.233.128.0/17 and fd33::8000:0:0/96 (on-link, no replies needed).
 */
export interface Lab {
  pbx: Ns;
  atk: Ns;
  pbx4: string;
  pbx6: string;
  attackers4: string[];
  destroy(): Promise<void>;
}

export async function createLab(attackers = 0): Promise<Lab> {
  const pbx = await Ns.create();
  let atk: Ns | undefined;
  try {
    atk = await Ns.create();
    const id = `${process.pid % 100000}x${counter}`;
    const [h, a] = [`bp${id}`, `ba${id}`].map((n) => n.slice(0, 15));
    await must('ip', ['link', 'add', h, 'netns', pbx.name, 'type', 'veth', 'peer', 'name', a, 'netns', atk.name]);
    const script = (lines: string[]) => lines.join('\n') + '\n';
    await pbx.must('ip', ['-batch', '-'], script([
      `addr add 10.233.0.1/16 dev ${h}`, `addr add fd33::1/64 dev ${h} nodad`, `link set ${h} up`,
    ]));
    const extra = Array.from({ length: attackers }, (_, i) => `10.233.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`);
    await atk.must('ip', ['-batch', '-'], script([
      `addr add 10.233.0.2/16 dev ${a}`, `addr add fd33::2/64 dev ${a} nodad`, `link set ${a} up`,
      ...extra.map((x) => `addr add ${x}/16 dev ${a}`),
    ]));
    // Spoofed sources: no reverse-path check in the pbx (they are routed back over the veth anyway).
    for (const k of ['all', 'default', h]) await pbx.must('sysctl', ['-qw', `net.ipv4.conf.${k}.rp_filter=0`]);
    const lab: Lab = {
      pbx, atk, pbx4: '10.233.0.1', pbx6: 'fd33::1', attackers4: extra,
      destroy: async () => { await atk!.destroy(); await pbx.destroy(); },
    };
    return lab;
  } catch (err) {
    await atk?.destroy();
    await pbx.destroy();
    throw err;
  }
}

/** Spoofed source number i (0-based): IPv4 from 10.233.128.0/17, every 10th IPv6 from fd33::8000:0:0/96. */
export function spoofed(i: number, v6Every = 10): string {
  if (v6Every > 0 && i % v6Every === v6Every - 1) return `fd33::8000:${((i >> 16) & 0xffff).toString(16)}:${(i & 0xffff).toString(16)}`;
  const k = i % (128 * 254);
  return `10.233.${128 + Math.floor(k / 254)}.${1 + (k % 254)}`;
}

function cleanupSync(): void {
  for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
  children.clear();
  for (const n of namespaces) { try { execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' }); } catch { /* gone */ } }
  namespaces.clear();
  for (const d of tmpdirs) { try { rmSync(d, { recursive: true, force: true }); } catch { /* gone */ } }
  tmpdirs.clear();
}

let installed = false;

/** Cleanup on every way out; and namespaces of dead earlier runs removed now. */
export function installCleanup(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, cleaning up (${namespaces.size} namespaces, ${children.size} processes)\n`);
      cleanupSync();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (err) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
    cleanupSync();
    process.exit(1);
  });
  try {
    const list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const line of list.split('\n')) {
      const m = /^(ampb-(\d+)-\S+)/.exec(line);
      if (!m || Number(m[2]) === process.pid) continue;
      try { process.kill(Number(m[2]), 0); continue; } catch { /* its run is dead */ }
      try { execFileSync('ip', ['netns', 'del', m[1]], { stdio: 'ignore' }); } catch { /* raced */ }
    }
  } catch { /* no ip netns: the firewall benchmarks will say so */ }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** CLOCK_MONOTONIC in ns, the clock netprobe stamps with. */
export const monoNs = () => process.hrtime.bigint();
