#!/usr/bin/env bash
# Read Key Vault secrets through kvproxy with curl and jq.
#
#   KVPROXY_URL=http://127.0.0.1:8380 ./example.sh
set -euo pipefail
base=${KVPROXY_URL:-http://127.0.0.1:8380}

# get URL: prints the body; on an HTTP error prints "STATUS DIAGNOSIS: DETAIL"
# on stderr and returns 1. kvproxy refuses requests without "Metadata: true".
get() {
	local body status headers
	headers=$(mktemp)
	body=$(curl -sS -H 'Metadata: true' -D "$headers" -w '\n%{http_code}' "$1")
	status=${body##*$'\n'}
	body=${body%$'\n'*}
	if [[ $status != 2?? ]]; then
		local diagnosis
		diagnosis=$(sed -n 's/^[Xx]-[Kk]vproxy-[Dd]iagnosis: *\([^[:space:]]*\).*/\1/p' "$headers")
		rm -f "$headers"
		echo "$status ${diagnosis:--}: $(jq -r '.kvproxy.detail // .error.message // "?"' <<<"$body" 2>/dev/null || echo "$body")" >&2
		return 1
	fi
	rm -f "$headers"
	printf '%s\n' "$body"
}

echo "db-password: $(get "$base/secrets/db-password" | jq -r .value)"

# Follow nextLink (kvproxy points it back at itself) until the last page. An
# item's id is the vault's own URL: use its path with kvproxy.
url="$base/secrets?maxresults=1" pages=0 count=0
while [[ -n $url ]]; do
	page=$(get "$url")
	pages=$((pages + 1))
	names=$(jq -r '[.value[].id | sub("^https://[^/]+/secrets/"; "")] | join(", ")' <<<"$page")
	count=$((count + $(jq '.value | length' <<<"$page")))
	echo "page $pages: $names"
	url=$(jq -r '.nextLink // empty' <<<"$page")
done
echo "listed $count secrets in $pages pages"

if err=$(get "$base/secrets/forbidden-rbac" 2>&1 >/dev/null); then
	echo "forbidden-rbac: expected a 403" >&2
	exit 1
fi
echo "forbidden-rbac: $err"
