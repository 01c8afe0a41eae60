// Moved to cli/local/tools.ts (`edge dev` uses it too; production code never imports test/).
export * from '../../cli/local/tools.js';
