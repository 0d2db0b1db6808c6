#!/usr/bin/env node
// Prints the gzipped size of the built UI (ui/dist) file by file and in total, and fails when
// the total is over the budget (150 KB gzipped, DESIGN.md). Run `npm run build` first.
//   node bench/bundle-size.mjs [--budget-kb 150] [--json]

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const args = process.argv.slice(2);
const budgetKb = Number(args[args.indexOf('--budget-kb') + 1]) || 150;
const asJson = args.includes('--json');

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

let files;
try {
  files = walk(root);
} catch {
  console.error(`no build at ${root}: run \`npm run build\` first`);
  process.exit(2);
}

const rows = files
  .filter((f) => /\.(js|css|html|svg|json|woff2?)$/.test(f))
  .map((f) => {
    const buf = readFileSync(f);
    return {
      file: relative(root, f),
      bytes: buf.length,
      gzip: gzipSync(buf, { level: 9 }).length,
      brotli: brotliCompressSync(buf, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length,
    };
  })
  .sort((a, b) => b.gzip - a.gzip);

const total = rows.reduce((t, r) => ({ bytes: t.bytes + r.bytes, gzip: t.gzip + r.gzip, brotli: t.brotli + r.brotli }), { bytes: 0, gzip: 0, brotli: 0 });
const kb = (n) => (n / 1024).toFixed(1);

if (asJson) {
  console.log(JSON.stringify({ files: rows, total, budget_kb: budgetKb }, null, 2));
} else {
  for (const r of rows) console.log(`${r.file.padEnd(36)} ${kb(r.bytes).padStart(8)} KB  gzip ${kb(r.gzip).padStart(7)} KB  br ${kb(r.brotli).padStart(7)} KB`);
  console.log(`${'total'.padEnd(36)} ${kb(total.bytes).padStart(8)} KB  gzip ${kb(total.gzip).padStart(7)} KB  br ${kb(total.brotli).padStart(7)} KB`);
  console.log(`budget: ${budgetKb} KB gzipped — ${total.gzip <= budgetKb * 1024 ? 'OK' : 'OVER'}`);
}
process.exit(total.gzip <= budgetKb * 1024 ? 0 : 1);
