import { run } from './exec';
import { accessSync, constants } from 'node:fs';
import { resolve } from 'node:path';
import { LoaderServer } from './ipset-serve';

/** Where the build puts the native loader (native/ipset-load.c): dist/ampere-ipset-load. */
export const NATIVE_LOADER = resolve(__dirname, '..', '..', 'dist', 'ampere-ipset-load');

/**
 * The native ipset loader to use for large batches and full loads, or null to use
 * `ipset restore` (it was not built, or AMPERE_IPSET_LOADER=off). AMPERE_IPSET_LOADER may also
 * name another build of it (tests build the source under test).
 */
export function nativeIpsetLoader(env: NodeJS.ProcessEnv = process.env): string | null {
  const chosen = env.AMPERE_IPSET_LOADER?.trim() || NATIVE_LOADER;
  if (chosen === 'off') return null;
  try {
    accessSync(chosen, constants.X_OK);
    return chosen;
  } catch {
    return null;
  }
}

/** `ipset restore` processes filling the scratch sets at once during a full load. */
const RESTORE_LOADERS = 2;

/** Many add and del lines at once: the native loader (one kept running), else `ipset restore -exist` (the same lines, the same errors). */
export class IpsetBulk {
  /** The native loader, or null: `ipset restore`. */
  readonly native = nativeIpsetLoader();
  private readonly server: LoaderServer | null;

  constructor(private readonly netns: string | undefined) {
    this.server = this.native ? new LoaderServer(this.native, netns) : null;
  }

  /**
   * Processes a full load runs at once. The native loader runs alone: the kernel takes one
   * netlink batch at a time, so a second gains nothing (BENCHMARKS.md, Findings).
   */
  get loaders(): number {
    return this.native ? 1 : RESTORE_LOADERS;
  }

  run(input: string | Iterable<string | Buffer>): Promise<{ stdout: string; stderr: string }> {
    if (this.server) return this.server.run(input);
    return run('ipset', ['restore', '-exist'], { input, netns: this.netns, timeoutMs: 300_000 });
  }

  /** The loader kept running goes (shutdown). */
  close(): void {
    this.server?.close();
  }
}
