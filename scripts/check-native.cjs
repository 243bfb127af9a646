#!/usr/bin/env node
// Setup's last word on the native module: better-sqlite3 must load and open a database
// here, or setup fails with what to do (npm 12 skips install scripts it was not told to allow).
//   node scripts/check-native.cjs [project-dir]
'use strict';
const { resolve } = require('node:path');

const dir = resolve(process.argv[2] || resolve(__dirname, '..'));
try {
  const Database = require(require.resolve('better-sqlite3', { paths: [dir] }));
  new Database(':memory:').prepare('select 1').get();
  console.log(`setup: better-sqlite3 loads on Node ${process.versions.node}`);
} catch (err) {
  const why = String(err && err.message ? err.message : err).split('\n')[0];
  console.error([
    `setup: FAILED: better-sqlite3 does not load on Node ${process.versions.node} in ${dir}: ${why}`,
    'setup: its install script (which builds the native module) did not run or failed.',
    'setup: npm 12 runs only the install scripts package.json\'s "allowScripts" allows (better-sqlite3 is;',
    'setup: check that npm ci printed no "skipped" list), and building needs python3, make and g++.',
    'setup: then: npm rebuild better-sqlite3',
  ].join('\n'));
  process.exit(1);
}
