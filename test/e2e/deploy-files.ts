/**
 * Reads the deployment files (docker-compose.yml, Dockerfiles, .env.example,
 * deploy/asterisk/*.conf) the way Docker would, so that the compose test
 * checks them and the e2e test runs exactly what they describe.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseYaml, type YamlValue } from './yaml';

export const REPO = resolve(__dirname, '..', '..');

export type Compose = { [key: string]: YamlValue };

export function loadCompose(file = join(REPO, 'docker-compose.yml')): Compose {
  const doc = parseYaml(readFileSync(file, 'utf8'));
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${file}: not a mapping`);
  return doc;
}

export function service(compose: Compose, name: string): { [key: string]: YamlValue } {
  const services = compose.services as { [key: string]: YamlValue } | undefined;
  const svc = services?.[name];
  if (!svc || typeof svc !== 'object' || Array.isArray(svc)) throw new Error(`docker-compose.yml has no service "${name}"`);
  return svc;
}

/**
 * Compose variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default},
 * ${VAR:?message}, ${VAR?message}, $VAR and $$.
 */
export function interpolate(text: string, vars: Record<string, string | undefined>): string {
  return text.replace(/\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g,
    (_m, all: string, name?: string, op?: string, arg?: string, bare?: string) => {
      if (all === '$') return '$';
      if (bare) return vars[bare] ?? '';
      const v = vars[name!];
      const unsetOrEmpty = v === undefined || (op?.startsWith(':') && v === '');
      if (op === ':-' || op === '-') return unsetOrEmpty ? (arg ?? '') : v!;
      if (op === ':?' || op === '?') {
        if (unsetOrEmpty) throw new Error(`required variable ${name} is missing: ${arg}`);
        return v!;
      }
      return v ?? '';
    });
}

/** A service's `environment` (mapping or KEY=VALUE list), interpolated with `vars` (the .env). */
export function serviceEnvironment(compose: Compose, name: string, vars: Record<string, string | undefined>): Record<string, string> {
  const env = service(compose, name).environment ?? {};
  const out: Record<string, string> = {};
  if (Array.isArray(env)) {
    for (const item of env) {
      const s = String(item);
      const i = s.indexOf('=');
      if (i < 0) { if (vars[s] !== undefined) out[s] = vars[s]!; continue; }
      out[s.slice(0, i)] = interpolate(s.slice(i + 1), vars);
    }
  } else if (typeof env === 'object' && env !== null) {
    for (const [k, v] of Object.entries(env)) {
      if (v === null) { if (vars[k] !== undefined) out[k] = vars[k]!; continue; }
      out[k] = interpolate(String(v), vars);
    }
  }
  return out;
}

export interface Mount { source: string; target: string; readOnly: boolean; bind: boolean }

/**
 * A service's `volumes` in short syntax: bind mounts (./path, /path) resolved against the repo.
 * Long-syntax entries (the host's files, such as /run/xtables.lock) are serviceLongMounts'.
 */
export function serviceMounts(compose: Compose, name: string): Mount[] {
  const vols = service(compose, name).volumes;
  if (!Array.isArray(vols)) return [];
  return vols.filter((v) => typeof v !== 'object').map((v) => {
    const parts = String(v).split(':');
    const [source, target, mode = 'rw'] = parts;
    const bind = source.startsWith('.') || source.startsWith('/');
    return { source: bind ? resolve(REPO, source) : source, target, readOnly: mode.split(',').includes('ro'), bind };
  });
}

/** A service's long-syntax `volumes` entries (mappings: type, source, target, bind options). */
export function serviceLongMounts(compose: Compose, name: string): { [key: string]: YamlValue }[] {
  const vols = service(compose, name).volumes;
  if (!Array.isArray(vols)) return [];
  return vols.filter((v): v is { [key: string]: YamlValue } => typeof v === 'object' && v !== null && !Array.isArray(v));
}

// ------------------------------------------------------------- Dockerfile --

export interface Instruction { op: string; args: string; line: number }
export interface Stage { from: string; name?: string; instructions: Instruction[] }

export function parseDockerfile(file: string): { args: Record<string, string>; stages: Stage[] } {
  const src = readFileSync(file, 'utf8').split('\n');
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  let buf = '';
  let start = 0;
  src.forEach((raw, i) => {
    if (buf === '' && /^\s*#/.test(raw)) return;
    if (buf !== '' && /^\s*#/.test(raw)) return; // comment lines inside a continuation
    if (buf === '') start = i + 1;
    const cont = /\\\s*$/.test(raw);
    buf += (buf ? ' ' : '') + raw.replace(/\\\s*$/, '').trim();
    if (cont) return;
    const line = buf.trim();
    buf = '';
    if (!line) return;
    const m = /^(\w+)\s+([\s\S]*)$/.exec(line);
    if (!m) throw new Error(`${file}:${start}: cannot parse "${line}"`);
    const op = m[1].toUpperCase();
    const rest = m[2];
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest.trim());
      if (!f) throw new Error(`${file}:${start}: bad FROM`);
      stages.push({ from: f[1].replace(/\$\{(\w+)\}|\$(\w+)/g, (_x, a, b) => args[a ?? b] ?? ''), name: f[2], instructions: [] });
      return;
    }
    if (op === 'ARG' && stages.length === 0) {
      const [k, v = ''] = rest.split('=');
      args[k.trim()] = v.trim();
      return;
    }
    if (!stages.length) throw new Error(`${file}:${start}: ${op} before FROM`);
    stages[stages.length - 1].instructions.push({ op, args: rest, line: start });
  });
  return { args, stages };
}

/** The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD, or throws. */
export function execForm(text: string): string[] {
  const t = text.trim();
  if (!t.startsWith('[')) throw new Error(`not in exec form: ${t}`);
  const v = JSON.parse(t) as unknown;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`not a string array: ${t}`);
  return v as string[];
}

export function lastOp(stage: Stage, op: string): Instruction | undefined {
  return [...stage.instructions].reverse().find((i) => i.op === op);
}

/** ENV KEY=VALUE ... of a stage (the `ENV KEY VALUE` legacy form too). */
export function stageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of stage.instructions.filter((x) => x.op === 'ENV')) {
    if (!i.args.includes('=')) {
      const [k, ...v] = i.args.split(/\s+/);
      env[k] = v.join(' ');
      continue;
    }
    for (const m of i.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
      env[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
    }
  }
  return env;
}

/** HEALTHCHECK [options] CMD [...] → the command. */
export function healthcheckCommand(stage: Stage): string[] {
  const h = lastOp(stage, 'HEALTHCHECK');
  if (!h) throw new Error('no HEALTHCHECK');
  const m = /\bCMD\s+(\[[\s\S]*\])\s*$/.exec(h.args);
  if (!m) throw new Error(`HEALTHCHECK not in exec form: ${h.args}`);
  return execForm(m[1]);
}

// ------------------------------------------------------------ .env files --

/** `KEY=value` and commented-out `# KEY=value` lines of .env.example. */
export function parseEnvExample(file = join(REPO, '.env.example')): Map<string, { value: string; commented: boolean }> {
  const out = new Map<string, { value: string; commented: boolean }>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out.set(m[2], { value: m[3].trim(), commented: Boolean(m[1]) });
  }
  return out;
}

// ------------------------------------------------------ Asterisk configs --

/** An Asterisk .conf file: [section](template) headers and key = value / key => value lines. */
export function parseAsteriskConf(file: string): { name: string; options: string; values: [string, string][] }[] {
  const sections: { name: string; options: string; values: [string, string][] }[] = [];
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.replace(/;.*$/, '').trim();
    if (!line) continue;
    const h = /^\[([^\]]+)\](?:\(([^)]*)\))?$/.exec(line);
    if (h) { sections.push({ name: h[1], options: h[2] ?? '', values: [] }); continue; }
    const kv = /^([^=]+?)\s*=>?\s*(.*)$/.exec(line);
    if (kv && sections.length) sections[sections.length - 1].values.push([kv[1].trim(), kv[2].trim()]);
  }
  return sections;
}

export function confValue(section: { values: [string, string][] } | undefined, key: string): string | undefined {
  return section?.values.find(([k]) => k === key)?.[1];
}

/** The PJSIP auth objects (non-template sections of type auth) with a username and password. */
export function pjsipAuths(file: string): { username: string; password: string }[] {
  return parseAsteriskConf(file)
    .filter((s) => s.options !== '!' && confValue(s, 'username') && confValue(s, 'password'))
    .map((s) => ({ username: confValue(s, 'username')!, password: confValue(s, 'password')! }));
}
