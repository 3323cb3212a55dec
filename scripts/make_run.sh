#!/usr/bin/env bash
# `make run`: generate a catalog (once), start the local Stripe emulator seeded with its Stripe side,
# run the whole job against it (export through the API, detect, plan, push), run it a second time to
# show it converged, print the summary and the report's path, stop the emulator.
set -euo pipefail
RUN_DIR=${1:-data}
PRODUCTS=${2:-2000}
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
  $RECON generate --out "$GEN" --products "$PRODUCTS" --seed 7 --rate 0.004
  touch "$GEN/.done-$PRODUCTS"
fi
rm -rf "$RUN_DIR/tables"

echo "== starting the Stripe emulator on 127.0.0.1:$PORT (seeded from $GEN/stripe)"
$RECON stripe-emulator --port "$PORT" --seed-from "$GEN/stripe" > "$RUN_DIR/emulator.log" 2>&1 &
EMU=$!
trap 'kill $EMU 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/_emulator/state" >/dev/null 2>&1 && break
  kill -0 $EMU 2>/dev/null || { echo "emulator exited:"; cat "$RUN_DIR/emulator.log"; exit 1; }
  sleep 0.3
done

echo "== run 1: land both sides, validate, detect, plan, push"
$RECON run "${SETS[@]}"
echo "== run 2: after the push, nothing internal-owned should be left to correct"
$RECON run "${SETS[@]}"
echo "== report of the last run"
$RECON report --format json "${SETS[@]}"
echo "HTML report: $(ls -t "$RUN_DIR"/reports/*/report.html 2>/dev/null | head -1)"
