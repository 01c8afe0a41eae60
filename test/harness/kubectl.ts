// Moved to cli/local/kubectl.ts (`edge dev` uses it too; production code never imports test/).
export * from '../../cli/local/kubectl.js';
