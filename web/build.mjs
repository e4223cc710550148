// Builds dist/ from src/: one JavaScript bundle and one stylesheet, each
// named by the hash of its content so that they can be cached for good, and
// index.html pointing at them. The output is committed: kezd embeds it, and
// running kezd needs no Node.js. `node build.mjs OUTDIR` writes elsewhere
// (the Go test that checks dist/ is current uses that).
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, 'dist');

const common = { bundle: true, minify: true, write: false, legalComments: 'none', logLevel: 'warning', absWorkingDir: here };
const [js, css] = await Promise.all([
  build({ ...common, entryPoints: ['src/app.js'], format: 'esm', target: 'es2022' }),
  build({ ...common, entryPoints: ['src/app.css'], target: 'chrome100' }),
]);

const hashed = (name, ext, bytes) => `${name}-${createHash('sha256').update(bytes).digest('hex').slice(0, 12)}.${ext}`;
const files = {
  'app.js': [hashed('app', 'js', js.outputFiles[0].contents), js.outputFiles[0].contents],
  'app.css': [hashed('app', 'css', css.outputFiles[0].contents), css.outputFiles[0].contents],
};

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'assets'), { recursive: true });
let html = readFileSync(join(here, 'src/index.html'), 'utf8');
for (const [key, [name, bytes]] of Object.entries(files)) {
  writeFileSync(join(out, 'assets', name), bytes);
  html = html.replace(`{{${key}}}`, name);
}
writeFileSync(join(out, 'index.html'), html);
