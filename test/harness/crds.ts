// Moved to cli/local/crds.ts (`edge dev` uses it too; production code never imports test/).
export * from '../../cli/local/crds.js';
