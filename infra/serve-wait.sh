# Sourced by the bench scripts: waits for a `tollgate serve` started in the background.
#
#   wait_for_serve PID OUT ERR
#
# waits up to 30 s for the banner in OUT (its stdout) and sets SERVE_KEY (the acme demo key)
# and SERVE_URL. If the process stops first, or prints no key in time, prints OUT and ERR and
# exits 1.
wait_for_serve() {
    local pid="$1" out="$2" err="$3"
    SERVE_KEY=""
    for _ in $(seq 1 300); do
        SERVE_KEY="$(sed -n 's/^demo tenant acme key //p' "$out")"
        [[ -n "$SERVE_KEY" ]] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "tollgate serve exited early:" >&2
            cat "$out" "$err" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [[ -z "$SERVE_KEY" ]]; then
        echo "tollgate serve printed no acme key within 30 s" >&2
        cat "$out" "$err" >&2
        exit 1
    fi
    SERVE_URL="$(sed -n 's|^tollgate serve: listening on \(http://[^ ]*\).*|\1|p' "$out")"
}
