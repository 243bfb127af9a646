import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const ROOT = join(__dirname, '..', '..');
export const CLI = join(ROOT, 'src', 'cli.ts');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit. */
  ms: number;
}

let built: string | null | undefined;

/**
 * The sources transpiled once per test process into the layout `npm run build` makes
 * (dist/ beside drizzle/ and node_modules/), so each `ampere` call starts like the installed
 * `node dist/cli.js` (~0.2 s) instead of through tsx (~0.6 s or more). Same transform as tsx
 * (esbuild, one file each, no bundling). Falls back to tsx when esbuild is not installed.
 */
function builtCli(): string | null {
  if (built !== undefined) return built;
  try {
    const esbuild = require('esbuild') as typeof import('esbuild');
    const out = mkdtempSync(join(tmpdir(), 'ampere-cli-'));
    chmodSync(out, 0o755); // readable by the unprivileged user of the permission test
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(dir, e.name));
        else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) files.push(join(dir, e.name));
      }
    };
    walk(join(ROOT, 'src'));
    esbuild.buildSync({ entryPoints: files, outdir: join(out, 'dist'), outbase: join(ROOT, 'src'), format: 'cjs', platform: 'node', target: 'node20', bundle: false, logLevel: 'silent' });
    for (const name of ['node_modules', 'drizzle', 'drizzle-pg']) symlinkSync(join(ROOT, name), join(out, name));
    // A copy: Node 24 reads it for the unprivileged user too, who may not reach the tree's own.
    copyFileSync(join(ROOT, 'package.json'), join(out, 'package.json'));
    process.on('exit', () => rmSync(out, { recursive: true, force: true }));
    built = join(out, 'dist', relative(join(ROOT, 'src'), CLI).replace(/\.ts$/, '.js'));
  } catch {
    built = null;
  }
  return built;
}

/**
 * `ampere <args>` as an operator runs it: a separate process, configured only by environment,
 * optionally inside a network namespace or as another user. Never rejects; read `code`.
 */
export function ampere(args: string[], env: Record<string, string>, opts: { netns?: string; user?: number } = {}): Promise<CliResult> {
  const cli = builtCli();
  let argv = cli ? [process.execPath, cli, ...args] : [process.execPath, '--import', 'tsx', CLI, ...args];
  if (opts.user !== undefined) argv = ['setpriv', `--reuid=${opts.user}`, `--regid=${opts.user}`, '--clear-groups', ...argv];
  if (opts.netns) argv = ['ip', 'netns', 'exec', opts.netns, ...argv];
  const t0 = performance.now();
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), {
      cwd: ROOT, timeout: 60_000, maxBuffer: 64 * 1024 * 1024,
      // /dev/null: no config file, not even an installed /etc/ampere/ampere.cfg (root-only on a set-up machine).
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', AMPERE_ENV_FILE: '/nonexistent/.env', AMPERE_CONFIG: '/dev/null', ...env },
    }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 255) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr), ms: performance.now() - t0 });
    });
  });
}

/** Parse --json output, failing with the whole output when it is not JSON. */
export function json<T = any>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\n${r.stdout}\nstderr: ${r.stderr}`);
  }
}
