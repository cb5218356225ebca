// Runs graphql-http's server audits against a live endpoint and prints their results as JSON.
// Usage: node graphql_http_audit.mjs <url> <api key>   (graphql-http resolved from NODE_PATH)
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(pathToFileURL(`${process.env.NODE_PATH}/`));
const { serverAudits } = require('graphql-http');
const [url, key] = process.argv.slice(2);
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  headers.set('authorization', `Bearer ${key}`);
  return fetch(input, { ...init, headers });
};
const results = [];
for (const audit of serverAudits({ url, fetchFn })) {
  const result = await audit.fn();
  results.push({ id: audit.id, name: audit.name, status: result.status, reason: result.reason });
}
console.log(JSON.stringify(results));
