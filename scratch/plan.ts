import { Store } from '../src/store';
const s = new Store('/tmp/fill-test.db');
const orig = s.sqlite.prepare.bind(s.sqlite);
(s.sqlite as any).prepare = (sql: string) => { if (sql.includes('json_group_array') || sql.includes('AS bans LEFT JOIN')) console.log(orig('EXPLAIN QUERY PLAN ' + sql).all(...(sql.includes('json_group_array') ? [0,1,2,3] : [1,2,3])).map((r: any) => r.detail)); return orig(sql); };
const now = Date.now();
for (let k = 0; k < 3; k++) {
let t = performance.now(); s.listBansPageJson(now, { all: true, limit: 2000, before: 600000 - k * 20000 }); console.log('json', performance.now() - t);
t = performance.now(); s.listBansPage(now, { all: true, limit: 2000, before: 500000 - k * 20000 }); console.log('rows', performance.now() - t);
}
