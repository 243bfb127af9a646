import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig } from '../config';
import { statusPath } from '../main';

/** Healthy = a live daemon wrote its status recently, is connected to AMI and has its firewall in sync. */
export async function healthCommand(): Promise<number> {
  let db: string;
  try { db = loadConfig().config.db; } catch (err) { if (err instanceof ConfigError) { console.error(`ampere: ${err.message}`); return 1; } throw err; }
  let s: { pid: number; updatedAt: number; amiConnected: boolean; firewallInSync: boolean };
  try { s = JSON.parse(readFileSync(statusPath(db), 'utf8')); } catch { console.error('unhealthy: no status file (daemon not running?)'); return 1; }
  const problems: string[] = [];
  try { process.kill(s.pid, 0); } catch { problems.push(`daemon pid ${s.pid} is not running`); }
  if (Date.now() - s.updatedAt > 30_000) problems.push('status is older than 30 s');
  if (!s.amiConnected) problems.push('not connected to AMI');
  if (!s.firewallInSync) problems.push('firewall not in sync');
  if (problems.length) { console.error(`unhealthy: ${problems.join('; ')}`); return 1; }
  console.log('healthy');
  return 0;
}
