import { Store } from '../src/store';
const s = new Store('/tmp/fill-test.db');
const now = Date.now();
const mm = s.sqlite.prepare('SELECT min(id), max(id) FROM bans').raw();
for (let k = 0; k < 5; k++) {
  let t = performance.now(); mm.get(); const a = performance.now() - t;
  t = performance.now(); s.listBansPage(now, { all: true, limit: 2000, before: 500000 - k * 20000 }); console.log('minmax', a.toFixed(1), 'rows', (performance.now() - t).toFixed(1));
}
console.log(s.sqlite.prepare('EXPLAIN QUERY PLAN SELECT min(id), max(id) FROM bans').all());
