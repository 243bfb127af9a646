import { spawn } from 'node:child_process';
import { CommandError, execStats, inNetns } from './exec';

/**
 * A command's stdout line by line as it comes (no newline), never the whole output at once:
 * `ipset save` of a million members is ~45 MB, which beside the rest of a start did not fit the
 * daemon's heap (BENCHMARKS.md, Findings). Throws CommandError when the command fails, after
 * the lines it printed.
 */
export async function* commandLines(file: string, args: string[], opts: { netns?: string; timeoutMs?: number } = {}): AsyncGenerator<string> {
  const [bin, argv] = inNetns(opts.netns, file, args);
  const cmd = [bin, ...argv].join(' ');
  execStats.runs++;
  const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  // A timer of our own, cleared however the command ends: spawn's `timeout` option is cleared
  // only by an exit, so a command that never started (ENOENT) kept its timer, and the process, alive.
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => { if (stderr.length < 65_536) stderr += s; });
  const exited = new Promise<number | string | null>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    child.once('close', (code, signal) => resolve(code ?? signal));
  }).finally(() => clearTimeout(timer));
  let tail = '';
  try {
    for await (const chunk of child.stdout.setEncoding('utf8')) {
      const text = tail + (chunk as string);
      let from = 0;
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', from)) {
        yield text.slice(from, nl);
        from = nl + 1;
      }
      tail = text.slice(from);
    }
    if (tail) yield tail;
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  const code = await exited;
  if (code !== 0) throw new CommandError(cmd, code === 'ENOENT' ? 'ENOENT' : code, code === 'ENOENT' ? `${bin}: command not found` : stderr);
}
