#!/usr/bin/env bash
# Refreshes the control panel's screenshots that the documentation shows
# (docs/src/screenshots/panel-*.png): runs the panel and console tests that take
# them (headless Chromium, as `cargo test` does) with EXTILITY_SCREENSHOTS pointing there.
# A plain test run writes them under target/tmp/screenshots/ and leaves the tree unchanged;
# run this when the panel's look has changed, and commit the pictures it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/src/screenshots
EXTILITY_SCREENSHOTS="$PWD/docs/src/screenshots" cargo test --test it -- \
    panel::fetch_disk_dialog_and_the_jobs_tab_follow_a_fetch_without_reloading \
    consoles::a_customer_types_at_the_screen_and_the_serial_port --exact "$@"
ls -l docs/src/screenshots/panel-*.png
