import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../log';
import type { Family } from '../net/ip';
import { SCRIPT } from './conntrack-script';
import { checkedIp, isRange, which, inNetns } from './exec';

/** Added to the daemon's niceness for the helper (and the conntrack runs it starts). */
export const HELPER_NICENESS = 10;

export interface ConntrackOptions {
  binary?: string;
  /** A batch may take this long, plus 100 ms per address, before the helper is killed. */
  timeoutMs?: number;
  /** Wait before restarting a helper that died without answering; doubles per such death, up to 30 s. */
  restartDelayMs?: number;
  /** Addresses per line (one `conntrack -R` run); more wait for the next line. */
  maxBatch?: number;
  /**
   * Least time from one line to the next: bans arriving sooner wait and go together. The first
   * ban after a quiet spell goes at once.
   */
  minIntervalMs?: number;
}

type Batch = { items: [string, Family][]; attempts: number };

/**
 * Deletes the conntrack entries of freshly banned sources. Without this, a UDP "flow" that
 * was established before the ban (a SIP scanner re-sending to 5060) can stay accepted by
 * an ESTABLISHED rule ahead of our chain.
 *
 * Starting a process from the daemon forks the whole daemon (the event loop blocks meanwhile),
 * so no process is started per ban: one long-lived helper shell (see SCRIPT) is
 * started on first use, in the backend's namespace, and each batch is one line on its stdin.
 * While a line is in flight, and for minIntervalMs after one was sent, further bans collect in
 * `pending` and go out together as the next line. Each line costs a `conntrack -R` run and each
 * address in it a walk of the kernel's whole conntrack hash table (conntrack deletes through a
 * filtered dump; docs/notes/measurements.md, conntrack), so under a
 * steady stream of bans the interval bounds the runs, not the walks. Failures are
 * logged, never thrown; a helper that dies is replaced on the next ban (after a delay if it
 * died without answering), and the batch it held is tried once more.
 */
export class ConntrackFlusher {
  private readonly pending = new Map<string, Family>();
  private disabled = false;
  private closed = false;
  private found: string | null | undefined; // conntrack's path, looked up once
  private nice: boolean | undefined; // nice(1) is there, looked up once
  private waiters: (() => void)[] = [];
  private proc: ChildProcess | null = null;
  private stdout = '';
  private stderr = '';
  private answered = false; // the current helper answered at least one line
  private inflight: (Batch & { timer: NodeJS.Timeout; t0: number }) | null = null;
  private retry: Batch | null = null;
  private failures = 0; // helpers in a row that died without answering
  private restartAt = 0;
  private lastSentAt = -Infinity; // performance.now() of the last line sent
  // Set while pump waits: for a dead helper's restart delay or for the interval between lines.
  private wakeTimer: NodeJS.Timeout | null = null;
  private readonly binary: string;
  private readonly timeoutMs: number;
  private readonly restartDelayMs: number;
  private readonly maxBatch: number;
  private readonly minIntervalMs: number;
  /** Addresses processed (deleted or found without entries); for tests and status. */
  done = 0;
  /** Addresses whose delete failed (logged). */
  failed = 0;
  /** Helper processes started. */
  starts = 0;
  /** Lines (batches) sent to the helper. */
  batches = 0;

  constructor(
    private readonly log: Logger,
    private readonly netns?: string,
    opts: ConntrackOptions = {},
  ) {
    this.binary = opts.binary ?? 'conntrack';
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.restartDelayMs = opts.restartDelayMs ?? 1_000;
    this.maxBatch = opts.maxBatch ?? 512;
    this.minIntervalMs = opts.minIntervalMs ?? 50;
  }

  /** Pid of the running helper, if one runs. */
  get pid(): number | null {
    return this.proc?.pid ?? null;
  }

  flush(bans: { address: string; family: Family }[]): void {
    if (this.disabled || this.closed) return;
    if (this.found === undefined) this.found = which(this.binary);
    if (!this.found) {
      this.disabled = true;
      this.log.warn({ binary: this.binary }, 'conntrack not found: established flows of banned hosts are not cut (install conntrack)');
      return;
    }
    for (const b of bans) {
      // A range's flows are not cut yet (docs/notes/ranges-plan.md, step 8).
      if (isRange(b.address)) continue;
      try {
        this.pending.set(checkedIp(b.address, b.family), b.family);
      } catch (err) {
        this.log.warn({ err, address: b.address }, 'conntrack: refused invalid address');
      }
    }
    this.pump();
  }

  /** Start the helper ahead of the first ban, so that ban does not pay the process start. */
  start(): void {
    if (this.disabled || this.closed) return;
    if (this.found === undefined) this.found = which(this.binary);
    if (this.found && !this.proc && Date.now() >= this.restartAt) this.spawnHelper();
  }

  /** Resolves when nothing is pending or running. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    // Someone waits for the restart: it must not be dropped because the loop looks empty.
    this.wakeTimer?.ref();
    return new Promise((r) => this.waiters.push(r));
  }

  /** Ends the helper; bans pending are dropped, flush() does nothing from now on. */
  close(): void {
    this.closed = true;
    this.pending.clear();
    this.retry = null;
    if (this.inflight) clearTimeout(this.inflight.timer);
    this.inflight = null;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    const p = this.proc;
    this.proc = null;
    if (p) {
      p.stdin?.end();
      p.kill();
    }
    this.settle();
  }

  private isIdle(): boolean {
    return !this.inflight && !this.retry && !this.pending.size;
  }

  private settle(): void {
    if (this.isIdle()) for (const w of this.waiters.splice(0)) w();
  }

  /** Send the next line if the helper is free and there is something to send. */
  private pump(): void {
    if (this.closed || this.inflight || this.wakeTimer) return;
    if (!this.retry && !this.pending.size) return this.settle();
    const wait = Math.max(this.proc ? 0 : this.restartAt - Date.now(), this.lastSentAt + this.minIntervalMs - performance.now());
    if (wait > 0) {
      this.wakeTimer = setTimeout(() => { this.wakeTimer = null; this.pump(); }, Math.ceil(wait));
      if (!this.waiters.length) this.wakeTimer.unref();
      return;
    }
    let batch: Batch;
    if (this.retry) {
      batch = this.retry;
      this.retry = null;
    } else {
      const items: [string, Family][] = [];
      for (const e of this.pending) {
        items.push(e);
        this.pending.delete(e[0]);
        if (items.length >= this.maxBatch) break;
      }
      batch = { items, attempts: 0 };
    }
    batch.attempts++;
    const p = this.proc ?? this.spawnHelper();
    const ms = this.timeoutMs + 100 * batch.items.length;
    // A referenced timer: a batch in flight keeps the process alive (the helper itself does not).
    const timer = setTimeout(() => {
      if (this.proc !== p || !this.inflight) return;
      this.log.warn({ pid: p.pid, addresses: batch.items.length, timeoutMs: ms }, 'conntrack helper did not answer in time: killing it');
      killGroup(p);
      // Holds the loop until its 'close' arrives (the helper is unref'd), and stands in for it.
      this.inflight.timer = setTimeout(() => this.died(p, 'no exit after SIGKILL'), 5_000);
    }, ms);
    this.lastSentAt = performance.now();
    this.inflight = { ...batch, timer, t0: this.lastSentAt };
    this.batches++;
    p.stdin!.write(batch.items.map((i) => i[0]).join(' ') + '\n');
  }

  private spawnHelper(): ChildProcess {
    // Niced: in a storm of bans its table walks can take a whole core, and Asterisk (and the
    // daemon, and the ipset shell that makes each ban real) come first; the cleanup waits.
    if (this.nice === undefined) this.nice = which('nice') !== null;
    const argv = [...(this.nice ? ['nice', '-n', String(HELPER_NICENESS)] : []), 'sh', '-c', SCRIPT, 'ampere-conntrack', this.found!];
    const [file, args] = inNetns(this.netns, argv[0], argv.slice(1));
    // Its own process group, so a hung batch is killed with the conntrack it waits for.
    const p = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    this.proc = p;
    this.starts++;
    this.stdout = '';
    this.stderr = '';
    this.answered = false;
    // The helper must not keep the daemon alive; it ends by itself at EOF on its stdin.
    p.unref();
    for (const s of [p.stdin, p.stdout, p.stderr] as unknown as { unref?: () => void }[]) s?.unref?.();
    p.stdin!.on('error', () => {}); // EPIPE when it died; 'close' reports that
    p.stdout!.setEncoding('utf8');
    p.stdout!.on('data', (d: string) => {
      if (this.proc !== p) return;
      this.stdout += d;
      let i: number;
      while ((i = this.stdout.indexOf('\n')) >= 0) {
        const line = this.stdout.slice(0, i);
        this.stdout = this.stdout.slice(i + 1);
        this.answer(line);
      }
    });
    p.stderr!.setEncoding('utf8');
    p.stderr!.on('data', (d: string) => { this.stderr = (this.stderr + d).slice(-2000); });
    p.on('error', (err) => this.died(p, err.message));
    p.on('close', (code, signal) => this.died(p, signal ? `signal ${signal}` : `exit code ${code}`));
    return p;
  }

  private answer(line: string): void {
    const b = this.inflight;
    if (!b) {
      this.log.warn({ line }, 'conntrack helper: unexpected output');
      return;
    }
    clearTimeout(b.timer);
    this.inflight = null;
    this.answered = true;
    this.failures = 0;
    const n = b.items.length;
    const ms = Math.round(performance.now() - b.t0);
    if (/^done \d+$/.test(line)) {
      this.done += n;
      this.log.debug({ addresses: n, ms }, 'conntrack entries of banned sources deleted');
    } else {
      this.failed += n;
      const m = /^fail (\d+) ?(.*)$/.exec(line);
      this.log.warn(
        { err: m ? m[2] : line, code: m ? Number(m[1]) : undefined, addresses: n, sample: b.items.slice(0, 5).map((i) => i[0]) },
        'conntrack delete failed',
      );
    }
    this.pump();
  }

  private died(p: ChildProcess, how: string): void {
    if (this.proc !== p) return; // closed, or already handled ('error' and 'close' both come)
    this.proc = null;
    p.kill('SIGKILL'); // after 'error' it may still run
    if (!this.answered) this.failures++;
    const delay = this.failures ? Math.min(30_000, this.restartDelayMs * 2 ** (this.failures - 1)) : 0;
    this.restartAt = Date.now() + delay;
    const b = this.inflight;
    this.inflight = null;
    if (b) clearTimeout(b.timer);
    const ctx = { pid: p.pid, how, stderr: this.stderr.trim() || undefined, restartInMs: delay };
    if (b && b.attempts < 2) {
      this.retry = { items: b.items, attempts: b.attempts };
      this.log.warn({ ...ctx, addresses: b.items.length }, 'conntrack helper died during a batch: restarting it, the batch is tried again');
    } else if (b) {
      this.failed += b.items.length;
      this.log.warn({ ...ctx, addresses: b.items.length, sample: b.items.slice(0, 5).map((i) => i[0]) }, 'conntrack helper died twice on a batch: its entries are not deleted');
    } else {
      this.log.warn(ctx, 'conntrack helper exited: a new one starts with the next ban');
    }
    this.pump();
  }
}

function killGroup(p: ChildProcess): void {
  try {
    if (p.pid) process.kill(-p.pid, 'SIGKILL');
  } catch {
    p.kill('SIGKILL');
  }
}
