import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Logger } from '../log';
import { chainNameProblem } from './names';
import { canonicalIp, isCanonicalIp, notSingleHost, type Family } from '../net/ip';
import { parseRange } from '../net/range';

export interface RunOptions {
  /**
   * Written to the command's stdin (ipset restore, iptables-restore). Chunks from an iterable
   * are written as they are produced, so a big load is parsed by the command while the rest
   * is still being built.
   */
  input?: string | Iterable<string | Buffer>;
  /** Run inside `ip netns exec <netns>`. */
  netns?: string;
  timeoutMs?: number;
  /** Exit codes that are not failures (the caller reads stdout/stderr itself). */
  okCodes?: number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** A failed command: message carries the command line and its stderr. */
export class CommandError extends Error {
  constructor(
    readonly cmd: string,
    readonly code: number | string | null,
    readonly stderr: string,
  ) {
    super(`${cmd} failed (${code ?? 'killed'}): ${stderr.trim() || '(no stderr)'}`);
    this.name = 'CommandError';
  }
}

/** How many processes run() started: the metric ampere_firewall_processes_total, and tests that check batching. */
export const execStats = { runs: 0 };

const DEFAULT_TIMEOUT_MS = 60_000;
// `ipset save` of a million-entry set is tens of MB of text.
const MAX_BUFFER = 512 * 1024 * 1024;

/** The program and arguments that run `file args` inside network namespace netns (none: as given). */
export function inNetns(netns: string | undefined, file: string, args: readonly string[]): [string, string[]] {
  return netns ? ['ip', ['netns', 'exec', netns, file, ...args]] : [file, [...args]];
}

/** Run one command with an argument array: never through a shell. */
export function run(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const [bin, argv] = inNetns(opts.netns, file, args);
  const cmd = [bin, ...argv].join(' ');
  execStats.runs++;
  return new Promise((resolve, reject) => {
    let inputError: unknown = null;
    const child = execFile(
      bin,
      argv,
      { timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, maxBuffer: MAX_BUFFER, encoding: 'utf8' },
      (err, stdout, stderr) => {
        // Input that could not be built must never pass for a complete one (a cut restore).
        if (inputError !== null) return reject(new CommandError(cmd, 'input', `input not written: ${String(inputError)}`));
        if (!err) return resolve({ stdout, stderr, code: 0 });
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean };
        if (e.code === 'ENOENT') return reject(new CommandError(cmd, 'ENOENT', `${bin}: command not found`));
        if (typeof e.code === 'number' && opts.okCodes?.includes(e.code)) {
          return resolve({ stdout, stderr, code: e.code });
        }
        reject(new CommandError(cmd, e.killed ? 'timeout' : (e.code ?? null), String(stderr || e.message)));
      },
    );
    // A child that dies before reading its input gives EPIPE here; the exit callback reports it.
    child.stdin?.on('error', () => {});
    const input = opts.input ?? '';
    if (typeof input === 'string') child.stdin?.end(input);
    else feed(child.stdin!, input).catch((e: unknown) => { inputError = e; child.kill('SIGKILL'); });
  });
}

/** Write chunks as they come, waiting for the pipe to drain, then end stdin. Rejects if a chunk cannot be built. */
async function feed(stdin: Stdin, chunks: Iterable<string | Buffer>): Promise<void> {
  if ((await writeChunks(stdin, chunks)) !== null) stdin.end();
}

type Stdin = NodeJS.WritableStream & { destroyed?: boolean };

/**
 * Write chunks as they come, waiting for the pipe to drain between them (a million lines are
 * never all buffered). Returns the last character written ('' for none), or null when the
 * pipe closed first. Rejects if a chunk cannot be built.
 */
export async function writeChunks(stdin: Stdin, chunks: Iterable<string | Buffer>): Promise<string | null> {
  let last = '';
  for (const chunk of chunks) {
    if (stdin.destroyed) return null;
    if (chunk.length === 0) continue;
    last = typeof chunk === 'string' ? chunk.slice(-1) : String.fromCharCode(chunk[chunk.length - 1]);
    if (!stdin.write(chunk)) {
      await new Promise<void>((r) => {
        const done = () => { stdin.off('drain', done); stdin.off('close', done); r(); };
        stdin.on('drain', done);
        stdin.on('close', done);
      });
    }
  }
  return stdin.destroyed ? null : last;
}

/**
 * Defence in depth: the store and the event parser canonicalise already, but nothing
 * reaches a command line or a restore line unless it is exactly a canonical address
 * of the stated family. Anything else throws before any process starts.
 */
export function checkedIp(address: string, family?: Family): string {
  // Fast path for the common case, nothing allocated: isCanonicalIp answers exactly as the
  // comparison below.
  let f: Family | null = null;
  if (family !== 6 && isCanonicalIp(address, 4)) f = 4;
  else if (family !== 4 && isCanonicalIp(address, 6)) f = 6;
  else {
    const c = canonicalIp(address);
    if (!c || c.address !== address || (family !== undefined && c.family !== family)) {
      throw new Error(`refusing non-canonical address ${JSON.stringify(address)}${family ? ` (family ${family})` : ''}`);
    }
    f = c.family;
  }
  // No ban of what cannot be one host: ipset refuses 0.0.0.0 and ::, failing the whole batch.
  const why = notSingleHost(address, f);
  if (why) throw new Error(`refusing ${address}: not a single host, ${why}`);
  return address;
}

/**
 * A ban's address as it may reach the kernel: one host (checkedIp), or a range (an address
 * with a `/`) exactly as parseRange writes it, of the stated family. Anything else throws.
 */
export function checkedTarget(address: string, family: Family): string {
  if (!address.includes('/')) return checkedIp(address, family);
  const r = parseRange(address);
  if (!r.ok || r.range !== address || r.family !== family) {
    throw new Error(`refusing non-canonical address ${JSON.stringify(address)} (family ${family}): not a range as Ampere writes one (${r.ok ? `${r.range}, IPv${r.family}` : r.reason})`);
  }
  return address;
}

/** A range ban (its address holds the prefix). */
export const isRange = (address: string): boolean => address.includes('/');

/** Check every ban of a batch before anything runs: one bad entry refuses the batch. */
export function checkBatch<T extends { address: string; family: Family }>(bans: T[]): T[] {
  for (const b of bans) checkedTarget(b.address, b.family);
  return bans;
}

/**
 * A full load's check of each ban: what may not reach the kernel (not canonical, not a single
 * host) is left out and logged, so one bad stored row cannot keep every other ban out.
 * The first few are logged one by one, then only counted (a hand-edited file may hold many).
 */
export class SkipLog {
  private count = 0;
  constructor(private readonly log: Pick<Logger, 'error'>, private readonly shown = 10) {}

  /** The address when it may be loaded, else null (logged). */
  check(b: { address: string; family: Family }): string | null {
    try {
      return checkedTarget(b.address, b.family);
    } catch (err) {
      if (this.count++ < this.shown) this.log.error({ address: String(b.address).slice(0, 80), err: (err as Error).message }, 'full load: stored ban left out, its address may not be banned');
      return null;
    }
  }

  done(): void {
    if (this.count > this.shown) this.log.error({ skipped: this.count }, 'full load: stored bans left out, their addresses may not be banned');
  }
}

/** Absolute path of a binary found in PATH, or null (also used to decide flavours). */
export function which(name: string, pathEnv = process.env.PATH ?? ''): string | null {
  if (name.includes('/')) return isExecutable(name) ? name : null;
  for (const dir of pathEnv.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    if (isExecutable(p)) return p;
  }
  return null;
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Throw a clear error naming the first missing binary. */
export function requireBinaries(names: string[]): void {
  for (const n of names) {
    if (!which(n)) throw new Error(`${n} not found in PATH: install it (package ${packageOf(n)})`);
  }
}

function packageOf(bin: string): string {
  if (bin.startsWith('ipset')) return 'ipset';
  if (bin.startsWith('conntrack')) return 'conntrack';
  if (bin === 'ip') return 'iproute2';
  return 'iptables';
}

/** A chain name the backends (and iptables and ipset) take: the rule is chainNameProblem's. */
export function checkChainName(chain: string): string {
  const why = chainNameProblem(chain);
  if (why) throw new Error(`invalid chain name ${JSON.stringify(chain)}: ${why}`);
  return chain;
}
