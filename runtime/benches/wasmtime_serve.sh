#!/usr/bin/env bash
# Outside reference for Wasm handlers: `wasmtime serve` (wasmtime-cli 48.0.8:
# HTTP/1.1, a fresh instance per request) answering "hello", against the
# collector node's Wasm `echo` handler over gRPC (a fresh instance per call),
# under the same load tool (h2load), at the same concurrency, in the same run.
#
# Needs wasmtime-cli 48.0.8 (`cargo install wasmtime-cli --version 48.0.8
# --locked`, ~20 min on 2 cores) and h2load (`apt-get install nghttp2-client`).
# Usage: runtime/benches/wasmtime_serve.sh [PATH-TO-WASMTIME]   (N=requests per run)
set -euo pipefail
cd "$(dirname "$0")/../.."
WASMTIME=${1:-wasmtime}
N=${N:-40000}
SERVE=127.0.0.1:18081
NODE=127.0.0.1:18082

cargo build -q --release -p collector
cargo build -q --release --manifest-path guests/Cargo.toml --target wasm32-wasip2
cargo build -q --release --manifest-path runtime/benches/hello-http/Cargo.toml --target wasm32-wasip2

tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$WASMTIME" serve -Scli --addr "$SERVE" \
  runtime/benches/hello-http/target/wasm32-wasip2/release/hello_http.wasm 2>"$tmp/serve.log" &
target/release/collector serve --listen "$NODE" --data-dir "$tmp/node" >/dev/null &

C="target/release/collector --node $NODE -n bench"
for _ in $(seq 100); do $C protos list >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 100); do curl -sf "http://$SERVE/" >/dev/null && break; sleep 0.1; done
printf 'syntax = "proto3"; package t; message Msg { string text = 1; int64 n = 2; }\nservice Echo { rpc Say(Msg) returns (Msg); }\n' >"$tmp/t.proto"
$C register --proto "$tmp/t.proto" --service t.Echo \
  --wasm guests/target/wasm32-wasip2/release/echo.wasm >/dev/null
[ "$($C call t.Echo/Say '{"text": "hello"}' | tr -d ' \n')" = '{"text":"hello"}' ]
[ "$(curl -s "http://$SERVE/")" = hello ]
# One gRPC frame: uncompressed, 7 bytes: t.Msg{text: "hello"}.
printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$tmp/say.bin"

rate() { sed -n 's/.*finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p'; }
ok() { sed -n 's/.*requests: .* \([0-9]*\) succeeded.*/\1/p'; }
echo "requests per run: $N; h2load -t1; wasmtime serve speaks HTTP/1.1 only (h2load --h1),"
echo "the node gRPC over h2c with one stream per connection (-m1), so both see c requests in flight"
for c in 1 16 64; do
  serve_out=$(h2load --h1 -t1 -c"$c" -n"$N" "http://$SERVE/")
  node_out=$(h2load -t1 -c"$c" -m1 -n"$N" -d "$tmp/say.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' -H 'x-collector-namespace: bench' \
    "http://$NODE/t.Echo/Say")
  # h2load counts HTTP statuses only: check every gRPC reply carried its 12 data bytes.
  data=$(echo "$node_out" | sed -n 's/.*(\([0-9]*\)) data.*/\1/p' | head -1)
  [ "$(echo "$node_out" | ok)" = "$N" ] && [ "$data" = "$((N * 12))" ] || {
    echo "gRPC calls failed: $node_out"
    exit 1
  }
  [ "$(echo "$serve_out" | ok)" = "$N" ] || { echo "wasmtime serve failed: $serve_out"; exit 1; }
  s=$(echo "$serve_out" | rate)
  n=$(echo "$node_out" | rate)
  awk -v c="$c" -v s="$s" -v n="$n" 'BEGIN {
    printf "c=%-3s wasmtime serve hello %8.0f req/s   collector Wasm echo (gRPC) %8.0f calls/s   = %.2fx\n", c, s, n, n / s }'
done
