#!/usr/bin/env bash
# Regenerates the expected outputs with real Apache Flink (../shared/flink-oracle, a development
# tool; the tests themselves never need Java). Run from anywhere after the oracle's setup.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
oracle=${FLINK_ORACLE:-$here/../../../../shared/flink-oracle}
grep -v '^#' "$here/cases.txt" | while IFS='|' read -r name input args; do
    name=$(echo $name); input=$(echo $input)
    # shellcheck disable=SC2086
    "$oracle/run.sh" window --input "$here/$input" --output "$here/$name.out" $args >/dev/null 2>&1
    echo "$name: $(wc -l < "$here/$name.out") rows, $(wc -l < "$here/$name.out.late") late"
done
