#!/usr/bin/env bash
# check.sh REANA_UI_CHECKOUT: apply live-logs.patch to a checkout of reanahub/reana-ui
# (0.95.0-alpha.3, f5eb0b86d2dc4c4c63c4aad7a602b374c779acd9), build it, serve the build as
# REANA's Ingress does (ingress.py) with reana-log-sse and the fake reana-server of
# tests/fake_reana.py, and drive it in Chromium (drive.py). Exits 0 when all is well.
#
# `npm install` runs with --ignore-scripts: jsroot's optional `canvas` would download a
# prebuilt binary; reana-ui's postinstall (semantic-ui-css-patch) is then run by hand.
# PYTHON: the Python with reana-log-sse and its test extra (default: python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
checkout="$(cd "${1:?usage: check.sh REANA_UI_CHECKOUT}" && pwd)"
python="${PYTHON:-python3}"
patch="$here/live-logs.patch"

cd "$checkout"
if git apply --reverse --check "$patch" 2>/dev/null; then
  echo "check.sh: live-logs.patch is already applied"
else
  git apply --check "$patch"
  git apply "$patch"
  echo "check.sh: applied live-logs.patch"
fi

cd "$checkout/reana-ui"
npm install --ignore-scripts --no-audit --no-fund
npx semantic-ui-css-patch
npm run build

"$python" "$here/drive.py" "$checkout/reana-ui/build" \
  --screenshot "${SCREENSHOT:-$here/../../docs/screenshots/reana-ui-live-log.png}"
