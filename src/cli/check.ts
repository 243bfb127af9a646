import { USAGE_OF } from './usage';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, resolve } from 'node:path';
import { ConfigError, loadConfig, type Config } from '../config';
import { ControlUnreachable, controlRequest } from '../control/client';
import { controlSocketPath } from '../control/paths';
import { formatTable, printJson } from './table';
import { checkSetSize } from './check-sets';
import { EXIT, parse } from './common';

const USAGE = USAGE_OF['check'];

export interface Check {
  name: string;
  /** ok, fail (a problem: exit 1), or note (worth knowing, not a problem). */
  result: 'ok' | 'fail' | 'note';
  detail: string;
}

/**
 * `ampere check`: the configuration and the environment, before `run` or as a container check.
 * Names every problem and exits 1 when there is any.
 */
export async function checkCommand(args: string[]): Promise<number> {
  const { values } = parse('check', args, { json: { type: 'boolean' }, 'config-only': { type: 'boolean' } }, { min: 0, max: 0, usage: USAGE });
  // --config-only: what a service manager runs before each start, when AMI may not be up yet.
  const checks = values['config-only'] ? configChecks().checks : await runChecks();
  const problems = checks.filter((c) => c.result === 'fail');
  if (values.json) printJson({ ok: problems.length === 0, checks, problems: problems.map((p) => `${p.name}: ${p.detail}`) });
  else {
    process.stdout.write(formatTable(checks, [
      { header: 'RESULT', get: (c) => (c.result === 'fail' ? 'FAIL' : c.result) },
      { header: 'CHECK', get: (c) => c.name },
      { header: 'DETAIL', get: (c) => c.detail },
    ]));
    if (problems.length) process.stderr.write(`ampere check: ${problems.length} problem${problems.length === 1 ? '' : 's'}: ${problems.map((p) => `${p.name}: ${p.detail}`).join('; ')}\n`);
  }
  return problems.length ? EXIT.fail : EXIT.ok;
}

function configChecks(): { checks: Check[]; cfg?: Config } {
  try {
    const loaded = loadConfig();
    const checks: Check[] = [{ name: 'config', result: 'ok', detail: loaded.file ? `valid (file ${loaded.file}, environment over it)` : 'valid (environment and defaults; no config file)' }];
    for (const w of loaded.warnings) checks.push({ name: 'config', result: 'note', detail: w });
    return { checks, cfg: loaded.config };
  } catch (err) {
    return { checks: [{ name: 'config', result: 'fail', detail: err instanceof ConfigError ? err.message : String(err) }] };
  }
}

export async function runChecks(): Promise<Check[]> {
  const { checks: out, cfg } = configChecks();
  if (!cfg) return out; // nothing else can be checked without it

  const running = await daemonRunning(cfg);
  out.push(running.check);
  if (running.running) out.push(await daemonHealth(cfg));
  out.push(await checkAmi(cfg));
  out.push(...(await checkFirewall(cfg, running.running)));
  out.push(checkDatabase(cfg));
  const sets = cfg.backend === 'ipset' ? checkSetSize(cfg) : null;
  if (sets) out.push(sets);
  if (cfg.backup_dir) out.push(checkDir('backup dir', cfg.backup_dir));
  // Loaded only in fleet mode: no pg driver otherwise.
  if (cfg.fleet_url) out.push(...(await (require('../fleet/check') as typeof import('../fleet/check')).checkFleet(cfg)));
  return out;
}

async function daemonRunning(cfg: Config): Promise<{ running: boolean; check: Check }> {
  const sock = controlSocketPath(cfg.db);
  try {
    const res = await controlRequest<{ pid: number; firewall: { inSync: boolean } }>(sock, 'GET', '/status', undefined, 5000);
    return { running: true, check: { name: 'daemon', result: 'ok', detail: `running (pid ${res.body.pid}), control socket ${sock}` } };
  } catch (err) {
    if (err instanceof ControlUnreachable && err.reason === 'not-running') return { running: false, check: { name: 'daemon', result: 'note', detail: `not running (no control socket at ${sock})` } };
    return { running: false, check: { name: 'daemon', result: 'fail', detail: (err as Error).message } };
  }
}

/** The running daemon's own verdict (AMI, firewall drift, security events heard). */
async function daemonHealth(cfg: Config): Promise<Check> {
  try {
    const res = await controlRequest<{ healthy: boolean; problems: string[] }>(controlSocketPath(cfg.db), 'GET', '/healthz', undefined, 5000);
    if (res.body.healthy) return { name: 'daemon health', result: 'ok', detail: 'healthy' };
    return { name: 'daemon health', result: 'fail', detail: (res.body.problems ?? [`control socket answered ${res.status}`]).join('; ') };
  } catch (err) {
    return { name: 'daemon health', result: 'fail', detail: (err as Error).message };
  }
}

/** How long `check` waits for the security event its own login makes (Asterisk sends it at once). */
const SECURITY_EVENT_WAIT_MS = 3_000;

/**
 * Connect, read the banner, log in (security events only), wait for the SuccessfulAuth of
 * that login, log off. No security event means the user lacks `read = security`: Ampere
 * would run blind.
 */
export function checkAmi(cfg: Pick<Config, 'host' | 'port' | 'user' | 'pass' | 'ami_timeout'>): Promise<Check> {
  const where = `${cfg.host}:${cfg.port}`;
  const timeoutMs = Math.min(cfg.ami_timeout, 10_000);
  return new Promise((resolvePromise) => {
    let buf = '';
    let banner = '';
    let done = false;
    let accepted = '';
    let heard = false;
    const sock = connect({ host: cfg.host, port: cfg.port });
    const finish = (result: Check['result'], detail: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (result === 'ok') sock.end('Action: Logoff\r\nActionID: ampere-check-2\r\n\r\n');
      sock.destroy();
      resolvePromise({ name: 'ami', result, detail });
    };
    let timer = setTimeout(() => finish('fail', `${where}: no ${banner ? 'answer to Login' : 'AMI banner'} within ${timeoutMs / 1000} s`), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('error', (err: NodeJS.ErrnoException) => finish('fail', `${where} unreachable: ${err.code === 'ECONNREFUSED' ? 'connection refused (is Asterisk running, manager.conf enabled?)' : err.message}`));
    sock.on('close', () => finish('fail', `${where} closed the connection${banner ? ' after the banner' : ''}`));
    sock.on('data', (d: string) => {
      buf += d;
      if (!banner) {
        const i = buf.indexOf('\r\n');
        if (i < 0) return;
        banner = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!/Asterisk Call Manager/i.test(banner)) return finish('fail', `${where} is not AMI (it said ${JSON.stringify(banner.slice(0, 60))})`);
        sock.write(`Action: Login\r\nUsername: ${cfg.user}\r\nSecret: ${cfg.pass}\r\nEvents: security\r\nActionID: ampere-check-1\r\n\r\n`);
      }
      let end;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const f: Record<string, string> = {};
        for (const line of block.split('\r\n')) { const c = line.indexOf(':'); if (c > 0) f[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim(); }
        if (f.event && /(^|,)security(,|$)/.test(f.privilege ?? '')) heard = true;
        if (accepted && heard) return finish('ok', `${accepted}, security events arrive`);
        if (f.actionid !== 'ampere-check-1' || !f.response) continue;
        if (f.response.toLowerCase() === 'success') {
          accepted = `${where} reachable (${banner}), login as "${cfg.user}" accepted`;
          if (heard) return finish('ok', `${accepted}, security events arrive`);
          clearTimeout(timer);
          timer = setTimeout(() => finish('fail', `${accepted}, but no security event arrived within ${SECURITY_EVENT_WAIT_MS / 1000} s (Asterisk sends one for every login): give the user "read = security" in manager.conf`), SECURITY_EVENT_WAIT_MS);
          continue;
        }
        return finish('fail', `${where} rejected the login of user "${cfg.user}": ${f.message ?? f.response} (check user/pass against manager.conf)`);
      }
    });
  });
}

async function checkFirewall(cfg: Config, daemonRuns: boolean): Promise<Check[]> {
  if (cfg.backend === 'dry-run') return [{ name: 'firewall', result: 'note', detail: 'backend dry-run: no kernel changes are made' }];
  const out: Check[] = [];
  const { detectIptables } = require('../firewall/detect') as typeof import('../firewall/detect');
  const { familyTools, listRules } = require('../firewall/chain') as typeof import('../firewall/chain');
  const { jumpOk, jumpState } = require('../firewall/jump') as typeof import('../firewall/jump');
  const { run, which } = require('../firewall/exec') as typeof import('../firewall/exec');
  const { chooseIpv6 } = require('../firewall/ipv6') as typeof import('../firewall/ipv6');
  const ipv6 = chooseIpv6(cfg.ipv6);
  const families = ipv6.on ? [4, 6] : [4];
  if (!ipv6.on) out.push({ name: 'ipv6', result: 'note', detail: `IPv6 off (${ipv6.reason}): IPv4 only in the kernel, IPv6 bans kept in the database only` });
  let tools;
  try {
    tools = await detectIptables({ iptables: cfg.iptables });
    out.push({ name: 'iptables', result: 'ok', detail: `${tools.iptables} (${tools.reason})` });
  } catch (err) {
    out.push({ name: 'iptables', result: 'fail', detail: (err as Error).message });
    return out;
  }
  if (cfg.backend === 'ipset') {
    if (!which('ipset')) out.push({ name: 'ipset', result: 'fail', detail: 'ipset not found in PATH: install it (package ipset), or use AMPERE_BACKEND=rules' });
    else {
      try {
        const sets = (await run('ipset', ['list', '-n'])).stdout.split('\n');
        const missing = families.map((f) => `${cfg.chain}-v${f}`).filter((s) => !sets.includes(s));
        out.push(missing.length === 0
          ? { name: 'ipset', result: 'ok', detail: `backend ipset, ${families.length > 1 ? 'sets' : 'set'} ${families.map((f) => `${cfg.chain}-v${f}`).join(' and ')} present` }
          : { name: 'ipset', result: daemonRuns ? 'fail' : 'note', detail: `set${missing.length > 1 ? 's' : ''} ${missing.join(', ')} missing${daemonRuns ? ' while the daemon runs' : ' (created by ampere run)'}` });
      } catch (err) {
        out.push({ name: 'ipset', result: 'fail', detail: `ipset unusable: ${(err as Error).message} (root or CAP_NET_ADMIN needed)` });
      }
    }
  } else out.push({ name: 'backend', result: 'ok', detail: 'backend rules: one iptables rule per banned host' });
  for (const ft of familyTools(tools, ipv6.on)) {
    const label = `chain v${ft.family}`;
    try {
      const lines = await listRules(ft);
      const exists = lines.includes(`-N ${cfg.chain}`);
      const jump = jumpOk(jumpState(lines, cfg.chain, cfg.ports));
      if (exists && jump) out.push({ name: label, result: 'ok', detail: `${ft.iptables}: chain ${cfg.chain} present, jumped to` });
      else {
        const what = [!exists && `chain ${cfg.chain} missing`, !jump && `no rule jumps to ${cfg.chain}`].filter(Boolean).join(', ');
        out.push({ name: label, result: daemonRuns ? 'fail' : 'note', detail: `${ft.iptables}: ${what}${daemonRuns ? ' while the daemon runs (bans have no effect)' : ' (ampere run creates the chain and, if none exists, a jump from INPUT)'}` });
      }
    } catch (err) {
      out.push({ name: label, result: 'fail', detail: `${ft.iptables} unusable: ${(err as Error).message}` });
    }
  }
  return out;
}

function writable(path: string): boolean {
  try { accessSync(path, constants.W_OK); return true; } catch { return false; }
}

/** A directory that exists and is writable, or whose nearest existing parent is. */
function checkDir(name: string, dir: string): Check {
  let p = resolve(dir);
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  if (p === resolve(dir)) {
    if (!statSync(p).isDirectory()) return { name, result: 'fail', detail: `${dir} is not a directory` };
    return writable(p) ? { name, result: 'ok', detail: `${dir} writable` } : { name, result: 'fail', detail: `${dir} is not writable` };
  }
  return writable(p) ? { name, result: 'ok', detail: `${dir} will be created` } : { name, result: 'fail', detail: `${dir} does not exist and ${p} is not writable` };
}

function checkDatabase(cfg: Config): Check {
  const dir = dirname(resolve(cfg.db));
  if (!existsSync(cfg.db)) {
    const d = checkDir('database', dir);
    return d.result === 'ok' ? { name: 'database', result: 'ok', detail: `${cfg.db} will be created (${d.detail})` } : { ...d, detail: `cannot create ${cfg.db}: ${d.detail}` };
  }
  if (!writable(dir)) return { name: 'database', result: 'fail', detail: `${dir} is not writable (SQLite needs it for the -wal and -shm files)` };
  const Database = require('better-sqlite3') as typeof import('better-sqlite3');
  let db;
  try {
    db = new Database(cfg.db, { fileMustExist: true, timeout: 5000 });
    const tables = (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all() as { name: string }[]).map((t) => t.name);
    db.exec('BEGIN IMMEDIATE; ROLLBACK');
    const missing = ['hosts', 'bans', 'events', 'allowed'].filter((t) => !tables.includes(t));
    if (missing.length && tables.length) return { name: 'database', result: 'fail', detail: `${cfg.db} is not an Ampere database (no ${missing.join(', ')} table)` };
    return { name: 'database', result: 'ok', detail: `${cfg.db} writable${tables.length ? '' : ' (empty: set up by ampere run)'}` };
  } catch (err) {
    return { name: 'database', result: 'fail', detail: `${cfg.db}: ${(err as Error).message}` };
  } finally {
    db?.close();
  }
}
