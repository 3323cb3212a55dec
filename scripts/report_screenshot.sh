#!/usr/bin/env bash
# Regenerate docs/report.png: a small catalog, the local Stripe emulator, a dry run (nothing written),
# then a run whose plan the blast-radius guard holds (5.3% of the catalog > 5%); the second run's HTML report is rendered with
# headless chromium. Usage: scripts/report_screenshot.sh [WORK_DIR] [PNG]
set -euo pipefail
WORK=${1:-/tmp/recon-screenshot}
PNG=${2:-docs/report.png}
RECON=.venv/bin/recon
PORT=${RECON_EMULATOR_PORT:-12199}
export STRIPE_API_KEY=${STRIPE_API_KEY:-sk_test_local_emulator} RECON_STORAGE_ROOT="$WORK" GX_ANALYTICS_ENABLED=false
SETS=(--set "stripe.api_base=http://127.0.0.1:$PORT" --set "sources.stripe.mode=api"
      --set "sources.internal.products=$WORK/generated/internal/products.parquet"
      --set "sources.internal.prices=$WORK/generated/internal/prices.parquet")
[ -f "$WORK/generated/.done" ] || { $RECON generate --out "$WORK/generated" --products 400 --seed 7 --rate 0.01
                                    touch "$WORK/generated/.done"; }
rm -rf "$WORK/tables" "$WORK/reports" "$WORK/runs"
$RECON stripe-emulator --port "$PORT" --seed-from "$WORK/generated/stripe" > "$WORK/emulator.log" 2>&1 &
EMU=$!
trap 'kill $EMU 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/_emulator/state" >/dev/null && break; sleep 0.3; done
$RECON run --dry-run "${SETS[@]}" --set guard.max_change_ratio=1     # nothing is written to Stripe
$RECON run "${SETS[@]}" || [ $? -eq 3 ]   # the same plan, now held by the default guard (5%): exit 3
REPORT=$(ls -t "$WORK"/reports/*/report.html | head -1)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
  --window-size=1280,2200 --screenshot="$PNG" "file://$REPORT" 2>/dev/null
echo "$PNG from $REPORT"
