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
};
const AGENT_ROOT = ['./node-agent/agent.ts', './node-agent/admin-server.ts'];
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
      // Type-only imports count too: a cycle of types is still a knot a newcomer must untie.
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
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
);
