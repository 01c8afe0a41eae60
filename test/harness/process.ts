// Moved to cli/local/process.ts (`edge dev` uses it too; production code never imports test/).
export * from '../../cli/local/process.js';
