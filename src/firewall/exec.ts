import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { canonicalIp, isCanonicalIp, type Family } from '../net/ip';

export interface RunOptions {
  /**
   * Written to the command's stdin (ipset restore, iptables-restore). Chunks from an iterable
   * are written as they are produced, so a big load is parsed by the command while the rest
   * is still being built.
   */
  input?: string | Iterable<string>;
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

/** How many processes run() started; tests read it to check batching. */
export const execStats = { runs: 0 };

const DEFAULT_TIMEOUT_MS = 60_000;
// `ipset save` of a million-entry set is ~40 MB of text.
const MAX_BUFFER = 512 * 1024 * 1024;

/** Run one command with an argument array: never through a shell. */
export function run(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const [bin, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, file, ...args]] : [file, args];
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
async function feed(stdin: NodeJS.WritableStream & { destroyed?: boolean }, chunks: Iterable<string>): Promise<void> {
  for (const chunk of chunks) {
    if (stdin.destroyed) return;
    if (!stdin.write(chunk)) {
      await new Promise<void>((r) => {
        const done = () => { stdin.off('drain', done); stdin.off('close', done); r(); };
        stdin.on('drain', done);
        stdin.on('close', done);
      });
    }
  }
  stdin.end();
}

/**
 * Defence in depth: the store and the event parser canonicalise already, but nothing
 * reaches a command line or a restore line unless it is exactly a canonical address
 * of the stated family. Anything else throws before any process starts.
 */
export function checkedIp(address: string, family?: Family): string {
  // Fast path for the common case, nothing allocated: isCanonicalIp answers exactly as the
  // comparison below.
  if (family !== 6 && isCanonicalIp(address, 4)) return address;
  if (family !== 4 && isCanonicalIp(address, 6)) return address;
  const c = canonicalIp(address);
  if (!c || c.address !== address || (family !== undefined && c.family !== family)) {
    throw new Error(`refusing non-canonical address ${JSON.stringify(address)}${family ? ` (family ${family})` : ''}`);
  }
  return c.address;
}

/** Check every ban of a batch before anything runs: one bad entry refuses the batch. */
export function checkBatch<T extends { address: string; family: Family }>(bans: T[]): T[] {
  for (const b of bans) checkedIp(b.address, b.family);
  return bans;
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

/** iptables chain names: at most 28 characters; not a built-in chain or a target. */
export function checkChainName(chain: string): string {
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,27}$/.test(chain)) {
    throw new Error(`invalid chain name ${JSON.stringify(chain)}: 1-28 characters, letters, digits, '_' or '-', starting with a letter`);
  }
  const reserved = ['INPUT', 'OUTPUT', 'FORWARD', 'PREROUTING', 'POSTROUTING', 'ACCEPT', 'DROP', 'REJECT', 'RETURN', 'LOG'];
  if (reserved.includes(chain.toUpperCase())) throw new Error(`invalid chain name ${chain}: reserved by iptables`);
  return chain;
}
