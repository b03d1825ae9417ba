#!/usr/bin/env bash
# The genqueue HTTP gateway from a shell: create (with an Idempotency-Key), repeat the create
# (same id, no second video), long-poll until it ends, cancel, stats.
#
#   GENQUEUE_GATEWAY_URL=http://127.0.0.1:8000 GENQUEUE_API_KEY=key-1 \
#     bash examples/curl.sh "a paper boat on a canal"
#
# Environment:
#   GENQUEUE_GATEWAY_URL  the gateway (default http://127.0.0.1:8000)
#   GENQUEUE_API_KEY      a key from the gateway's GENQUEUE_API_KEYS (required)
#   GENQUEUE_MODEL        default minimax/video-01-director
#   GENQUEUE_TIMEOUT_S    give up waiting after this many seconds (default 900)
#   IDEMPOTENCY_KEY       default: made up from the time and this shell's pid
# Needs bash and curl (>= 7.76 for --fail-with-body); pretty-prints with jq when it is
# installed, and works without it. Exits 0 when the generation completed, 1 otherwise.
set -euo pipefail

BASE="${GENQUEUE_GATEWAY_URL:-http://127.0.0.1:8000}"
BASE="${BASE%/}"
KEY="${GENQUEUE_API_KEY:?set GENQUEUE_API_KEY to a key listed in the gateway GENQUEUE_API_KEYS}"
MODEL="${GENQUEUE_MODEL:-minimax/video-01-director}"
TIMEOUT_S="${GENQUEUE_TIMEOUT_S:-900}"
IDEM="${IDEMPOTENCY_KEY:-curl-$(date +%s)-$$}"
PROMPT="${1:-a paper boat on a canal}"

HEADERS="$(mktemp)"
trap 'rm -f "$HEADERS"' EXIT

have_jq() { command -v jq >/dev/null 2>&1; }

# api METHOD PATH [curl options...]: print the response body; on an HTTP error print it to
# stderr and fail. Response headers land in $HEADERS. --retry resends on 408/429/5xx and
# timeouts: safe for the POST as well, because it carries an Idempotency-Key.
api() {
  local method="$1" path="$2" out
  shift 2
  if ! out="$(curl -sS --fail-with-body --retry 3 --max-time 90 -X "$method" "$BASE$path" \
    -H "Authorization: Bearer $KEY" -H 'Accept: application/json' -D "$HEADERS" "$@")"; then
    echo "error: $method $path: ${out:-no response}" >&2
    return 1
  fi
  printf '%s\n' "$out"
}

# show: pretty JSON (jq) or as is.
show() { if have_jq; then jq .; else cat; fi; }

# field NAME: a top-level string field of the JSON on stdin (the gateway answers compact JSON).
field() {
  if have_jq; then
    jq -r --arg f "$1" '.[$f] // empty'
  else
    sed -n "s/.*[{,]\"$1\":\"\([^\"]*\)\".*/\1/p"
  fi
}

# json_string TEXT: TEXT as a JSON string literal.
json_string() {
  if have_jq; then
    jq -Rn --arg s "$1" '$s'
  else
    local s=$1 bs='\' dq='"'
    s=${s//"$bs"/"$bs$bs"}
    s=${s//"$dq"/"$bs$dq"}
    printf '"%s"' "$s"
  fi
}

status_line() { head -n 1 "$HEADERS" | tr -d '\r'; }
location() { sed -n 's/^[Ll]ocation: *//p' "$HEADERS" | tr -d '\r'; }

create() { # create IDEMPOTENCY_KEY
  api POST /v1/generations -H "Idempotency-Key: $1" -H 'Content-Type: application/json' \
    -d "{\"model\": $(json_string "$MODEL"), \"prompt\": $(json_string "$PROMPT"),
         \"metadata\": {\"source\": \"curl-example\"}}"
}

echo "== create (Idempotency-Key: $IDEM)"
created="$(create "$IDEM")"
echo "$(status_line)  Location: $(location)"
show <<<"$created"
id="$(field id <<<"$created")"

echo "== the same Idempotency-Key again: nothing new is bought, the same id comes back"
again="$(field id <<<"$(create "$IDEM")")"
echo "$(status_line)  id $again"
if [[ "$again" != "$id" ]]; then
  echo "error: expected id $id, got $again" >&2
  exit 1
fi

echo "== long-poll (?wait=30) until $id ends"
deadline=$((SECONDS + TIMEOUT_S))
while :; do
  left=$((deadline - SECONDS))
  if ((left <= 0)); then
    echo "error: still not finished after $TIMEOUT_S s (it keeps running)" >&2
    exit 1
  fi
  record="$(api GET "/v1/generations/$id?wait=$((left < 30 ? left : 30))")"
  status="$(field status <<<"$record")"
  echo "  status: $status"
  case "$status" in
    completed | failed | cancelled | expired) break ;;
  esac
done
show <<<"$record"

echo "== cancel: a second generation, cancelled right away"
other="$(field id <<<"$(create "$IDEM-to-cancel")")"
cancelled="$(api DELETE "/v1/generations/$other")"
echo "$(status_line)  outcome: $(field outcome <<<"$cancelled")"
echo "== cancel the finished one: nothing changes"
echo "outcome: $(api DELETE "/v1/generations/$id" | field outcome)"

echo "== stats"
api GET /v1/stats | show

if [[ "$status" != "completed" ]]; then
  echo "generation $id ended $status" >&2
  exit 1
fi
echo "completed: $(field video_url <<<"$record")  cost \$$(field cost_usd <<<"$record")"
