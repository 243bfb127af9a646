import { test } from 'node:test';
import assert from 'node:assert/strict';
import { networkOf } from '../src/control/routes';

test('networkOf masks the address to the prefix; a bad prefix is refused', () => {
  assert.equal(networkOf('198.51.100.50/28')?.text, '198.51.100.48/28');
  assert.equal(networkOf('2001:db8::ff/64')?.text, '2001:db8::/64');
  assert.equal(networkOf('10.1.2.3')?.text, '10.1.2.3');
  assert.equal(networkOf('10.1.2.3/33'), null);
});
