/**
 * A small YAML reader for the subset that docker-compose.yml uses: block
 * mappings and sequences by indentation, flow sequences `[a, "b"]`, plain,
 * single- and double-quoted scalars, comments and an empty mapping value.
 * Every scalar stays a string (compose treats them as such where it matters
 * here). Anything outside the subset (anchors, tags, block scalars, flow
 * mappings, multi-document) throws, naming the line: the compose file must
 * stay readable by this parser, and test/compose.test.ts checks it against
 * PyYAML too where that is installed.
 */
export type YamlValue = string | null | YamlValue[] | { [key: string]: YamlValue };

interface Line { indent: number; text: string; no: number }

export class YamlError extends Error {}

function stripComment(raw: string): string {
  let quote: string | null = null;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (quote) {
      if (c === quote) {
        if (quote === "'" && raw[i + 1] === "'") { i++; continue; }
        quote = null;
      } else if (c === '\\' && quote === '"') i++;
    } else if (c === '"' || c === "'") {
      // a quote only opens a quoted scalar at the start of a value
      const before = raw.slice(0, i).trimEnd();
      if (before === '' || /[:\-[,]$/.test(before)) quote = c;
    } else if (c === '#' && (i === 0 || /\s/.test(raw[i - 1]))) {
      return raw.slice(0, i);
    }
  }
  return raw;
}

function scalar(text: string, no: number): string | null {
  const t = text.trim();
  if (t === '' || t === '~' || t === 'null') return null;
  if (t.startsWith('"')) {
    if (!t.endsWith('"') || t.length < 2) throw new YamlError(`line ${no}: unterminated double-quoted scalar`);
    return JSON.parse(t) as string;
  }
  if (t.startsWith("'")) {
    if (!t.endsWith("'") || t.length < 2) throw new YamlError(`line ${no}: unterminated single-quoted scalar`);
    return t.slice(1, -1).replace(/''/g, "'");
  }
  if (/^[&*!|>{%@`]/.test(t)) throw new YamlError(`line ${no}: unsupported YAML syntax "${t}"`);
  return t;
}

function flowSequence(text: string, no: number): YamlValue[] {
  const inner = text.trim().slice(1, -1);
  if (inner.trim() === '') return [];
  const items: string[] = [];
  let cur = '';
  let quote: string | null = null;
  for (let i = 0; i < inner.length; i++) {
    const c = inner[i];
    if (quote) {
      cur += c;
      if (c === '\\' && quote === '"') { cur += inner[++i] ?? ''; continue; }
      if (c === quote) quote = null;
    } else if (c === '"' || c === "'") { quote = c; cur += c; }
    else if (c === '[' || c === '{') throw new YamlError(`line ${no}: nested flow collections are not supported`);
    else if (c === ',') { items.push(cur); cur = ''; }
    else cur += c;
  }
  if (quote) throw new YamlError(`line ${no}: unterminated quote in flow sequence`);
  items.push(cur);
  return items.map((s) => {
    if (s.trim() === '') throw new YamlError(`line ${no}: empty item in flow sequence`);
    return scalar(s, no);
  });
}

function value(text: string, no: number): YamlValue {
  const t = text.trim();
  if (t.startsWith('[')) {
    if (!t.endsWith(']')) throw new YamlError(`line ${no}: flow sequence must end on its line`);
    return flowSequence(t, no);
  }
  return scalar(t, no);
}

/** Index of the `: ` (or final `:`) that separates a mapping key, outside quotes; -1 if none. */
function keySeparator(text: string): number {
  let quote: string | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) { if (c === quote) quote = null; continue; }
    if ((c === '"' || c === "'") && i === 0) { quote = c; continue; }
    if (c === ':' && (i === text.length - 1 || text[i + 1] === ' ')) return i;
    if (c === '[' || c === '{') return -1;
  }
  return -1;
}

export function parseYaml(source: string): YamlValue {
  const lines: Line[] = [];
  source.split(/\r?\n/).forEach((raw, i) => {
    if (raw.includes('\t') && /^\s*\t/.test(raw)) throw new YamlError(`line ${i + 1}: tab indentation`);
    const text = stripComment(raw).trimEnd();
    if (text.trim() === '') return;
    if (text === '---' || text === '...') throw new YamlError(`line ${i + 1}: multi-document YAML is not supported`);
    lines.push({ indent: text.length - text.trimStart().length, text: text.trimStart(), no: i + 1 });
  });
  let pos = 0;

  function block(indent: number): YamlValue {
    const first = lines[pos];
    if (!first || first.indent < indent) return null;
    if (first.text === '-' || first.text.startsWith('- ')) return sequence(first.indent);
    return mapping(first.indent);
  }

  function sequence(indent: number): YamlValue[] {
    const out: YamlValue[] = [];
    while (pos < lines.length && lines[pos].indent === indent && (lines[pos].text === '-' || lines[pos].text.startsWith('- '))) {
      const line = lines[pos];
      const rest = line.text.slice(1).trimStart();
      if (rest === '') { pos++; out.push(block(indent + 1)); continue; }
      if (keySeparator(rest) > 0) {
        // "- key: value" starts a mapping whose keys sit at the column of "key"
        const col = indent + (line.text.length - rest.length);
        lines[pos] = { indent: col, text: rest, no: line.no };
        out.push(mapping(col));
        continue;
      }
      pos++;
      out.push(value(rest, line.no));
    }
    if (pos < lines.length && lines[pos].indent > indent) throw new YamlError(`line ${lines[pos].no}: bad indentation`);
    return out;
  }

  function mapping(indent: number): { [key: string]: YamlValue } {
    const out: { [key: string]: YamlValue } = {};
    while (pos < lines.length && lines[pos].indent === indent) {
      const line = lines[pos];
      if (line.text.startsWith('- ')) throw new YamlError(`line ${line.no}: sequence item where a key was expected`);
      const sep = keySeparator(line.text);
      if (sep <= 0) throw new YamlError(`line ${line.no}: expected "key: value"`);
      const key = scalar(line.text.slice(0, sep), line.no);
      if (key === null) throw new YamlError(`line ${line.no}: empty key`);
      if (Object.prototype.hasOwnProperty.call(out, key)) throw new YamlError(`line ${line.no}: duplicate key "${key}"`);
      const rest = line.text.slice(sep + 1);
      pos++;
      if (rest.trim() === '') {
        const next = lines[pos];
        if (next && (next.indent > indent || (next.indent === indent && next.text.startsWith('- ')))) {
          out[key] = next.indent === indent ? sequence(indent) : block(next.indent);
        } else out[key] = null;
      } else out[key] = value(rest, line.no);
    }
    if (pos < lines.length && lines[pos].indent > indent) throw new YamlError(`line ${lines[pos].no}: bad indentation`);
    return out;
  }

  const doc = block(0);
  if (pos < lines.length) throw new YamlError(`line ${lines[pos].no}: unexpected content`);
  return doc;
}
