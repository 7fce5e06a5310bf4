#!/usr/bin/env bash
# Installs what the examples in examples/ need to be run by the tests
# (tests/examples.rs), from Debian's packages when missing: PHP with the
# curl and phpredis extensions and predis, and Python's redis module for
# the system python3 (/usr/bin/python3). Node.js comes from ensure-node.
set -euo pipefail
need=()
command -v php >/dev/null 2>&1 || need+=(php-cli php-curl)
if command -v php >/dev/null 2>&1; then
  php -m 2>/dev/null | grep -qi '^redis$' || need+=(php-redis)
  php -m 2>/dev/null | grep -qi '^curl$' || need+=(php-curl)
  php -r 'exit(stream_resolve_include_path("Predis/Autoloader.php") ? 0 : 1);' 2>/dev/null \
    || need+=(php-nrk-predis)
else
  need+=(php-redis php-nrk-predis)
fi
if ! [ -x /usr/bin/python3 ] || ! /usr/bin/python3 -c 'import redis' 2>/dev/null; then
  need+=(python3-redis)
fi
if [ ${#need[@]} -gt 0 ]; then
  "$(dirname "$0")/apt-install.sh" "${need[@]}"
fi
