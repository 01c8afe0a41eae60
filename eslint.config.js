import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

// The layers of docs/architecture.md, enforced: each folder may import only the folders
// listed for it (and common/ and npm packages). A wrong-way import or any import cycle fails
// `npm run lint`, which `make test` runs.
const AGENT_LAYERS = {
  abi: [],
  sockets: ['abi'],
  isolate: ['abi', 'sockets'],
  bindings: ['abi', 'sockets', 'isolate'],
  peer: ['abi'],
  actors: ['abi', 'sockets', 'isolate', 'bindings', 'peer'],
  serving: ['abi', 'sockets', 'isolate', 'peer'],
  control: ['abi', 'isolate', 'serving'],
  hosts: ['serving'],
};
const AGENT_ROOT = ['./node-agent/agent.ts', './node-agent/admin-server.ts', './node-agent/isolate-host.ts'];
const NOT_PRODUCTION = ['./test', './bench', './scripts'];
const why = (target, allowed) => `${target} may import only ${allowed} (see docs/architecture.md)`;

const zones = [
  ...Object.entries(AGENT_LAYERS).map(([layer, allowed]) => ({
    target: `./node-agent/${layer}`,
    from: [
      ...Object.keys(AGENT_LAYERS).filter((l) => l !== layer && !allowed.includes(l)).map((l) => `./node-agent/${l}`),
      ...AGENT_ROOT, './operator', './cli', ...NOT_PRODUCTION,
    ],
    message: why(`node-agent/${layer}/`, ['common/', ...allowed.map((l) => `node-agent/${l}/`)].join(', ')),
  })),
  { target: AGENT_ROOT, from: ['./operator', './cli', ...NOT_PRODUCTION], message: why('node-agent/', 'common/ and node-agent/') },
  { target: './common', from: ['./node-agent', './operator', './cli', ...NOT_PRODUCTION], message: why('common/', 'common/ and npm packages') },
  {
    target: './operator/runtime',
    from: ['./operator/controllers', './operator/operator.ts', './node-agent', './cli', ...NOT_PRODUCTION],
    message: why('operator/runtime/', 'common/ and operator/runtime/'),
  },
  {
    target: './operator/controllers',
    from: ['./operator/operator.ts', './node-agent', './cli', ...NOT_PRODUCTION],
    message: why('operator/controllers/', 'common/, operator/runtime/ and operator/controllers/'),
  },
  { target: './operator/operator.ts', from: ['./node-agent', './cli', ...NOT_PRODUCTION], message: why('operator/', 'common/ and operator/') },
  { target: './cli', from: NOT_PRODUCTION, message: why('cli/', 'common/, node-agent/, operator/ and cli/') },
  {
    // The in-memory fakes beside the interfaces are for tests (and for each other) only.
    target: ['./common/**', './operator/**', './cli/**', './node-agent/*.ts', './node-agent/*/*.ts'],
    from: ['./node-agent/*/fake/**'],
    message: 'a fake/ folder is for tests only (see docs/testing.md)',
  },
];

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'bench/results/', 'charts/', 'crds/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      ...importX.flatConfigs.typescript.settings,
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      'import-x/no-restricted-paths': ['error', { zones }],
      // import-x skips type-only imports by design; `npm run check:cycles` (dpdm) catches
      // those too, since a cycle of types is still a knot a newcomer must untie.
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
    },
  },
  {
    // The agent's code path (cli/agent.ts, node-agent/, common/) loads no client-node, so the
    // agent image ships without it; nor esbuild or tsx, devDependencies absent from the images
    // (the shim is prebuilt by `npm run build`). Types are erased, so they may be imported.
    // test/agent/built-agent.test.ts runs the built agent with all three removed.
    files: ['cli/agent.ts', 'node-agent/**/*.ts', 'common/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', {
        paths: ['@kubernetes/client-node', 'esbuild', 'tsx'].map((name) => ({
          name, allowTypeImports: true, message: 'not on the agent\'s code path: the agent image has no client-node, esbuild or tsx (docs/architecture.md)',
        })),
      }],
    },
  },
  {
    // A KV bucket is read through followBucket (common/kv-follower.ts), which restarts a
    // broken watch and re-lists; a bare kv.watch() stops following silently when it throws.
    // zod as `import * as z`: esbuild then bundles only the zod the code uses
    // (scripts/build.mjs); `import { z }` is one namespace object over all of zod, its 64
    // locales included, which every process of the agent loaded (docs/agent.md).
    files: ['common/**/*.ts', 'node-agent/**/*.ts', 'operator/**/*.ts', 'cli/**/*.ts'],
    ignores: ['common/kv-follower.ts'],
    rules: {
      'no-restricted-syntax': ['error', {
        selector: "CallExpression[callee.type='MemberExpression'][callee.property.name='watch'][arguments.0.type='ObjectExpression']",
        message: 'read a KV bucket with followBucket() from common/kv-follower.ts, not kv.watch() (docs/architecture.md)',
      }, {
        selector: "ImportDeclaration[source.value='zod'][importKind!='type'] > ImportSpecifier[imported.name='z'][importKind!='type']",
        message: "import * as z from 'zod': the bundle then holds only the zod this code uses (scripts/build.mjs)",
      }],
    },
  },
  {
    files: ['**/*.mjs', '**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
  {
    // The isolate shim runs in a bare V8 context: no Node globals, and its own console/URL
    // must be imported from their modules (the bundle is built before they are installed).
    files: ['node-agent/shim/**/*.js'],
    languageOptions: { globals: { process: 'off', console: 'off', URL: 'off' } },
  },
  {
    // Workers in examples/ run in an isolate: the Workers globals, not Node's.
    files: ['examples/**/*.js'],
    languageOptions: {
      globals: Object.fromEntries(['Request', 'Response', 'Headers', 'fetch', 'URL', 'URLSearchParams', 'WebAssembly', 'WebSocketPair',
        'crypto', 'ReadableStream', 'TextEncoder', 'TextDecoder', 'structuredClone', 'setTimeout', 'console'].map((g) => [g, 'readonly'])),
    },
  },
);
