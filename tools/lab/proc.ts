import { readdirSync, readFileSync } from 'node:fs';

/** A process's niceness (/proc/<pid>/stat, field 19). */
export function niceness(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
}

/** CPU time a process has used so far, user and system, in ms (/proc/<pid>/stat fields 14-15, at 100 ticks a second). */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** The live children of a process (every thread's), with their pids, command lines and niceness. */
export function childrenOf(pid: number): { pid: number; cmd: string; nice: number }[] {
  const out: { pid: number; cmd: string; nice: number }[] = [];
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    let kids = '';
    try { kids = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8'); } catch { continue; }
    for (const k of kids.trim().split(/\s+/).filter(Boolean).map(Number)) {
      try { out.push({ pid: k, cmd: readFileSync(`/proc/${k}/cmdline`, 'utf8').replace(/\0/g, ' '), nice: niceness(k) }); } catch { /* gone */ }
    }
  }
  return out;
}
