#!/usr/bin/env bash
# `make run`: generate a catalog (once), start the local Stripe emulator seeded with its Stripe side,
# run the whole job against it (export through the API, detect, plan, push), run it a second time to
# show it converged, stop the emulator. Each `recon run` prints one line per stage and closes with
# its summary table and the report's path. Extra arguments (make run ARGS=...) go to every recon
# command: -v shows everything (Spark's own output included), --json the machine summaries.
set -euo pipefail
RUN_DIR=${1:-data}
PRODUCTS=${2:-2000}
shift 2 || true
EXTRA=("$@")
RECON=.venv/bin/recon
GEN="$RUN_DIR/generated"
PORT=${RECON_EMULATOR_PORT:-12111}
export STRIPE_API_KEY=${STRIPE_API_KEY:-sk_test_local_emulator}
export RECON_STORAGE_ROOT="$RUN_DIR"
export GX_ANALYTICS_ENABLED=false
SETS=(--set "stripe.api_base=http://127.0.0.1:$PORT"
      --set "sources.internal.products=$GEN/internal/products.parquet"
      --set "sources.internal.prices=$GEN/internal/prices.parquet"
      --set "sources.stripe.mode=api")

if [ ! -f "$GEN/.done-$PRODUCTS" ]; then
  rm -rf "$GEN"
  echo "== generating a catalog of $PRODUCTS products into $GEN"
  # A low seeding rate keeps the first correction batch under the 5% blast-radius guard.
  $RECON generate --out "$GEN" --products "$PRODUCTS" --seed 7 --rate 0.004 ${EXTRA[@]+"${EXTRA[@]}"}
  touch "$GEN/.done-$PRODUCTS"
fi
rm -rf "$RUN_DIR/tables"

echo "== starting the Stripe emulator on 127.0.0.1:$PORT (seeded from $GEN/stripe; log: $RUN_DIR/emulator.log)"
$RECON stripe-emulator --port "$PORT" --seed-from "$GEN/stripe" > "$RUN_DIR/emulator.log" 2>&1 &
EMU=$!
trap 'kill $EMU 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/_emulator/state" >/dev/null 2>&1 && break
  kill -0 $EMU 2>/dev/null || { echo "emulator exited:"; cat "$RUN_DIR/emulator.log"; exit 1; }
  sleep 0.3
done

echo "== run 1: land both sides, validate, detect, plan, push"
$RECON run "${SETS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
echo
echo "== run 2: after the push, nothing internal-owned should be left to correct"
$RECON run "${SETS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
