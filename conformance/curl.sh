#!/usr/bin/env bash
# curl.sh runs the client conformance cases (conformance/README.md) with
# curl against the gateway's REST API, comparing JSON with jq:
#
#   ATASKS_GATEWAY_URL=http://127.0.0.1:8080 ATASKS_CONFORMANCE_CASES=conformance/cases.json \
#   ATASKS_CONFORMANCE_RUN=$RANDOM conformance/curl.sh
#
# A call is a POST with ?wait= (and ?timeout=, Idempotency-Key), then GET
# ?wait= long-polls until the invocation is final; a cancel is a DELETE.
# Every case runs at once, in the background; the lines come out in the
# file's order. Exit 0: all passed, 1: one failed, 2: could not run.
set -euo pipefail

die() {
  echo "curl.sh: $*" >&2
  exit 2
}

if [ -z "${ATASKS_GATEWAY_URL:-}" ] || [ -z "${ATASKS_CONFORMANCE_CASES:-}" ] || [ -z "${ATASKS_CONFORMANCE_RUN:-}" ]; then
  die "set ATASKS_GATEWAY_URL, ATASKS_CONFORMANCE_CASES and ATASKS_CONFORMANCE_RUN"
fi
command -v curl >/dev/null || die "needs curl"
command -v jq >/dev/null || die "needs jq"

base=${ATASKS_GATEWAY_URL%/}
cases=$ATASKS_CONFORMANCE_CASES
run_id=$ATASKS_CONFORMANCE_RUN
case_seconds=30 # each case's limit
poll_wait=10s   # each long-poll's ?wait=
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# problems lists what this runner does not understand in the cases file:
# an unknown field anywhere is one.
problems() {
  jq -r '
    def unknown($where; $allowed): keys - $allowed | select(length > 0) | "\($where): unknown field(s) \(join(", "))";
    def duration: test("^(0|(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$");
    unknown("the file"; ["version", "cases"]),
    (select(.version != 1) | "version \(.version), want 1"),
    (.cases | to_entries[] | "case \(.key) (\(.value.name))" as $where | .value |
      unknown($where; ["name", "ns", "task", "input", "input_repeat", "wait", "timeout", "delay", "cancel_after_ms", "idempotency_key", "parallel", "expect"]),
      (.input_repeat // {} | unknown("\($where).input_repeat"; ["text", "times"])),
      (.expect | unknown("\($where).expect"; ["result", "echo", "error"])),
      (.expect.error // {} | unknown("\($where).expect.error"; ["code", "message", "details", "retryable", "pointers"])),
      (select(.expect.error.pointers | . != null and (type != "array" or any(.[]; type != "string")))
        | "\($where): expect.error.pointers: want a list of strings"),
      (select((.name | type) != "string" or (.task | type) != "string") | "\($where): name and task are required"),
      (select(has("input") and has("input_repeat")) | "\($where): both input and input_repeat"),
      (select([.expect | has("result"), .echo == true, has("error")] | map(select(.)) | length != 1)
        | "\($where): expect: want exactly one of result, echo (true) and error"),
      (select(.expect | has("error") and (.error.code | type) != "string") | "\($where): expect.error: code is required"),
      (.wait, .timeout, .delay | select(. != null and (type != "string" or (duration | not))) | "\($where): \(tojson) is not a Go duration"),
      (.cancel_after_ms, .parallel | select(. != null and (type != "number" or . < 0)) | "\($where): \(tojson) is not a count")
    )' "$cases"
}

# req METHOD URL OUT [curl args…]: one request; the body goes to OUT, the
# HTTP status to stdout. It fails, with why on stdout, if curl does.
req() {
  local method=$1 url=$2 out=$3 status
  shift 3
  if status=$(curl -sS --max-time 40 -X "$method" -H 'Accept: application/json' -o "$out" -w '%{http_code}' "$@" "$url" 2>"$out.err"); then
    echo "$status"
    return 0
  fi
  echo "$method $url: $(<"$out.err")"
  return 1
}

# is_final FILE: the invocation in FILE is final.
is_final() {
  jq -e '.state | IN("succeeded", "failed", "cancelled", "timed_out")' "$1" >/dev/null
}

# as_outcome STATUS FILE: turns the answer in FILE into an outcome: an
# invocation stays; a problem+json becomes {"error": {code, message,
# retryable}}, with details {"errors": […]} when it has errors (bad_input),
# as an error frame carries them.
as_outcome() {
  local status=$1 file=$2
  case $status in 200 | 202) return 0 ;; esac
  if ! jq --argjson s "$status" '{error: ({code: (.code // "http_\($s)"), message: .detail, retryable: ($s == 502 or $s == 503 or $s == 504)}
    + if (.errors | type) == "array" then {details: {errors: .errors}} else {} end)}' \
    "$file" >"$file.problem" 2>/dev/null; then
    echo "HTTP $status: $(head -c 200 "$file")"
    return 1
  fi
  mv "$file.problem" "$file"
}

# call OUT [KEY]: calls the case's task once (a case without an input
# posts no body), with Idempotency-Key KEY if given, cancelling it after
# cancel_ms if set, and writes its outcome to OUT.
call() {
  local out=$1 key=${2:-} status location
  local query="wait=${first_wait:-10s}" args=(-H 'Content-Type: application/json')
  [ "$has_input" = false ] || args+=(--data-binary "@$dir/input.json")
  [ -z "$cancel_ms" ] || query="wait=0s" # the answer names the invocation to cancel
  [ -z "$timeout" ] || query+="&timeout=$timeout"
  [ -z "$delay" ] || query+="&delay=$delay"
  [ -z "$key" ] || args+=(-H "Idempotency-Key: $key")
  status=$(req POST "$base/v1/ns/$ns/tasks/$task?$query" "$out" "${args[@]}") || { echo "$status"; return 1; }
  as_outcome "$status" "$out" || return 1
  [ "$status" = 200 ] || [ "$status" = 202 ] || return 0
  location="$base/v1/ns/$ns/invocations/$(jq -r '.id | @uri' "$out")"
  if [ -n "$cancel_ms" ] && ! is_final "$out"; then
    sleep "$(jq -n "$cancel_ms / 1000")"
    status=$(req DELETE "$location" "$out") || { echo "$status"; return 1; }
    as_outcome "$status" "$out" || return 1
  fi
  while [ "$status" = 200 ] || [ "$status" = 202 ]; do
    is_final "$out" && return 0
    ((SECONDS < deadline)) || { echo "no outcome within ${case_seconds}s"; return 1; }
    status=$(req GET "$location?wait=$poll_wait" "$out") || { echo "$status"; return 1; }
    as_outcome "$status" "$out" || return 1
  done
}

# check OUT: tells how the outcome in OUT misses the case's expect; nothing
# when it meets it. Numbers compare by value.
check() {
  jq -nr --slurpfile c "$dir/case.json" --slurpfile o "$1" --slurpfile in "$dir/input.json" '
    def short: tojson | if length > 200 then .[:200] + "…" else . end;
    # seconds since the epoch of an RFC 3339 UTC time, its fraction too
    def ts: capture("^(?<s>[^.Z]+)(?<f>[.][0-9]+)?Z$") | ((.s + "Z") | fromdateiso8601) + ("0" + (.f // ".0") | tonumber);
    # the pointers of a bad_input error'"'"'s details.errors; null when they are not that
    def pointers: .details | if type == "object" then .errors else null end
      | if type == "array" and all(.[]; type == "object" and (.pointer | type) == "string") then map(.pointer) else null end;
    $c[0].expect as $e | $o[0] as $o |
    if $e | has("error") then
      if $o.error == null then "want error \($e.error.code | tojson), got result \($o.result | short)"
      else [($e.error | del(.pointers) | to_entries[] | select(.value != $o.error[.key]) | "\(.key) \($o.error[.key] | short), want \(.value | short)"),
          ($o.error | pointers) as $got | ($e.error.pointers | select(. != null and ($got == null or ($got | sort) != sort))
            | "pointers \($got | short), want \(short)")]
        | select(length > 0) | "error \($o.error | short): \(join(", "))"
      end
    elif $o.error != null then "want a result, got error \($o.error | short)"
    # a delayed call started no earlier than its run_at (RFC 3339, UTC)
    elif $c[0].delay != null and ($o.run_at == null or $o.started_at == null or ($o.started_at | ts) < ($o.run_at | ts))
    then "a call delayed \($c[0].delay) started at \($o.started_at), its run_at \($o.run_at): want no earlier"
    else (if $e.echo then $in[0] else $e.result end) as $want
      | select($o.result != $want) | "want result \($want | short), got \($o.result | short)"
    end'
}

# call_and_check TAG: one call of the case (two with an idempotency key, which
# must name the same invocation); prints why it failed, nothing if it passed.
call_and_check() {
  local tag=$1 why
  if [ -z "$idem_key" ]; then
    why=$(call "$dir/$tag.json") && why=$(check "$dir/$tag.json")
    echo "$why"
    return
  fi
  local key="$idem_key-$run_id"
  why=$(call "$dir/$tag.1.json" "$key") && why=$(check "$dir/$tag.1.json") &&
    why=$(call "$dir/$tag.2.json" "$key") && why=$(check "$dir/$tag.2.json") &&
    why=$(jq -nr --slurpfile a "$dir/$tag.1.json" --slurpfile b "$dir/$tag.2.json" \
      'select($a[0].id != $b[0].id) | "the same key named invocations \($a[0].id) and \($b[0].id)"')
  echo "$why"
}

# run_case I: runs case I, its calls in parallel, and prints its line. It
# runs in a subshell of its own: the globals it sets (dir, ns, task,
# first_wait, timeout, delay, cancel_ms, idem_key, has_input, deadline) are this
# case's.
run_case() {
  dir="$work/$1"
  mkdir -p "$dir"
  jq ".cases[$1]" "$cases" >"$dir/case.json"
  local name parallel i why=""
  IFS=$'\x1f' read -r name ns task first_wait timeout delay cancel_ms idem_key parallel has_input < <(jq -r '[.name, (.ns // "default" | @uri),
    (.task | @uri), .wait, .timeout, .delay, .cancel_after_ms, .idempotency_key, .parallel, (has("input") or has("input_repeat") | tostring)]
    | map(. // "") | join("\u001f")' "$dir/case.json")
  deadline=$((SECONDS + case_seconds))
  jq -c 'if has("input_repeat") then .input_repeat | .text * .times else .input end' "$dir/case.json" >"$dir/input.json"
  for ((i = 1; i <= ${parallel:-1}; i++)); do
    call_and_check "$i" >"$dir/$i.why" &
  done
  wait
  for ((i = 1; i <= ${parallel:-1}; i++)); do
    why=$(<"$dir/$i.why")
    [ -z "$why" ] || { [ -z "$parallel" ] || why="call $i of $parallel: $why"; break; }
  done
  if [ -n "$why" ]; then echo "FAIL $name: ${why//$'\n'/; }"; else echo "ok $name"; fi
}

[ -r "$cases" ] || die "cannot read $cases"
jq empty "$cases" 2>/dev/null || die "$cases is not JSON"
bad=$(problems) || die "$cases: not a cases file"
[ -z "$bad" ] || die "$cases: $bad"

curl -sSf --max-time 10 -o /dev/null "$base/healthz" || die "the gateway at $base does not answer"

n=$(jq '.cases | length' "$cases")
pids=()
for ((i = 0; i < n; i++)); do
  run_case "$i" >"$work/$i.line" &
  pids+=($!)
done
code=0
for ((i = 0; i < n; i++)); do
  wait "${pids[$i]}" || true
  line=$(<"$work/$i.line")
  [ -n "$line" ] || line="FAIL $(jq -r ".cases[$i].name" "$cases"): the runner broke (see stderr)"
  echo "$line"
  [[ $line == ok* ]] || code=1
done
exit "$code"
