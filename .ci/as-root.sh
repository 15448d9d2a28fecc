# Sourced by the set-up scripts: sets as_root, the prefix that runs a command as root (nothing when
# this is root, else sudo), or exits saying why not, with the message "$1".
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "$1" >&2
    exit 1
fi
