# Shell helpers of the recipe scripts (Programs/demo/run_demo.sh, Programs/real/run_real.sh), sourced
# after they set LOGS (the folder of the background lanes' logs).

step() {  # step "title" command...: run it and say how long it took
    local title=$1 t0=$SECONDS
    shift
    printf '\n== %s\n' "$title"
    "$@"
    printf '   (%d s)\n' $((SECONDS - t0))
}
lane() {  # lane name command...: a background-lane run, its log in $LOGS/name.log, timed
    local name=$1 t0=$SECONDS
    shift
    "$@" >"$LOGS/$name.log" 2>&1
    printf '%s %d\n' "$name" $((SECONDS - t0)) >>"$LOGS/timings.txt"
}
wait_for() {  # wait_for pid: fail with the end of the background logs when that lane failed
    if ! wait "$1"; then
        echo "error: a background run failed; end of its log:" >&2
        tail -n 20 "$(ls -t "$LOGS"/*.log | head -1)" >&2
        exit 1
    fi
}
