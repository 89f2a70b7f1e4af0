// Read Key Vault secrets through kvproxy with Node.js 20's built-in fetch.
//
//   KVPROXY_URL=http://127.0.0.1:8380 node example.mjs
const BASE = process.env.KVPROXY_URL ?? "http://127.0.0.1:8380";

class KvproxyError extends Error {
  constructor(status, diagnosis, detail) {
    super(`${status} ${diagnosis ?? "-"}: ${detail}`);
    Object.assign(this, { status, diagnosis, detail });
  }
}

async function get(url) {
  // kvproxy refuses requests without "Metadata: true" (SSRF protection).
  const resp = await fetch(url, { headers: { Metadata: "true" }, signal: AbortSignal.timeout(30_000) });
  const text = await resp.text();
  let doc = {};
  try { doc = JSON.parse(text); } catch { /* not JSON */ }
  if (!resp.ok) {
    const diagnosis = resp.headers.get("x-kvproxy-diagnosis") ?? doc.kvproxy?.diagnosis;
    throw new KvproxyError(resp.status, diagnosis, doc.kvproxy?.detail ?? doc.error?.message ?? text);
  }
  return doc;
}

const readSecret = async (name) => (await get(`${BASE}/secrets/${encodeURIComponent(name)}`)).value;

// Follows nextLink (kvproxy points it back at itself) until the last page.
async function listSecretNames(pageSize = 1) {
  const names = [];
  let pages = 0;
  for (let url = `${BASE}/secrets?maxresults=${pageSize}`; url; ) {
    const page = await get(url);
    pages++;
    // An item's id is the vault's own URL: use its path with kvproxy.
    const pageNames = page.value.map((item) => new URL(item.id).pathname.split("/").pop());
    console.log(`page ${pages}: ${pageNames.join(", ")}`);
    names.push(...pageNames);
    url = page.nextLink;
  }
  return { names, pages };
}

console.log("db-password:", await readSecret("db-password"));
const { names, pages } = await listSecretNames();
console.log(`listed ${names.length} secrets in ${pages} pages`);
try {
  await readSecret("forbidden-rbac");
  console.error("forbidden-rbac: expected a 403");
  process.exit(1);
} catch (e) {
  if (!(e instanceof KvproxyError)) throw e;
  console.log(`forbidden-rbac: ${e.status} ${e.diagnosis}: ${e.detail}`);
}
