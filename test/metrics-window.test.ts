import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventWindow } from '../src/metrics/window';

test('EventWindow: the last 60 seconds by kind, older seconds dropped', () => {
  const w = new EventWindow();
  const t = 1_700_000_000_000;
  w.add('A', t); w.add('A', t + 500); w.add('B', t + 30_000);
  assert.deepEqual(w.lastMinute(t + 30_000), { total: 3, byKind: { A: 2, B: 1 } });
  assert.deepEqual(w.lastMinute(t + 61_000), { total: 1, byKind: { B: 1 } });
  w.add('C', t + 60_000); // same slot as t, a minute later: replaces it
  assert.deepEqual(w.lastMinute(t + 60_500), { total: 2, byKind: { B: 1, C: 1 } });
  assert.deepEqual(w.lastMinute(t + 200_000), { total: 0, byKind: {} });
});
