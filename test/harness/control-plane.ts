// Moved to cli/local/control-plane.ts (`edge dev` uses it too; production code never imports test/).
export * from '../../cli/local/control-plane.js';
