/**
 * The house rule on size: no file in src/ over about 300 lines, no function over about 60.
 * `node --import tsx scripts/check-sizes.ts [maxFileLines] [maxFunctionLines]`: lists what is
 * over, exits 1 when anything is.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';

const ROOT = join(__dirname, '..');
const MAX_FILE = Number(process.argv[2] ?? 300);
const MAX_FN = Number(process.argv[3] ?? 60);

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? files(p) : p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

const over: string[] = [];
for (const file of files(join(ROOT, 'src'))) {
  const text = readFileSync(file, 'utf8');
  const rel = relative(ROOT, file);
  const lines = text.split('\n').length;
  if (lines > MAX_FILE) over.push(`${rel}: ${lines} lines`);
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
  const visit = (node: ts.Node) => {
    if (ts.isFunctionLike(node) && (node as ts.FunctionLikeDeclaration).body) {
      const start = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line;
      const end = sf.getLineAndCharacterOfPosition(node.getEnd()).line;
      const n = end - start + 1;
      const name = (node as ts.FunctionLikeDeclaration).name?.getText(sf) ?? '(anonymous)';
      if (n > MAX_FN) over.push(`${rel}:${start + 1}: ${name} ${n} lines`);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
}
for (const o of over) console.log(o);
process.exit(over.length ? 1 : 0);
