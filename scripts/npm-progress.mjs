// `npm ci --foreground-scripts ... 2>&1 | node scripts/npm-progress.mjs LOG`: what scripts/setup.sh
// shows while npm installs, instead of minutes of silence. The full output goes to LOG; the
// terminal gets one line per phase, one per C++ file node-gyp compiles (isolated-vm has no
// prebuilt binary here and is most of the time), a line every 20 s when nothing else was
// said, and every error line as npm printed it. Plain Node, no packages: node_modules is
// what is being installed.
import { createWriteStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { clearInterval, setInterval } from 'node:timers';

const log = createWriteStream(process.argv[2] ?? '/dev/null');
const started = Date.now();
const HEARTBEAT_MS = Number(process.env.EDGE_PROGRESS_HEARTBEAT_MS ?? 20_000);

const elapsed = () => {
  const s = Math.round((Date.now() - started) / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
};
let phase = 'fetching and unpacking packages';
let lastSaid = Date.now();
const say = (text) => { process.stderr.write(`[setup]   ${text} (${elapsed()})\n`); lastSaid = Date.now(); };

/** C++ files of the package being compiled, from its binding.gyp; 0 when unknown. */
function cxxTotal(pkg) {
  try { return new Set(readFileSync(`node_modules/${pkg}/binding.gyp`, 'utf8').match(/['"][^'"]+\.(cc|cpp|c)['"]/g)).size; } catch { return 0; }
}

let pkg = '';
let compiled = 0;
let total = 0;
say(phase);
const timer = setInterval(() => {
  if (Date.now() - lastSaid >= HEARTBEAT_MS) say(`still ${phase}`);
}, Math.min(HEARTBEAT_MS, 1000));

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  log.write(line + '\n');
  let m;
  if ((m = /^> (\S+?)@\S+ (preinstall|install|postinstall)$/.exec(line))) {
    // npm's banner before a package's install script (--foreground-scripts).
    pkg = m[1];
    compiled = 0;
    total = cxxTotal(pkg);
    phase = `running the ${m[2]} script of ${pkg}`;
    say(pkg === 'isolated-vm' ? `${phase}: node-gyp compiles it from C++ (the long part: about 3-4 minutes on 2 cores)` : phase);
  } else if ((m = /^\s+CXX\(target\) \S*?([^/\s]+)\.o$/.exec(line))) {
    compiled += 1;
    phase = `compiling ${pkg || 'a native module'}`;
    say(`${pkg}: compiled ${m[1]} (${compiled <= total ? `${compiled} of about ${total}` : compiled} files)`);
  } else if (/^\s+SOLINK_MODULE\(target\)/.test(line)) {
    phase = `linking ${pkg}`;
    say(phase);
  } else if (/^(added|removed|changed) \d+ packages?/.test(line) || /ERR!|^npm (error|ERR)|\berror\b:|^make: \*\*\*/.test(line)) {
    process.stderr.write(line + '\n');
    lastSaid = Date.now();
  }
}
clearInterval(timer);
log.end();
