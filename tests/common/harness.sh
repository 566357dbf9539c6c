# The scripts' side of the test harness, sourced (bash) by dist/test-*.sh
# and bench/*.sh: waiting for a server's ready file (pubsubd --ready-file,
# src/ready_file.rs) and reading the addresses from it instead of the log,
# and the one way the scripts make a throw-away certificate.
#
#   source tests/common/harness.sh
#   "$bin" --config c.yaml --ready-file "$dir/ready.json" >"$log" 2>&1 &
#   pid=$!
#   wait_ready "$dir/ready.json" "$pid" || fail
#   addr=$(ready_addr "$dir/ready.json" plain)    # plain | tls | admin
#
# Every wait is bounded; nothing here starts or stops a process (the
# scripts stop what they started, by PID).

# wait_ready FILE PID [SECONDS]: waits (default 10 s) until FILE exists,
# while process PID is alive. The file appears whole (it is renamed into
# place), so once it is there it can be read. FILE must not exist before
# the start: use a fresh path (a new temporary directory).
wait_ready() {
  local file=$1 pid=$2 tenths=$((${3:-10} * 10)) i
  for ((i = 0; i < tenths; i++)); do
    [ -s "$file" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1 # poll interval
  done
  [ -s "$file" ]
}

# ready_addr FILE KIND: the address (HOST:PORT) of the first listener of
# KIND (plain, tls or admin) in the ready file; nothing if there is none.
# The file has one listener per line: {"kind": "K", "addr": "A"}.
ready_addr() {
  sed -n 's/^ *{"kind": "'"$2"'", "addr": "\([^"]*\)"}.*$/\1/p' "$1" | head -n 1
}

# on_loopback ADDR: where to connect to reach ADDR from this machine: a
# wildcard bind (0.0.0.0:P, [::]:P) is reached on loopback; any other
# address is printed as it is.
on_loopback() {
  case "$1" in
    0.0.0.0:*) echo "127.0.0.1:${1#0.0.0.0:}" ;;
    "[::]:"*) echo "[::1]:${1#\[::\]:}" ;;
    *) echo "$1" ;;
  esac
}

# ready_pid FILE: the server's process ID from its ready file.
ready_pid() {
  sed -n 's/^{"pid": \([0-9][0-9]*\),.*$/\1/p' "$1" | head -n 1
}

# make_test_pki DIR: a throw-away CA (DIR/ca.pem, DIR/ca.key) and a server
# certificate it signed for localhost and 127.0.0.1 (DIR/cert.pem,
# DIR/key.pem: ECDSA P-256, PKCS#8, CA:FALSE, serverAuth), valid 2 days,
# made with the openssl command. Fails (status 1, nothing printed) without
# openssl; the callers then skip their TLS part.
make_test_pki() {
  local dir=$1
  command -v openssl >/dev/null 2>&1 || return 1
  mkdir -p "$dir" || return 1
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$dir/leaf.ext"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -days 2 -subj "/CN=pubsubd test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1 &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=localhost" -keyout "$dir/key.pem" -out "$dir/leaf.csr" >/dev/null 2>&1 &&
    openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 2 -extfile "$dir/leaf.ext" -out "$dir/cert.pem" >/dev/null 2>&1
}
