#!/usr/bin/env bash
# Start, check and stop the servers Shepherd needs on this machine: RabbitMQ, MinIO, a Docker
# engine and a Docker registry (docker sheep pull model images from it).
#
#   scripts/services.sh up [docker]  install what is missing, start what is not running
#                                    (idempotent); `docker`: only the engine and the registry
#   scripts/services.sh down         stop what `up` started
#   scripts/services.sh status       one line per server
#   scripts/services.sh env          export lines for the broker users `up` created:
#                                    eval "$(scripts/services.sh env)"
#
# State lives outside the repository, in $SHEPHERD_STATE_DIR (default ~/.local/state/shepherd);
# the MinIO binary is built once into $SHEPHERD_CACHE_DIR (default ~/.cache/shepherd).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SHEPHERD_STATE_DIR:-$HOME/.local/state/shepherd}"
CACHE="${SHEPHERD_CACHE_DIR:-$HOME/.cache/shepherd}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

# The Go module proxy serves MinIO as this pseudo-version (the last commit of its repository).
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
MINIO_BIN="$CACHE/minio/$MINIO_VERSION/minio"
KUBECONFORM_VERSION="v0.6.7"
KUBECONFORM_BIN="$CACHE/kubeconform/$KUBECONFORM_VERSION/kubeconform"
MINIO_ADDRESS="127.0.0.1:9000"
MINIO_CONSOLE="127.0.0.1:9001"
AMQP_URL="amqp://guest:guest@127.0.0.1:5672"
MANAGEMENT_URL="http://127.0.0.1:15672/api"
# One broker user per role, with least privilege (schemas/permissions.py): guest is for local
# development only. Their generated passwords are kept here, readable by this user only.
CREDENTIALS="$STATE/credentials.env"
ROLES=(services storage subscriber submitter)
RABBIT_NODE="shepherd@localhost"
# Docker trusts registries on 127.0.0.0/8 over plain HTTP by default: no TLS, no daemon.json.
REGISTRY_ADDRESS="127.0.0.1:5050"
RABBIT_ENV=(
  RABBITMQ_NODENAME="$RABBIT_NODE"
  RABBITMQ_CONFIG_FILE="$STATE/rabbitmq/rabbitmq.conf"
  RABBITMQ_MNESIA_BASE="$STATE/rabbitmq/mnesia"
  RABBITMQ_LOG_BASE="$STATE/rabbitmq/log"
  RABBITMQ_ENABLED_PLUGINS_FILE="$STATE/rabbitmq/enabled_plugins"
  RABBITMQ_PID_FILE="$STATE/rabbitmq/rabbit.pid"
)

say() { printf 'services: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    ((SECONDS < deadline)) || die "$what did not come up in time"
    sleep 0.5
  done
}

need_apt_package() {  # need_apt_package COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing $2 (apt)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1; then
      apt-get update -q >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 \
        || die "could not install $2; install it with: apt-get install $2"
    fi
  else
    die "$1 is missing; install it with: sudo apt-get install $2"
  fi
}

rabbitmqctl() { env "${RABBIT_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" "$@"; }

rabbitmq_up() {
  if port_open 127.0.0.1:5672; then
    say "RabbitMQ already listening on 127.0.0.1:5672, reusing it"
  else
    need_apt_package /usr/lib/rabbitmq/bin/rabbitmq-server rabbitmq-server
    mkdir -p "$STATE/rabbitmq/mnesia" "$STATE/rabbitmq/log"
    cp "$ROOT/deploy/rabbitmq/rabbitmq.conf" "$STATE/rabbitmq/rabbitmq.conf"
    echo '[rabbitmq_management,rabbitmq_prometheus].' > "$STATE/rabbitmq/enabled_plugins"
    say "starting RabbitMQ (node $RABBIT_NODE, logs in $STATE/rabbitmq/log)"
    (cd "$STATE/rabbitmq" && exec env "${RABBIT_ENV[@]}" HOME="$HOME" \
      setsid -f /usr/lib/rabbitmq/bin/rabbitmq-server \
      >"$STATE/rabbitmq/log/stdout.log" 2>&1 </dev/null)
    wait_for 120 RabbitMQ port_open 127.0.0.1:5672
    rabbitmqctl await_startup >/dev/null
  fi
  # Load the topology (exchanges, queues, bindings, policies) and the users' permissions from
  # deploy/rabbitmq/, once the users exist; a broker this script did not start gets the
  # topology over AMQP instead (no policies, no users: everything connects as guest).
  if ! { rabbitmq_users && rabbitmqctl import_definitions \
      "$ROOT/deploy/rabbitmq/definitions.json" >/dev/null 2>&1; }; then
    say "the broker users could not be set up here: the services connect as guest"
    rm -f "$CREDENTIALS"
    "$PYTHON" -m services.setup broker --url "$AMQP_URL/"
  fi
}

password_of() {  # password_of ROLE: the stored password, empty when there is none
  [[ -f "$CREDENTIALS" ]] && sed -n "s/^$1=//p" "$CREDENTIALS"
  return 0
}

# Create (or re-key) the role users through the management API: the password travels in a
# request body, never on a command line, and is kept only once the user exists. Their
# permissions come with the definitions. Fails when the management API refuses.
rabbitmq_users() {
  local role password
  mkdir -p "$STATE"
  (umask 077 && touch "$CREDENTIALS")
  curl -fsS -o /dev/null -u guest:guest --retry 10 --retry-connrefused --retry-delay 1 \
    "$MANAGEMENT_URL/overview" 2>/dev/null || return 1  # its listener may lag the node's
  for role in "${ROLES[@]}"; do
    password=$(password_of "$role")
    [[ -n $password ]] || password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
    printf '{"password": "%s", "tags": ""}' "$password" | curl -fsS -o /dev/null -u guest:guest \
      -X PUT -H 'content-type: application/json' --data-binary @- \
      "$MANAGEMENT_URL/users/shepherd-$role" 2>/dev/null || return 1
    [[ -n $(password_of "$role") ]] || echo "$role=$password" >>"$CREDENTIALS"
  done
}

user_url() {  # user_url ROLE: the AMQP URL of a role's user, guest's when it has none
  local password
  password=$(password_of "$1")
  if [[ -n $password ]]; then
    echo "amqp://shepherd-$1:$password@127.0.0.1:5672"
  else
    echo "$AMQP_URL"
  fi
}

print_env() {
  echo "export SHEPHERD_AMQP_URL='$(user_url services)'  # the services (make run)"
  echo "export SHEPHERD_SUBSCRIBER_URL='$(user_url subscriber)'"
  echo "export SHEPHERD_SUBMITTER_URL='$(user_url submitter)'"
}

rabbitmq_down() {
  if [[ -f "$STATE/rabbitmq/rabbit.pid" ]] && rabbitmqctl stop >/dev/null 2>&1; then
    say "RabbitMQ stopped"
  else
    say "RabbitMQ was not started by this script"
  fi
}

minio_build() {
  [[ -x "$MINIO_BIN" ]] && return 0
  command -v go >/dev/null || die "go is missing; install Go >= 1.24 (needed once to build MinIO)"
  say "building MinIO $MINIO_VERSION into $MINIO_BIN (once; takes a few minutes)"
  mkdir -p "$(dirname "$MINIO_BIN")"
  (cd "$CACHE" && GOBIN="$(dirname "$MINIO_BIN")" GOFLAGS=-trimpath \
    go install "github.com/minio/minio@$MINIO_VERSION") || die "building MinIO failed"
}

minio_healthy() { curl -fsS -m 2 "http://$MINIO_ADDRESS/minio/health/live" >/dev/null 2>&1; }

minio_up() {
  if port_open "$MINIO_ADDRESS"; then
    say "MinIO already listening on $MINIO_ADDRESS, reusing it"
  else
    minio_build
    mkdir -p "$STATE/minio/data"
    say "starting MinIO on $MINIO_ADDRESS (data in $STATE/minio/data)"
    # The AMQP target "shepherd": bucket notifications go to exchange shepherd.storage.
    # No queue_dir: MinIO replays a queue_dir only every 3 s, far too slow for dispatch;
    # events lost while RabbitMQ is down are recovered by the gateway's reconciliation,
    # which is also why MinIO's publisher confirms stay off (see docs/architecture.md).
    # Exported in a subshell rather than given to env(1): the storage user's password stays
    # off every command line.
    (
      export MINIO_ROOT_USER=minioadmin MINIO_ROOT_PASSWORD=minioadmin MINIO_BROWSER=off \
        MINIO_NOTIFY_AMQP_ENABLE_SHEPHERD=on \
        MINIO_NOTIFY_AMQP_URL_SHEPHERD="$(user_url storage)" \
        MINIO_NOTIFY_AMQP_EXCHANGE_SHEPHERD=shepherd.storage \
        MINIO_NOTIFY_AMQP_EXCHANGE_TYPE_SHEPHERD=fanout \
        MINIO_NOTIFY_AMQP_ROUTING_KEY_SHEPHERD=s3 \
        MINIO_NOTIFY_AMQP_DURABLE_SHEPHERD=on \
        MINIO_NOTIFY_AMQP_DELIVERY_MODE_SHEPHERD=2
      exec setsid -f "$MINIO_BIN" server "$STATE/minio/data" --quiet \
        --address "$MINIO_ADDRESS" --console-address "$MINIO_CONSOLE" \
        >"$STATE/minio/minio.log" 2>&1 </dev/null
    )
    wait_for 60 MinIO minio_healthy
  fi
  "$PYTHON" -m services.setup storage --endpoint "$MINIO_ADDRESS" --bucket shepherd
}

minio_down() {
  if pkill -f "^$MINIO_BIN server $STATE/minio/data"; then
    say "MinIO stopped"
  else
    say "MinIO was not started by this script"
  fi
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }  # alive PIDFILE

stop_pidfile() {  # stop_pidfile PIDFILE NAME: SIGTERM, then wait up to 30 s for the exit
  local pid deadline=$((SECONDS + 30))
  if ! alive "$1"; then
    say "$2 was not started by this script"
    return 0
  fi
  pid=$(cat "$1")
  kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || die "$2 (pid $pid) did not stop within 30 s"
    sleep 0.5
  done
  rm -f "$1"
  say "$2 stopped"
}

docker_answers() { docker info >/dev/null 2>&1; }

docker_up() {
  need_apt_package docker docker.io
  if docker_answers; then
    say "Docker engine already running, reusing it"
    return 0
  fi
  need_apt_package dockerd docker.io
  [[ $(id -u) == 0 ]] || die "the Docker engine does not answer ($(docker info 2>&1 >/dev/null \
    | tail -n 1)); start it as root (sudo systemctl start docker, or: sudo $0 up docker)" \
    "or join the docker group"
  local dir="$STATE/docker" pid reason deadline=$((SECONDS + 60))
  mkdir -p "$dir"
  say "starting the Docker engine (dockerd --iptables=false --bridge=none: containers use" \
    "the host network; log in $dir/dockerd.log)"
  # No iptables and no bridge: dockerd starts without touching the host's network setup.
  setsid dockerd --iptables=false --bridge=none --pidfile "$dir/dockerd.pid" \
    >"$dir/dockerd.log" 2>&1 </dev/null &
  pid=$!
  until docker_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      reason=$(grep -E 'level=(fatal|error)' "$dir/dockerd.log" | tail -n 1 || true)
      die "dockerd exited: ${reason:-$(tail -n 1 "$dir/dockerd.log")}"
    fi
    ((SECONDS < deadline)) || die "the Docker engine did not answer within 60 s; see $dir/dockerd.log"
    sleep 0.5
  done
}

docker_down() { stop_pidfile "$STATE/docker/dockerd.pid" "Docker engine"; }

# debootstrap makes the base of the runner image, once (services/sheep/images.py); without
# root it could not run anyway, and images.py says so if the image is not cached.
image_tools() { [[ $(id -u) != 0 ]] || need_apt_package debootstrap debootstrap; }

# amqp-tools: the non-Python submitter of the AMQP submission tests, and the README's
# command-line subscriber. Installed as root; without it those tests are skipped, saying so.
amqp_tools() { [[ $(id -u) != 0 ]] || need_apt_package amqp-publish amqp-tools; }

# Prometheus and promtool: the monitoring tests run deploy/prometheus/ against a real one
# (each test starts its own; nothing runs in the background). Installed as root; without it
# those tests are skipped, saying so.
prometheus_tools() { [[ $(id -u) != 0 ]] || need_apt_package promtool prometheus; }

# docker-compose (Debian's) and kubeconform: the deployment tests check deploy/compose/ and
# deploy/kubernetes/ offline, the latter against the schemas in deploy/kubernetes/schemas/.
deploy_tools() {
  [[ $(id -u) != 0 ]] || need_apt_package docker-compose docker-compose
  # scripts/netns.sh, which the cluster test runs in.
  [[ $(id -u) != 0 ]] || need_apt_package ip iproute2
  [[ $(id -u) != 0 ]] || need_apt_package unshare util-linux
  [[ -x "$KUBECONFORM_BIN" ]] && return 0
  command -v go >/dev/null || die "go is missing; install Go >= 1.22 (needed once to build kubeconform)"
  say "building kubeconform $KUBECONFORM_VERSION into $KUBECONFORM_BIN (once)"
  mkdir -p "$(dirname "$KUBECONFORM_BIN")"
  (cd "$CACHE" && GOBIN="$(dirname "$KUBECONFORM_BIN")" GOFLAGS=-trimpath \
    go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION") \
    || die "building kubeconform failed"
}

# Debian's Chromium and its chromedriver: the dashboard's tests drive a real browser
# (tests/support/browser.py). Installed as root; without them those tests are skipped, saying so.
browser_tools() {
  [[ $(id -u) != 0 ]] && return 0
  need_apt_package chromium chromium
  need_apt_package chromedriver chromium-driver
}

registry_healthy() { curl -fsS -m 2 "http://$REGISTRY_ADDRESS/v2/" >/dev/null 2>&1; }

registry_up() {
  if port_open "$REGISTRY_ADDRESS"; then
    say "Docker registry already listening on $REGISTRY_ADDRESS, reusing it"
    return 0
  fi
  need_apt_package docker-registry docker-registry
  local dir="$STATE/registry"
  mkdir -p "$dir/data"
  say "starting the Docker registry on $REGISTRY_ADDRESS (images in $dir/data)"
  # Our own config (the packaged one asks for basic auth); the storage directory comes from
  # the environment, which distribution lets override any key of the file.
  REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$dir/data" REGISTRY_HTTP_ADDR="$REGISTRY_ADDRESS" \
    setsid docker-registry serve "$ROOT/deploy/registry/config.yml" \
    >"$dir/registry.log" 2>&1 </dev/null &
  echo $! >"$dir/registry.pid"
  wait_for 30 "the Docker registry (see $dir/registry.log)" registry_healthy
}

registry_down() { stop_pidfile "$STATE/registry/registry.pid" "Docker registry"; }

status() {
  port_open 127.0.0.1:5672 && echo "rabbitmq: up (127.0.0.1:5672)" || echo "rabbitmq: down"
  minio_healthy && echo "minio: up ($MINIO_ADDRESS)" || echo "minio: down"
  docker_answers && echo "docker: up (engine $(docker info --format '{{.ServerVersion}}'))" \
    || echo "docker: down"
  registry_healthy && echo "registry: up ($REGISTRY_ADDRESS)" || echo "registry: down"
}

[[ -x "$PYTHON" ]] || die "no virtualenv at $ROOT/.venv; run: make venv"
command -v curl >/dev/null || need_apt_package curl curl
case "${1:-up} ${2:-}" in
  "up ") rabbitmq_up; minio_up; docker_up; registry_up; image_tools; amqp_tools; prometheus_tools
    deploy_tools; browser_tools ;;
  "up docker") docker_up; registry_up; image_tools ;;
  "down ") registry_down; docker_down; minio_down; rabbitmq_down ;;
  "status ") status ;;
  "env ") print_env ;;
  *) die "usage: $0 up [docker]|down|status|env" ;;
esac
