/**
 * What the benchmark runs: the daemon compiled from the working tree's src/ (esbuild, one
 * CommonJS file per module, like `tsc` emits; started as `node cli.js run`, like `npm start`),
 * the native ipset loader and netprobe compiled with gcc, the Asterisk stand-in bundled. Rebuilt only when a source changed.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

export const ROOT = join(__dirname, '..', '..');
export const BUILD = join(ROOT, 'bench', '.build');
export const DAEMON_CLI = join(BUILD, 'dist', 'cli.js');
export const PBX_AGENT = join(BUILD, 'pbx.js');
export const NETPROBE = join(BUILD, 'netprobe');

function files(dir: string, ext: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p, ext));
    else if (e.name.endsWith(ext)) out.push(p);
  }
  return out.sort();
}

function digest(paths: string[]): string {
  const h = createHash('sha256');
  for (const p of paths) h.update(relative(ROOT, p)).update('\0').update(readFileSync(p)).update('\0');
  return h.digest('hex');
}

export async function build(log: (s: string) => void): Promise<void> {
  mkdirSync(BUILD, { recursive: true });
  const esbuild = await import('esbuild');
  const src = files(join(ROOT, 'src'), '.ts').filter((f) => !f.endsWith('.d.ts'));
  const stamp = join(BUILD, 'stamp.json');
  const old = existsSync(stamp) ? (JSON.parse(readFileSync(stamp, 'utf8')) as Record<string, string>) : {};
  const now: Record<string, string> = {
    src: digest([...src, join(ROOT, 'package.json'), join(ROOT, 'native', 'ipset-load.c')]),
    agent: digest([join(ROOT, 'bench', 'agent', 'pbx.ts'), ...files(join(ROOT, 'tools', 'lab'), '.ts')]),
    netprobe: digest([join(ROOT, 'bench', 'c', 'netprobe.c')]),
  };
  if (now.src !== old.src || !existsSync(DAEMON_CLI)) {
    const t = performance.now();
    rmSync(join(BUILD, 'dist'), { recursive: true, force: true });
    await esbuild.build({
      entryPoints: src, outdir: join(BUILD, 'dist'), outbase: join(ROOT, 'src'),
      format: 'cjs', platform: 'node', target: 'node20', bundle: false, sourcemap: false, logLevel: 'error',
    });
    // The store finds its migrations at <dist>/../drizzle, as in the repository.
    const link = join(BUILD, 'drizzle');
    rmSync(link, { force: true });
    symlinkSync(join(ROOT, 'drizzle'), link);
    // The native ipset loader where the daemon looks for it (<dist>/ampere-ipset-load), as `npm run build` puts it.
    execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', join(BUILD, 'dist', 'ampere-ipset-load'), join(ROOT, 'native', 'ipset-load.c')], { stdio: 'inherit' });
    log(`built the daemon from src/ (${src.length} files, ${Math.round(performance.now() - t)} ms)`);
  }
  if (now.agent !== old.agent || !existsSync(PBX_AGENT)) {
    await esbuild.build({
      entryPoints: [join(ROOT, 'bench', 'agent', 'pbx.ts')], outfile: PBX_AGENT,
      format: 'cjs', platform: 'node', target: 'node20', bundle: true, logLevel: 'error',
    });
  }
  if (now.netprobe !== old.netprobe || !existsSync(NETPROBE)) {
    execFileSync('gcc', ['-O2', '-Wall', '-o', NETPROBE, join(ROOT, 'bench', 'c', 'netprobe.c')], { stdio: 'inherit' });
  }
  writeFileSync(stamp, JSON.stringify(now));
}
