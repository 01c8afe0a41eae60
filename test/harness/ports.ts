// Moved to cli/local/ports.ts (`edge dev` uses it too; production code never imports test/).
export * from '../../cli/local/ports.js';
