#!/usr/bin/env bash
# The Debian package end to end: build it with cargo-deb, install it with
# dpkg -i, check the installed config with the installed binary, run it and
# ask it for HEAD / (204), verify the unit where systemd-analyze exists, then
# purge it. Needs root. Prints one closing line: "deb: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
source tests/common/harness.sh
passed=0 failed=0
ok() { echo "deb: ok: $1"; passed=$((passed + 1)); }
bad() { echo "deb: FAILED: $1" >&2; failed=$((failed + 1)); }
finish() { echo "deb: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

if ! command -v cargo-deb >/dev/null 2>&1; then
  cargo install cargo-deb --locked -q || { bad "cargo install cargo-deb"; finish; }
fi
deb=$(cargo deb -p pubsubd 2>/dev/null | tail -n1)
if [ ! -f "$deb" ]; then bad "cargo deb built nothing"; finish; fi
ok "built $(basename "$deb")"

if dpkg -i "$deb" >/dev/null; then ok "dpkg -i"; else bad "dpkg -i"; finish; fi
trap 'dpkg --purge pubsubd >/dev/null 2>&1 || true' EXIT

getent passwd pubsubd >/dev/null && ok "system user pubsubd" || bad "no system user"
[ "$(stat -c %G:%a /etc/pubsubd/pypubsub_acl.yaml)" = "pubsubd:640" ] &&
  ok "ACL file root:pubsubd 0640" || bad "ACL file mode $(stat -c %G:%a /etc/pubsubd/pypubsub_acl.yaml)"
dpkg-query -W -f='${Conffiles}\n' pubsubd | grep -q /etc/pubsubd/pypubsub.yaml &&
  ok "config files are conffiles" || bad "conffiles"

if /usr/bin/pubsubd --check-config --config /etc/pubsubd/pypubsub.yaml \
  --acl /etc/pubsubd/pypubsub_acl.yaml >/dev/null; then
  ok "--check-config on the installed config"
else
  bad "--check-config on the installed config"
fi

# The installed binary with the installed config, as the service's user
# (runuser stays the parent: the server's own PID is in its ready file).
state=$(mktemp -d)
chown pubsubd: "$state"
log="$state/pubsubd.log"
ready="$state/ready.json"
(cd "$state" && exec runuser -u pubsubd -- /usr/bin/pubsubd \
  --config /etc/pubsubd/pypubsub.yaml --acl /etc/pubsubd/pypubsub_acl.yaml \
  --ready-file "$ready") >"$log" 2>&1 &
pid=$!
if wait_ready "$ready" "$pid"; then
  plain=$(on_loopback "$(ready_addr "$ready" plain)")
  admin=$(on_loopback "$(ready_addr "$ready" admin)")
  code=$(curl -s -o /dev/null -w '%{http_code}' -I --max-time 5 "http://$plain/")
  [ "$code" = 204 ] && ok "HEAD / on $plain -> 204" || bad "HEAD / on $plain -> $code"
  if [ -n "$admin" ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$admin/healthz")
    [ "$code" = 200 ] && ok "admin /healthz on $admin -> 200" || bad "admin /healthz -> $code"
  else
    bad "no admin listener in the ready file: $(cat "$ready")"
  fi
fi
# The server by its own PID (runuser then exits with it); runuser's if
# the server never said where it is.
server=$(ready_pid "$ready" 2>/dev/null)
if [ -n "$server" ]; then
  kill "$server" 2>/dev/null
else
  bad "the installed server did not start: $(tail -n 5 "$log")"
  kill "$pid" 2>/dev/null
fi
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  bad "the server did not stop within 10 s of SIGTERM"
  [ -n "$server" ] && kill -KILL "$server" 2>/dev/null
  kill -KILL "$pid" 2>/dev/null
fi
wait "$pid" 2>/dev/null
if [ -n "$server" ]; then
  [ ! -e "$ready" ] && ok "the ready file is removed on exit" ||
    bad "the ready file is left after SIGTERM"
fi
rm -rf "$state"

if command -v systemd-analyze >/dev/null 2>&1; then
  if out=$(systemd-analyze verify /lib/systemd/system/pubsubd.service 2>&1); then
    ok "systemd-analyze verify"
  else
    bad "systemd-analyze verify: $out"
  fi
  # The per-core template, as one instance of it.
  unit_dir=$(mktemp -d)
  cp /usr/lib/systemd/system/pubsubd@.service "$unit_dir/pubsubd@00.service"
  if out=$(systemd-analyze verify "$unit_dir/pubsubd@00.service" 2>&1); then
    ok "systemd-analyze verify pubsubd@00"
  else
    bad "systemd-analyze verify pubsubd@00: $out"
  fi
  rm -rf "$unit_dir"
else
  echo "deb: systemd-analyze not installed; unit not verified"
fi

if dpkg --purge pubsubd >/dev/null; then ok "dpkg --purge"; else bad "dpkg --purge"; fi
[ ! -e /usr/bin/pubsubd ] && ok "binary removed" || bad "binary left behind"
trap - EXIT
finish
