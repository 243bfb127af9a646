/**
 * The lab's one way to run a command: an argument array (never a shell), a promise that never
 * rejects (the caller reads `code`), and `must` for the callers that want a throw instead.
 */
import { execFile } from 'node:child_process';

export interface ExecResult { code: number; stdout: string; stderr: string; timedOut: boolean }

/**
 * `input` goes to stdin (closed at once when absent); killed after timeoutMs (code 255,
 * timedOut). `env` replaces the environment when given.
 */
export function sh(cmd: string, args: string[], input?: string, timeoutMs = 600_000, env?: NodeJS.ProcessEnv): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { maxBuffer: 1 << 30, timeout: timeoutMs, env: env ?? process.env }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 255) : 0;
      const timedOut = Boolean(err && (err as { killed?: boolean }).killed);
      resolve({ code, stdout: String(stdout), stderr: String(stderr || (err && !stderr ? err.message : '')), timedOut });
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

/** sh(), rejecting with the command and its stderr on a non-zero exit; resolves to stdout. */
export async function must(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await sh(cmd, args, input);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ').slice(0, 200)} -> ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}
