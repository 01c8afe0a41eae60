#!/usr/bin/env -S node --no-node-snapshot
// The `edge` command. Runs the TypeScript sources through tsx's loader; --no-node-snapshot
// is required by isolated-vm on Node >= 20 (the shebang passes it, so does the Makefile).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
