import { spawn, type ChildProcess } from 'node:child_process';
import { CommandError, execStats, inNetns, writeChunks } from './exec';

/** How long one batch may take before the loader is killed (a million lines take about a second). */
const BATCH_TIMEOUT_MS = 300_000;
/** stderr kept from a loader that died, for the error. */
const STDERR_MAX = 16_384;

interface Waiter { resolve(answer: string): void; reject(err: Error): void }

/**
 * The native loader kept running (`ampere-ipset-load --serve`): each batch is its lines and a
 * line "commit", answered "ok" or "Error in line N: ..." (counted from the batch's first line),
 * so a batch fails as a run of its own would. One process for the daemon's life instead of one
 * per batch: every process the daemon starts costs it a page fault on each page it writes
 * afterwards, which at a million bans made a catch-up's writes to its banned set ~10 times
 * slower (docs/notes/measurements.md, Fleet catch-up). Batches go one at a time, in order.
 * A loader that dies or times out fails the batch in flight; the next batch starts a new one.
 */
export class LoaderServer {
  private proc: ChildProcess | null = null;
  private waiter: Waiter | null = null;
  private answers = '';
  private stderr = '';
  private queue: Promise<unknown> = Promise.resolve();
  private readonly argv: [string, string[]];
  private readonly cmd: string;

  constructor(file: string, netns: string | undefined) {
    this.argv = inNetns(netns, file, ['--serve']);
    this.cmd = this.argv.flat().join(' ');
  }

  /** One batch (lines ending in a newline or not); resolves when the kernel took it all. */
  run(input: string | Iterable<string | Buffer>): Promise<{ stdout: string; stderr: string }> {
    const batch = this.queue.then(() => this.batch(input));
    this.queue = batch.catch(() => {});
    return batch;
  }

  close(): void {
    const p = this.proc;
    this.proc = null;
    if (p) { p.stdin?.end(); p.kill('SIGKILL'); }
    this.failWaiter(new CommandError(this.cmd, 'closed', 'the loader was closed'));
  }

  private async batch(input: string | Iterable<string | Buffer>): Promise<{ stdout: string; stderr: string }> {
    const p = this.ensure();
    const answer = new Promise<string>((resolve, reject) => { this.waiter = { resolve, reject }; });
    answer.catch(() => {}); // it may fail while the input is still being written; awaited below
    // The timer also keeps the process alive while a batch is in flight (the loader does not).
    const timer = setTimeout(() => this.kill(p, new CommandError(this.cmd, 'timeout', `no answer within ${BATCH_TIMEOUT_MS} ms`)), BATCH_TIMEOUT_MS);
    try {
      try {
        await write(p, typeof input === 'string' ? [input] : input);
      } catch (err) {
        // Input that could not be built must never be committed as if complete: the loader goes.
        this.kill(p, new CommandError(this.cmd, 'input', `input not written: ${String(err)}`));
      }
      const a = await answer;
      if (a === 'ok') return { stdout: '', stderr: '' };
      throw new CommandError(this.cmd, 1, `ampere-ipset-load: ${a}`);
    } finally {
      clearTimeout(timer);
      this.waiter = null;
    }
  }

  private ensure(): ChildProcess {
    if (this.proc) return this.proc;
    const [file, args] = this.argv;
    execStats.runs++;
    const p = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc = p;
    this.answers = '';
    this.stderr = '';
    // The loader must not keep the process alive; a batch in flight is held by its timer.
    p.unref();
    for (const s of [p.stdin, p.stdout, p.stderr] as unknown as { unref?: () => void }[]) s?.unref?.();
    p.stdin!.on('error', () => {}); // a loader that died: its exit fails the batch
    p.stdout!.setEncoding('utf8').on('data', (d: string) => {
      if (this.proc !== p) return;
      this.answers += d;
      for (let nl = this.answers.indexOf('\n'); nl >= 0; nl = this.answers.indexOf('\n')) {
        const line = this.answers.slice(0, nl);
        this.answers = this.answers.slice(nl + 1);
        const w = this.waiter;
        this.waiter = null;
        if (w) w.resolve(line);
        else this.kill(p, new CommandError(this.cmd, 'protocol', `an answer no batch waited for: ${line.slice(0, 200)}`));
      }
    });
    p.stderr!.setEncoding('utf8').on('data', (d: string) => { if (this.stderr.length < STDERR_MAX) this.stderr += d; });
    p.on('error', (err: NodeJS.ErrnoException) => {
      this.kill(p, new CommandError(this.cmd, err.code === 'ENOENT' ? 'ENOENT' : 'error', err.code === 'ENOENT' ? `${file}: command not found` : err.message));
    });
    p.on('exit', (code, signal) => this.kill(p, new CommandError(this.cmd, code ?? signal, this.stderr || `the loader exited (${code ?? signal})`)));
    return p;
  }

  /** This loader goes (if it is still the one in use), and the batch in flight fails with err. */
  private kill(p: ChildProcess, err: CommandError): void {
    if (this.proc !== p) return;
    this.proc = null;
    p.kill('SIGKILL');
    this.failWaiter(err);
  }

  private failWaiter(err: Error): void {
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
  }
}

/** The batch's chunks, waiting for the pipe to drain, then its "commit" line on a line of its own. */
async function write(p: ChildProcess, chunks: Iterable<string | Buffer>): Promise<void> {
  const last = await writeChunks(p.stdin!, chunks);
  if (last !== null) p.stdin!.write(last === '\n' || last === '' ? 'commit\n' : '\ncommit\n');
}
