import type { Logger } from '../log';
import { CommandError } from './exec';

/** A text of lines (no newline at its end) cut into n parts of about equal length, at line ends. */
export function splitLines(text: string, n: number): string[] {
  const parts: string[] = [];
  let from = 0;
  for (let k = 1; k < n; k++) {
    const at = Math.max(from, Math.round((text.length * k) / n));
    let nl = text.indexOf('\n', at);
    if (nl < 0) nl = text.lastIndexOf('\n', at); // the cut falls in the last line
    if (nl < from) break;
    parts.push(text.slice(from, nl));
    from = nl + 1;
  }
  parts.push(text.slice(from));
  while (parts.length < n) parts.push('');
  return parts;
}

const FULL = /Hash is full/;

/** A set that is full said so, for the operator: the error names set_size; null for any other failure. */
export function setFull(err: unknown, setSize: number): Error | null {
  if (!(err instanceof Error) || !FULL.test(err.message)) return null;
  return new Error(`a ban set is full: more bans than set_size (${setSize}) allows in one family; raise set_size and restart. ${err.message}`);
}

/** Lines the kernel may refuse in one full load before it fails after all. */
const MAX_REFUSED = 64;

/** A line `ipset restore` refused (`Error in line N`) in one loader's input. */
export interface RefusedLine { loader: number; line: number; message: string; err: unknown }

/** The refused line a failed loader's error names, or null when it names none (another failure). */
export function refusedLine(loader: number, err: unknown): RefusedLine | null {
  const m = err instanceof CommandError ? /Error in line (\d+): ([^\n]*)/.exec(err.stderr) : null;
  return m ? { loader, line: Number(m[1]), message: m[2].trim(), err } : null;
}

/**
 * A full load that survives lines the kernel refuses: `ipset restore` stops at the first bad
 * line and the load is all-or-nothing, so one such line would keep every other ban out of the
 * kernel. attempt() runs one load (each loader i reading inputFor(i) after head()) and returns
 * the refused lines; those are dropped (and logged) and the rest loaded again, at most
 * MAX_REFUSED lines in all. sources[i] is loader i's input (they may be one shared iterator);
 * every chunk pulled is kept so that a retry has them all.
 */
export async function loadDroppingRefused(
  sources: Iterator<string>[],
  loaders: number,
  head: () => string,
  attempt: (inputFor: (loader: number) => Iterable<string>) => Promise<RefusedLine[]>,
  log: Pick<Logger, 'error'>,
): Promise<void> {
  for (let dropped = 0; ;) {
    const taken: string[][] = sources.map(() => []);
    const recorded = (i: number): Iterable<string> => ({
      // A plain iterator (no return()): a loader that dies cannot close the shared stream.
      [Symbol.iterator]: () => ({ next: () => { const r = sources[i].next(); if (!r.done) taken[i].push(r.value); return r; } }),
    });
    const refused = await attempt(recorded);
    if (refused.length === 0) return;
    // A full set refuses every line after the last that fit: not a bad line to drop.
    const full = refused.find((r) => FULL.test(r.message));
    if (full) throw full.err;
    const lines: string[] = [];
    for (const [i, chunks] of taken.entries()) {
      for (let r = sources[i].next(); !r.done; r = sources[i].next()) chunks.push(r.value);
      lines.push(...chunks.join('').split('\n').filter((l) => l.length > 0));
    }
    for (const { loader, line, message, err } of refused) {
      // Line N of what that loader wrote: the head (create lines), then the chunks it took.
      const text = (head() + taken[loader].join('')).split('\n')[line - 1];
      const at = text === undefined || !text.startsWith('add ') ? -1 : lines.indexOf(text);
      if (at < 0 || ++dropped > MAX_REFUSED) throw err;
      lines.splice(at, 1);
      log.error({ line: text, refused: message }, 'full load: the kernel refused a line; loading the other bans without it');
    }
    const parts = splitLines(lines.join('\n'), loaders).filter((t) => t.length > 0).map((t) => `${t}\n`);
    sources = Array.from({ length: loaders }, (_, i) => (parts[i] === undefined ? [] : [parts[i]])[Symbol.iterator]());
  }
}
