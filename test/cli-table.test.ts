import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatTable, formatSpan } from '../src/cli/table';

test('tables align, control characters never reach the terminal; spans read well', () => {
  assert.equal(formatTable([{ a: 'x', n: 5 }, { a: 'longer', n: 123 }], [{ header: 'NAME', get: (r) => r.a }, { header: 'N', get: (r) => r.n, right: true }]), 'NAME      N\nx         5\nlonger  123\n');
  assert.equal(formatTable([{ a: 'evil\x1b[2J' }], [{ header: 'A', get: (r) => r.a }]), 'A\nevil?[2J\n', 'control characters never reach the terminal');
  assert.deepEqual([45_000, 12 * 60_000, 3 * 3_600_000 + 5 * 60_000, 50 * 3_600_000].map(formatSpan), ['45s', '12m', '3h 5m', '2d 2h']);
});
