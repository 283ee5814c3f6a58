// `npm start` and `npm test` run this first. The app imports @st-peter/client from
// ../../client/ts, a link npm does not build: build its dist/ here, installing its
// dependencies first when they are missing.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const clientDir = fileURLToPath(new URL("../../client/ts/", import.meta.url));

function npm(args, quiet = false) {
  const run = spawnSync("npm", args, { cwd: clientDir, stdio: quiet ? "ignore" : "inherit" });
  return run.status === 0;
}

if (!npm(["ls", "--depth=0"], true)) {
  console.log(`installing the TypeScript client's dependencies (npm ci in ${clientDir})`);
  if (!npm(["ci", "--no-audit", "--no-fund"])) {
    process.exit(1);
  }
}
console.log("building the TypeScript client (client/ts/dist)");
if (!npm(["run", "build"])) {
  process.exit(1);
}
