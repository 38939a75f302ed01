#!/usr/bin/env bash
# Starts and stops a regtest bitcoind on loopback with its own datadir and RPC credentials.
#   scripts/regtest.sh start DIR [RPC_PORT]   prints shell assignments: BITCOIN_RPC_URL, ..._USER, ..._PASSWORD, BITCOIN_DATADIR
#   scripts/regtest.sh stop DIR
#   scripts/regtest.sh cli DIR ARGS...        runs bitcoin-cli against it
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|cli DIR [...]" >&2; exit 2; }
bindir="$("$here/bitcoind.sh" | tail -1)"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
conf="$dir/hallmark-rpc.env"
cli() {
  # shellcheck disable=SC1090
  source "$conf"
  "$bindir/bitcoin-cli" -regtest -datadir="$dir" -rpcport="$BITCOIN_RPC_PORT" \
    -rpcuser="$BITCOIN_RPC_USER" -rpcpassword="$BITCOIN_RPC_PASSWORD" "$@"
}
case "$cmd" in
  start)
    port="${3:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
    if [ ! -f "$conf" ]; then
      pass="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      printf 'BITCOIN_RPC_PORT=%s\nBITCOIN_RPC_USER=hallmark\nBITCOIN_RPC_PASSWORD=%s\n' "$port" "$pass" > "$conf"
      chmod 600 "$conf"
    fi
    # shellcheck disable=SC1090
    source "$conf"
    "$bindir/bitcoind" -regtest -datadir="$dir" -daemonwait -server=1 -listen=0 -txindex=1 \
      -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -rpcport="$BITCOIN_RPC_PORT" \
      -rpcuser="$BITCOIN_RPC_USER" -rpcpassword="$BITCOIN_RPC_PASSWORD" \
      -fallbackfee=0.0001 -printtoconsole=0 >&2
    for _ in $(seq 1 100); do
      cli getblockcount >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "BITCOIN_RPC_URL=http://127.0.0.1:$BITCOIN_RPC_PORT"
    echo "BITCOIN_RPC_USER=$BITCOIN_RPC_USER"
    echo "BITCOIN_RPC_PASSWORD=$BITCOIN_RPC_PASSWORD"
    echo "BITCOIN_DATADIR=$dir"
    ;;
  stop)
    [ -f "$conf" ] || exit 0
    cli stop >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
      [ -f "$dir/regtest/bitcoind.pid" ] || break
      sleep 0.1
    done
    ;;
  cli)
    shift 2
    cli "$@"
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
