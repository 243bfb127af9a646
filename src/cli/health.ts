import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig } from '../config';
import { controlRequest, ControlUnreachable } from '../control/client';
import { controlSocketPath, statusPath } from '../control/paths';
import type { StatusFile } from '../daemon/status';
import { storageProblems } from '../decisions/pending';

/**
 * Healthy = the daemon is connected to AMI, hears security events, and its firewall is in sync
 * (the kernel as Ampere made it). Asked over the control
 * socket first; when nothing listens there (an older daemon, or the socket is not reachable),
 * read from the status file the daemon rewrites every 5 s. Exit 0 healthy, 1 not.
 */
export async function healthCommand(): Promise<number> {
  let db: string;
  try { db = loadConfig().config.db; } catch (err) { if (err instanceof ConfigError) { console.error(`ampere: ${err.message}`); return 1; } throw err; }
  try {
    const res = await controlRequest<{ healthy: boolean; problems: string[] }>(controlSocketPath(db), 'GET', '/healthz', undefined, 8000);
    if (res.status === 200 && res.body.healthy) { console.log('healthy'); return 0; }
    console.error(`unhealthy: ${(res.body.problems ?? [`control socket answered ${res.status}`]).join('; ')}`);
    return 1;
  } catch (err) {
    if (err instanceof ControlUnreachable && err.reason === 'timeout') { console.error(`unhealthy: ${err.message}`); return 1; }
    // not running, or not allowed on the socket: the status file decides
  }
  let s: Pick<StatusFile, 'pid' | 'updatedAt'> & { ami?: Partial<StatusFile['ami']>; firewall?: Partial<StatusFile['firewall']>; storage?: StatusFile['storage'] };
  try { s = JSON.parse(readFileSync(statusPath(db), 'utf8')); } catch { console.error('unhealthy: no status file (daemon not running?)'); return 1; }
  const problems: string[] = [];
  try { process.kill(s.pid, 0); } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'EPERM') problems.push(`daemon pid ${s.pid} is not running`); }
  if (Date.now() - s.updatedAt > 30_000) problems.push('status is older than 30 s');
  if (!s.ami?.connected) problems.push('not connected to AMI');
  if (!s.firewall?.inSync) problems.push('firewall not in sync');
  if (s.ami?.deaf) problems.push(s.ami.deaf);
  // Failing writes and rows unstored too long, as the daemon last saw them (older daemons omit it).
  if (s.storage) problems.push(...storageProblems(s.storage, Date.now()));
  if (problems.length) { console.error(`unhealthy: ${problems.join('; ')}`); return 1; }
  console.log('healthy');
  return 0;
}
