#!/usr/bin/env bash
# Print the absolute path of a working interpreter called $1 (e.g. python3.12), or nothing.
# A pyenv shim exists for every installed version but only runs the ones selected as "global";
# then the version's own binary under $(pyenv root)/versions/*/bin is used instead.
name="${1:?usage: tools/find_python.sh python3.X}"
if exe="$("$name" -c 'import sys; print(sys.executable)' 2>/dev/null)" && [ -n "$exe" ]; then
  echo "$exe"
  exit 0
fi
if command -v pyenv >/dev/null 2>&1; then
  for candidate in "$(pyenv root)"/versions/*/bin/"$(basename "$name")"; do
    if [ -x "$candidate" ] && "$candidate" -c 'import sys' 2>/dev/null; then
      echo "$candidate"
      exit 0
    fi
  done
fi
exit 1
